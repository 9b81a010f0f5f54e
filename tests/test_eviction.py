"""Issue 23 item 4: Redis may not silently evict the controller's keys.

A real redis-server started with `--maxmemory 10mb --maxmemory-policy volatile-lru` (the default of managed
Redis parameter groups): every process that uses Redis (Celery worker, beat, Flower, the CLI, the exporter,
the operator, the Dask Gateway config) refuses to start with one line naming the policy, exit 2;
REDIS_ALLOW_EVICTION=1 turns the refusal into a warning (and the status page shows it); `noeviction` passes.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request

import pytest

from htdask.demo.procs import Process, free_port, wait_for_port
from htdask.demo.redis_server import RedisServer
from htdask.demo.services import REPO, base_env, wait_for_worker
from tests.conftest import needs

EVICTING = ["--maxmemory", "10mb", "--maxmemory-policy", "volatile-lru"]


@pytest.fixture
@needs("redis", "stack")  # redis-server; Celery worker, beat and Flower processes
def evicting(tmp_path):
    server = RedisServer(tmp_path / "redis", extra=EVICTING).start()
    yield server
    server.stop()


@pytest.fixture
def env(evicting, tmp_path):
    e = base_env(tmp_path, evicting.url)
    e.pop("REDIS_ALLOW_EVICTION", None)
    return e


def run(argv: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout)


CELERY = [sys.executable, "-m", "celery", "-A", "tasks"]
CLI = [sys.executable, str(REPO / "cli.py")]
PROGRAMS = {
    "htdask worker": CELERY + ["worker", "-Q", "eviction-check", "-c", "1", "--without-gossip", "--without-mingle"],
    "htdask beat": CELERY + ["beat", "--loglevel", "INFO"],
    "htdask flower": CELERY + ["flower", "--address=127.0.0.1", "--port=1"],
    "error": CLI + ["status"],
    "htdask exporter": CLI + ["exporter", "--port", "1"],
    "htdask operator": CLI + ["operator", "--instance", "x", "--api-url", "http://127.0.0.1:1/api"],
}


def refusal(res: subprocess.CompletedProcess, prefix: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout[-1000:], res.stderr[-3000:])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    ours = [ln for ln in lines if "maxmemory-policy" in ln]
    assert len(ours) == 1 and ours[0].startswith(prefix + ":"), res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    return ours[0]


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_every_process_refuses_a_redis_that_evicts(env, program):
    line = refusal(run(PROGRAMS[program], env), program)
    assert "'volatile-lru'" in line and "noeviction" in line and "REDIS_ALLOW_EVICTION=1" in line, line
    if program == "htdask worker":
        assert "ready." not in line


@pytest.mark.skipif(shutil.which("dask-gateway-server") is None and not (REPO / ".venv/bin/dask-gateway-server").exists(),
                    reason="dask-gateway-server is not installed")
def test_the_gateway_refuses_a_redis_that_evicts(env, service_user):
    exe = shutil.which("dask-gateway-server") or str(REPO / ".venv/bin/dask-gateway-server")
    res = run([exe, "-f", str(REPO / "htdask" / "gateway" / "config.py")],
              {**env, "GATEWAY_PASSWORD": "pw", "DEFAULT_OWNER": service_user})
    line = refusal(res, "dask-gateway-server")
    assert "'volatile-lru'" in line


def test_allowed_eviction_warns_and_the_status_page_shows_it(env, tmp_path, service_user):
    allowed = {**env, "REDIS_ALLOW_EVICTION": "1", "DEFAULT_OWNER": service_user}
    res = run(CLI + ["status"], allowed)
    assert res.returncode == 0, res.stderr
    assert "no clusters" in res.stdout
    assert "maxmemory-policy is 'volatile-lru'" in res.stderr and "running anyway" in res.stderr, res.stderr
    worker = Process(PROGRAMS["htdask worker"] + ["--loglevel", "INFO"], env=allowed, cwd=str(REPO),
                     log_path=tmp_path / "worker.log", name="worker")
    port = free_port()
    exporter = Process(CLI + ["exporter", "--port", str(port)], env=allowed, cwd=str(REPO),
                       log_path=tmp_path / "exporter.log", name="exporter")
    try:
        wait_for_worker(allowed, logfile=tmp_path / "worker.log")
        assert "running anyway" in (tmp_path / "worker.log").read_text()
        wait_for_port(port, timeout=30)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert 'id="eviction"' in page and "volatile-lru" in page, page[:2000]
    finally:
        worker.stop()
        exporter.stop()


@pytest.mark.redis
def test_noeviction_with_maxmemory_passes(tmp_path):
    server = RedisServer(tmp_path / "redis", extra=["--maxmemory", "10mb", "--maxmemory-policy", "noeviction"])
    with server:
        res = run(CLI + ["status"], base_env(tmp_path, server.url))
        assert res.returncode == 0 and "no clusters" in res.stdout, res.stderr
        assert "maxmemory" not in res.stderr, res.stderr
