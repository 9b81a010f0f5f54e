"""The unit tier (`make unit`, `pytest -m unit`) needs nothing: it passes with no redis-server, no
redis-sentinel, no Celery program and none of the pool's condor_* programs on PATH, and the marks that
put a test outside it follow the fixtures the test uses, however deep (tests/conftest.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import NEEDS, REPO

# What a unit test may not start (each is also how a test that needs it finds it: on PATH).
ABSENT = ("redis-server", "redis-sentinel", "redis-cli", "celery", "flower", "docker-compose", "prometheus",
          "promtool", "chromium", "chromium-browser")


def path_without(absent: tuple[str, ...], into: Path) -> str:
    """A PATH of one directory linking every program of this PATH except `absent` and condor_*."""
    into.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            exe = os.path.join(d, name)
            if (name in absent or name.startswith("condor_") or (into / name).exists()
                    or not (os.path.isfile(exe) and os.access(exe, os.X_OK))):
                continue
            (into / name).symlink_to(exe)
    return str(into)


def collected(*args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", *args, "tests"], cwd=str(REPO),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {ln.strip() for ln in out.stdout.splitlines() if "::" in ln}


@pytest.mark.slow
def test_the_unit_tier_passes_without_redis_celery_or_the_pool(tmp_path):
    path = path_without(ABSENT, tmp_path / "bin")
    env = {**os.environ, "PATH": path}
    for name in ABSENT + ("condor_q",):
        assert subprocess.run(["sh", "-c", f"command -v {name}"], env=env, capture_output=True).returncode != 0
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "unit", "-rs", "-p", "no:randomly", "tests"],
                         cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    tail = out.stdout[-5000:] + out.stderr[-2000:]
    assert out.returncode == 0, tail
    summary = out.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary)[1])
    print(f"unit tier: {summary} ({took:.0f} s here, without redis-server/celery/condor_* on PATH)")
    assert passed > 500 and " failed" not in summary and "error" not in summary, summary
    # a unit test skipped for want of one of them is mis-tiered (it hides what this test proves)
    skips = [ln for ln in out.stdout.splitlines() if ln.startswith("SKIPPED")]
    assert not [ln for ln in skips if re.search(r"redis|celery|condor|sentinel|pool", ln, re.I)], skips


def test_marks_follow_the_fixtures_a_test_uses_however_deep():
    unit = collected("-m", "unit")

    def exists(nodeid: str) -> bool:
        path, name = nodeid.split("::")
        return f"\ndef {name}(" in (REPO / path).read_text()
    # redis_server through test_cli's `env` fixture; pool_bin through pool_env; a module's own stack
    # fixture; service_user (root) alone; an explicit mark on a test that starts a stack itself
    for nodeid in ("tests/test_cli.py::test_status_columns_owner_schedd_user_and_json",
                   "tests/test_localpool.py::test_concurrent_submits_never_lose_or_duplicate",
                   "tests/test_flower.py::test_flower_api_lists_our_tasks_with_arguments",
                   "tests/test_wait.py::test_scale_wait_reads_beat_and_fails_fast",
                   "tests/test_tiers.py::test_the_unit_tier_passes_without_redis_celery_or_the_pool"):
        assert exists(nodeid) and nodeid not in unit, nodeid
    for nodeid in ("tests/test_cli.py::test_version",
                   "tests/test_tiers.py::test_marks_follow_the_fixtures_a_test_uses_however_deep"):
        assert nodeid in unit, nodeid


def test_every_test_is_unit_or_needs_something(request):
    """Of this session's tests: `unit` exactly when no need is marked; `stack` comes with redis and pool."""
    for item in request.session.items:
        marks = {m.name for m in item.iter_markers()}
        assert ("unit" in marks) != bool(marks & set(NEEDS)), (item.nodeid, marks)
        assert "stack" not in marks or {"redis", "pool"} <= marks, (item.nodeid, marks)
