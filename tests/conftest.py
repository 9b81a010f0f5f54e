"""Shared fixtures: a real redis-server and a fresh local pool per test, both stopped by pid.

Tiers. Every test is marked by what it needs (the markers are listed in pytest.ini): `redis`, `pool`,
`stack`, `root`, `k8s`, `external`, `slow`; a test that needs none of them is marked `unit`
(`make unit` runs those: `pytest -m unit`). The marks are derived here, at collection, from the
fixtures a test uses (their whole closure, `item.fixturenames`): a fixture that starts something says so
with `@needs(...)` under its `@pytest.fixture`, so every test that uses it, directly or through another
fixture, is marked. A test that starts something itself carries the mark (`@pytest.mark.stack`, or
`pytestmark`). tests/test_tiers.py runs the unit tier without redis-server, redis-sentinel, Celery or
the pool's programs on PATH.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from htdask.demo import procs, users
from htdask.demo.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent

# What a test may need, besides the Python packages of requirements.txt (descriptions: pytest.ini).
NEEDS = ("redis", "pool", "stack", "root", "k8s", "external", "slow")
# A stack (Celery worker/beat/Flower, htdask.demo.services.Stack, the quick start) runs on a redis-server and the pool.
IMPLIES = {"stack": ("redis", "pool")}


def needs(*what: str):
    """Marks a fixture function with what it starts or needs (a subset of NEEDS); put it under
    `@pytest.fixture`. Every test whose fixture closure holds the fixture gets those marks."""
    unknown = set(what) - set(NEEDS)
    if unknown:
        raise ValueError(f"unknown need {sorted(unknown)}; known: {NEEDS}")

    def mark(func):
        func.htdask_needs = frozenset(what)
        return func
    return mark


def needs_of(item: pytest.Item) -> set[str]:
    """What `item` needs: its explicit need marks, and those of every fixture in its closure."""
    found = {m.name for m in item.iter_markers() if m.name in NEEDS}
    defs = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        for fixturedef in (defs.name2fixturedefs.get(name, ()) if defs else ()):
            found |= getattr(fixturedef.func, "htdask_needs", frozenset())
    for need in list(found):
        found.update(IMPLIES.get(need, ()))
    return found


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by them
def pytest_collection_modifyitems(config, items):
    for item in items:
        found = needs_of(item)
        explicit_unit = any(True for _ in item.iter_markers("unit"))
        if explicit_unit and found:
            raise pytest.UsageError(f"{item.nodeid} is marked unit but needs {sorted(found)}")
        for need in sorted(found):
            if not any(True for _ in item.iter_markers(need)):
                item.add_marker(need)
        if not found and not explicit_unit:
            item.add_marker("unit")


@pytest.fixture
@needs("redis")
def redis_server(tmp_path):
    """A private redis-server on a free loopback port, stopped after the test."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
@needs("pool")
def pool_bin():
    """The pool's condor_* programs installed once per session where every user can run them
    (the checkout may be a private clone: its own htdask_localpool/bin is out of reach of the jobs' users)."""
    from htdask.demo.services import install_pool
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
    # what `python -m htdask_localpool stop` runs, without starting an interpreter for it (~250 tests use this)
    from htdask_localpool import daemon, paths
    try:
        daemon.stop(paths.PoolFiles(pool_dir))
    except PermissionError:  # as the stop command: nothing of ours to stop
        pass


SERVICE_USER = "htdask-svc"


@pytest.fixture(scope="session")
@needs("root")
def service_user():
    """A non-root Unix user (uid >= 1000) the controller submits as; created once, removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("creating a Unix user needs root (CI runs as root)")
    created = users.ensure_user(SERVICE_USER)
    yield SERVICE_USER
    if created:
        users.delete_user(SERVICE_USER)


@pytest.fixture
@needs("root")
def unix_user():
    """A fresh Unix user (uid >= 1000, with a home), deleted at teardown; needs root."""
    if os.geteuid() != 0:
        pytest.skip("creating a Unix user needs root")
    with users.temporary_user() as entry:
        yield entry


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2, message: str = "condition"):
    """htdask.demo.procs.wait_until, failing the test (not erroring) on timeout."""
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


class SinceStart:
    """A module-scoped stack as one test sees it: `calls()` holds only the schedd calls made since the test
    started (on a quiet stack), so the test counts exactly what a fresh stack would show it. Tests sharing a
    stack use cluster names of their own, and nothing (no beat) acts on another test's clusters."""

    def __init__(self, stack):
        self._stack = stack
        self._mark = len(stack.calls())
        self._logs = {p.name: p.stat().st_size for p in stack.logdir.glob("*.log")}

    def __getattr__(self, name):
        return getattr(self._stack, name)

    def calls(self, command: str | None = None) -> list[list[str]]:
        return [r for r in self._stack.calls()[self._mark:] if command is None or r[1] == command]

    def log(self, name: str) -> str:
        """What the stack's process `name` (e.g. "worker1") logged since the test started."""
        with open(self._stack.logdir / f"{name}.log", "rb") as f:
            f.seek(self._logs.get(f"{name}.log", 0))
            return f.read().decode(errors="replace")


def since_start(stack, queue: str = "local") -> SinceStart:
    """`stack` (shared by a module's tests) from now on, once it is quiet: nothing waits in `queue`, no task
    is held by a worker (kombu's `unacked`: running, or retrying later) and no schedd call was made for half
    a second (the previous test's tasks are done)."""
    from htdask.state import connect

    def quiet() -> bool:
        before = len(stack.calls())
        time.sleep(0.5)
        r = connect(stack.redis.url)
        return r.llen(queue) == 0 and r.hlen("unacked") == 0 and len(stack.calls()) == before
    wait_until(quiet, timeout=60, message="the shared stack quiet")
    return SinceStart(stack)
