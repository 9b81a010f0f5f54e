"""Shared fixtures: a real redis-server and a fresh local pool per test, both stopped by pid."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from demo import procs, users
from demo.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server on a free loopback port, stopped after the test."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pool_bin():
    """The pool's condor_* programs installed once per session where every user can run them
    (the checkout may be a private clone: its own localpool/bin is out of reach of the jobs' users)."""
    from demo.services import install_pool
    base = Path(tempfile.mkdtemp(prefix="htdask-pool-code-"))
    os.chmod(base, 0o755)
    yield install_pool(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pool_env(tmp_path, monkeypatch, pool_bin):
    """A fresh local pool: LOCALPOOL_DIR in tmp, the installed condor_* first on PATH (also in os.environ).

    The pool's runner and every job it started are stopped at teardown.
    """
    pool_dir = tmp_path / "pool"
    env = dict(os.environ)
    env["LOCALPOOL_DIR"] = str(pool_dir)
    env["PATH"] = f"{pool_bin}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    for k in ("LOCALPOOL_DIR", "PATH", "PYTHONPATH"):
        monkeypatch.setenv(k, env[k])
    yield env
    subprocess.run([sys.executable, "-m", "localpool", "stop"], env=env, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


SERVICE_USER = "htdask-svc"


@pytest.fixture(scope="session")
def service_user():
    """A non-root Unix user (uid >= 1000) the controller submits as; created once, removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("creating a Unix user needs root (CI runs as root)")
    created = users.ensure_user(SERVICE_USER)
    yield SERVICE_USER
    if created:
        users.delete_user(SERVICE_USER)


@pytest.fixture
def unix_user():
    """A fresh Unix user (uid >= 1000, with a home), deleted at teardown; needs root."""
    if os.geteuid() != 0:
        pytest.skip("creating a Unix user needs root")
    with users.temporary_user() as entry:
        yield entry


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2, message: str = "condition"):
    """demo.procs.wait_until, failing the test (not erroring) on timeout."""
    try:
        return procs.wait_until(predicate, timeout, interval, message)
    except TimeoutError as exc:
        pytest.fail(str(exc))


def queue_of(stack, cluster: str) -> list[dict]:
    """The cluster's jobs as the pool's own condor_q reports them."""
    from workers.htcondor.queue_parser import parse_ads_text
    out = stack.condor("condor_q", "-allusers", "-json", "-constraint", f'DaskGatewayCluster == "{cluster}"',
                       "-attributes", "ClusterId,ProcId,JobStatus,DaskWorkerIndex,DaskWorkerName,Owner")
    assert out.returncode == 0, out.stderr
    return parse_ads_text(out.stdout)


def live(stack, cluster: str) -> list[dict]:
    """Jobs that hold or wait for a slot: idle, running, held."""
    return [a for a in queue_of(stack, cluster) if a["JobStatus"] in (1, 2, 5)]
