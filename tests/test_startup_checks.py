"""A Celery worker refuses an unusable setup at start: one line on stderr, exit 2, before consuming
anything (as root without DEFAULT_OWNER, a DEFAULT_OWNER we may not submit as, condor_* not found)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from htdask.demo.services import REPO, base_env


def start_worker(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "startup-check",
                           "-c", "1", "--without-gossip", "--without-mingle"], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=120)


def refusal(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    ours = [ln for ln in res.stderr.splitlines() if ln.startswith("htdask worker:")]
    assert len(ours) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "ready." not in res.stderr and "celery@" not in res.stderr, "refused before starting"
    return ours[0]


@pytest.fixture
def env(tmp_path):
    # Nothing listens on port 1: a worker that got past the checks would retry the broker, not start.
    e = base_env(tmp_path, "redis://127.0.0.1:1/0")
    for k in ("DEFAULT_OWNER", "CONDOR_BIN_DIR", "CONDOR_BACKEND", "DENY_USERS", "MIN_SUBMIT_UID"):
        e.pop(k, None)
    return e


@pytest.mark.root
def test_root_worker_without_default_owner_refuses(env):
    if os.geteuid() != 0:
        pytest.skip("the check is about a worker running as root")
    line = refusal(start_worker(env))
    assert "DEFAULT_OWNER is unset" in line and "root" in line


@pytest.mark.parametrize("owner,words", [("root", "deny list"), ("no-such-user-xyz", "no such Unix user"),
                                         ("daemon", "MIN_SUBMIT_UID")])
def test_worker_with_an_unusable_default_owner_refuses(env, owner, words):
    line = refusal(start_worker({**env, "DEFAULT_OWNER": owner}))
    assert "DEFAULT_OWNER" in line and words in line


def test_worker_without_condor_programs_refuses(env, service_user, tmp_path):
    line = refusal(start_worker({**env, "DEFAULT_OWNER": service_user, "PATH": "/usr/bin:/bin"}))
    assert "condor_submit not found on PATH" in line
    line = refusal(start_worker({**env, "DEFAULT_OWNER": service_user, "CONDOR_BIN_DIR": str(tmp_path)}))
    assert "not found in CONDOR_BIN_DIR" in line
