"""Issue 27 item 2: idle and lifetime limits, through the real path (redis-server, a Celery worker and beat,
the local pool, real Dask schedulers; a real Dask worker busy with a task).

Clusters: `idle` (its scheduler has nothing to do), `busy` (its scheduler's worker runs a task), `unreach`
(its scheduler address answers nothing: never counted as idle) with idle timeouts of a few seconds, and
`old` with a maximum lifetime. The limits pass runs every POLL_INTERVAL (1 s). No timed assertion: the
unreachable cluster has the shortest idle timeout and is still there when the idle one is deleted.
"""
from __future__ import annotations

import json
import sys
import urllib.request

import pytest

from htdask.demo.procs import Process, free_port, wait_for_port
from htdask.demo.services import FAKE_WORKER, REPO, Stack
from tests.conftest import live, wait_until

pytestmark = pytest.mark.stack

BUSY_CLIENT = """
import sys, time
from distributed import Client
client = Client(sys.argv[1])
future = client.submit(time.sleep, 3600, pure=False)
print("submitted", flush=True)
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def stack(service_user):
    with Stack(beat=True, exporter=True, DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=str(FAKE_WORKER),
               POLL_INTERVAL="1", SCHEDD_MIN_INTERVAL="0", IDLE_TIMEOUT="3600", IDLE_TIMEOUT_MAX="7200") as s:
        yield s


def _scheduler(stack, name: str) -> tuple[Process, str]:
    port = free_port()
    proc = Process([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                    str(port), "--dashboard-address", "127.0.0.1:0"], env=stack.env, cwd=str(REPO),
                   log_path=stack.logdir / f"{name}.log", name=name)
    wait_for_port(port, timeout=60)
    return proc, f"tcp://127.0.0.1:{port}"


def _row(stack, cluster: str) -> dict:
    out = stack.cli("status", cluster, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["clusters"][0]


def _scale(stack, *args: str) -> None:
    out = stack.cli("scale", *args)
    assert out.returncode == 0, out.stderr + stack.logs()


def test_site_maximum_and_bad_durations_are_refused_with_one_line(stack):
    """A limit over IDLE_TIMEOUT_MAX (or none, with a maximum), or a bad duration: exit 2, one line, nothing recorded."""
    for flag, value, words in (("--idle-timeout", "3h", "exceeds the site's maximum 2 h (IDLE_TIMEOUT_MAX)"),
                               ("--idle-timeout", "0", "exceeds the site's maximum 2 h (IDLE_TIMEOUT_MAX)"),
                               ("--max-lifetime", "soon", "must be a duration such as 90s, 30m, 2h")):
        out = stack.cli("scale", "refused", "1", "--scheduler", "tcp://127.0.0.1:9", flag, value)
        assert out.returncode == 2, out.stdout + out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and words in out.stderr, out.stderr
        assert flag in out.stderr
    assert stack.cli("status", "refused").returncode == 1  # nothing was recorded


def test_idle_and_expired_clusters_are_deleted_with_their_reason_and_a_busy_one_is_not(stack):
    procs = []
    try:
        idle_sched, idle_addr = _scheduler(stack, "sched-idle")
        busy_sched, busy_addr = _scheduler(stack, "sched-busy")
        procs += [idle_sched, busy_sched]
        worker = Process([sys.executable, "-m", "distributed.cli.dask_worker", busy_addr, "--nthreads", "1",
                          "--no-nanny", "--no-dashboard"], env=stack.env, cwd=str(REPO),
                         log_path=stack.logdir / "busy-worker.log", name="busy-worker")
        client = Process([sys.executable, "-c", BUSY_CLIENT, busy_addr], env=stack.env, cwd=str(REPO),
                         log_path=stack.logdir / "busy-client.log", name="busy-client")
        procs += [worker, client]
        wait_until(lambda: "submitted" in client.tail(), timeout=60, message="the busy client's task")

        # the unreachable one first, with the shortest idle timeout: were it counted as idle, it would go first
        _scale(stack, "unreach", "1", "--scheduler", "tcp://127.0.0.1:9", "--idle-timeout", "2s")
        _scale(stack, "busy", "1", "--scheduler", busy_addr, "--idle-timeout", "3s")
        _scale(stack, "idle", "1", "--scheduler", idle_addr, "--idle-timeout", "3s", "--max-lifetime", "1h")
        _scale(stack, "old", "1", "--scheduler", busy_addr, "--max-lifetime", "6s")
        wait_until(lambda: len(live(stack, "idle")) == 1, timeout=60, message="the idle cluster's job")

        row = wait_until(lambda: (r := _row(stack, "idle")).get("deleted") and r, timeout=90,
                         message="the idle cluster deleted")
        assert row["culled"]["reason"] == "idle"
        assert row["culled"]["detail"].startswith("idle for ") and "(idle timeout 3 s)" in row["culled"]["detail"]
        assert "(idle limit)" in stack.cli("status").stdout
        wait_until(lambda: not live(stack, "idle"), timeout=60, message="the idle cluster's jobs removed")

        unreach = _row(stack, "unreach")
        assert not unreach.get("deleted") and unreach["desired"] == 1
        assert unreach["idle_state"].startswith("scheduler tcp://127.0.0.1:9 unreachable")
        assert any(n.startswith("idle check: scheduler tcp://127.0.0.1:9 unreachable") and
                   n.endswith("not counted as idle") for n in unreach["notes"]), unreach["notes"]
        busy = _row(stack, "busy")
        assert not busy.get("deleted") and busy["idle_state"] == "busy" and busy["limits"]["idle_timeout"] == 3

        row = wait_until(lambda: (r := _row(stack, "old")).get("deleted") and r, timeout=90,
                         message="the expired cluster deleted")
        assert row["culled"]["reason"] == "lifetime" and "(maximum lifetime 6 s)" in row["culled"]["detail"]
        wait_until(lambda: not live(stack, "old"), timeout=60, message="the expired cluster's jobs removed")
        assert not _row(stack, "busy").get("deleted")  # its scheduler is busy: the pass read it every second

        assert _culled_metric(stack) == {"idle": 1.0, "lifetime": 1.0}
        page = urllib.request.urlopen(stack.exporter_url, timeout=10).read().decode()
        assert 'class="culled" data-cluster="idle"' in page and "(idle timeout 3 s)" in page
        assert 'class="culled" data-cluster="old"' in page and "(maximum lifetime 6 s)" in page

        client.stop()  # the client's task is released: the busy cluster's scheduler becomes idle
        row = wait_until(lambda: (r := _row(stack, "busy")).get("deleted") and r, timeout=90,
                         message="the formerly busy cluster deleted once idle")
        assert row["culled"]["reason"] == "idle"
        assert not _row(stack, "unreach").get("deleted")
    finally:
        for proc in procs:
            proc.stop()


def _culled_metric(stack) -> dict[str, float]:
    metrics = urllib.request.urlopen(stack.exporter_url + "metrics", timeout=10).read().decode()
    out = {}
    for line in metrics.splitlines():
        if line.startswith("htdask_clusters_culled_total{"):
            labels, value = line.rsplit(" ", 1)
            assert 'schedd="local"' in labels, line
            out[labels.split('reason="')[1].split('"')[0]] = float(value)
    return out


def test_a_gateway_cluster_honours_its_idle_timeout_and_maximum_lifetime_options(stack):
    from htdask.demo.gateway_server import GatewayServer, close_client
    before = _culled_metric(stack)
    srv = GatewayServer(stack.env, stack.workdir / "gw-limits", overrides={
        "HTCondorBackend.cluster_heartbeat_period": 1, "HTCondorBackend.cluster_heartbeat_timeout": 60.0,
        "HTCondorBackend.cluster_status_period": 2.0, "HTCondorClusterConfig.worker_memory": "512 M"})
    srv.start()
    gw = srv.client("alice")
    try:
        with pytest.raises(Exception, match=r"exceeds the site's maximum 2 h \(IDLE_TIMEOUT_MAX\)"):
            gw.submit(idle_timeout="3h")
        with pytest.raises(Exception, match=r"invalid max_lifetime 'soon': must be a duration"):
            gw.submit(max_lifetime="soon")
        assert not gw.list_clusters()

        idle = gw.new_cluster(idle_timeout="2s")  # its scheduler never gets a task
        old = gw.new_cluster(max_lifetime="5s")
        running = lambda: {c.name for c in gw.list_clusters()}  # noqa: E731
        wait_until(lambda: idle.name not in running(), timeout=120, message="the idle gateway cluster stopped")
        row = wait_until(lambda: (r := _row(stack, idle.name)).get("deleted") and r, timeout=60,
                         message="the idle gateway cluster's record")
        assert row["culled"]["reason"] == "idle" and "(idle timeout 2 s)" in row["culled"]["detail"]

        wait_until(lambda: old.name not in running(), timeout=120, message="the expired gateway cluster stopped")
        row = wait_until(lambda: (r := _row(stack, old.name)).get("deleted") and r, timeout=60,
                         message="the expired gateway cluster's record")
        assert row["culled"]["reason"] == "lifetime" and "(maximum lifetime 5 s)" in row["culled"]["detail"]
        after = _culled_metric(stack)
        assert after["idle"] == before["idle"] + 1 and after["lifetime"] == before["lifetime"] + 1
        for c in (idle, old):
            c.close()
    finally:
        close_client(gw)
        srv.stop()
