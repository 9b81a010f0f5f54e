"""Issue 19: an ended worker job is known to the gateway from the cluster's job event log, at the next
check, not at the next queue poll (htdask/gateway/eventlog.py).

The units write event logs with the local pool's writer (htdask_localpool.userlog, HTCondor's format) and read
them with gateway.eventlog (htcondor2.JobEventLog); the end-to-end test runs the real stack with the
default-ish POLL_INTERVAL of 15 s, where the start-failure limit used to wait for polls.
"""
from __future__ import annotations

import time

import pytest

from htdask.gateway import jobcheck
from htdask.gateway.eventlog import ClusterLog, EventLogs
from htdask.demo.services import Stack, have_redis
from htdask_localpool import userlog
from tests.conftest import live, needs, wait_until


def _ad(c, p, **kw):
    return {"ClusterId": c, "ProcId": p, "SubmitEventNotes": f"DaskWorkerName=w-{p}", **kw}


def _write(path, *events):
    with open(path, "a") as f:
        for code, ad in events:
            f.write(userlog.event_text(code, ad))


def test_events_become_ended_and_held_records_incrementally(tmp_path):
    path = tmp_path / "c.log"
    logs = EventLogs()
    assert logs.read("c", str(path)) == ([], [])  # no file yet: no news
    _write(path, (0, _ad(7, 0)), (0, _ad(7, 1)), (0, _ad(7, 2)), (1, _ad(7, 0)))
    assert logs.read("c", str(path)) == ([], [])  # idle and running jobs are never failed starts
    _write(path, (5, _ad(7, 0, ExitCode=1)), (5, _ad(7, 1, ExitBySignal=True, ExitSignal=9)),
           (12, _ad(7, 2, HoldReason="Failed to execute", HoldReasonCode=6, HoldReasonSubCode=2)))
    ended, held = logs.read("c", str(path))
    by_job = {e["job_id"]: e for e in ended}
    assert by_job["7.0"]["name"] == "w-0" and by_job["7.0"]["exit_code"] == 1 and by_job["7.0"]["status"] == 4
    assert by_job["7.1"]["exit_signal"] == 9 and by_job["7.1"]["exit_code"] is None
    assert [(h["job_id"], h["name"], h["hold_code"]) for h in held] == [("7.2", "w-2", 6)]
    _write(path, (13, _ad(7, 2, ReleaseReason="via condor_release")))
    ended, held = logs.read("c", str(path))
    assert held == [] and len(ended) == 2
    _write(path, (9, _ad(7, 2, RemoveReason="via condor_rm (by user x)")))
    ended, _ = logs.read("c", str(path))
    assert {e["job_id"]: e["status"] for e in ended}["7.2"] == 3


def test_an_unreadable_file_is_no_news(tmp_path):
    path = tmp_path / "junk.log"
    path.write_text("this is not an event log\n")
    cl = ClusterLog("c", str(path))
    cl.read()
    assert cl.ended == {} and cl.held == {}


def test_classify_acts_on_the_log_before_any_poll():
    now = time.time()
    base = dict(records=[], seen_job=None, enqueued_at=now - 1, polled_at=now - 10, now=now, connect_timeout=600)
    assert jobcheck.classify(**base).state == "unpolled"  # the poll predates the request
    ended = [{"job_id": "7.0", "name": "w-0", "status": 4, "exit_code": 1, "ended_at": int(now)}]
    v = jobcheck.classify(**base, ended=ended)
    assert (v.ok, v.state, v.job_id) == (False, "ended", "7.0") and "exit code 1" in v.reason
    held = [{"job_id": "7.1", "name": "w-0", "status": 5, "hold_code": 6, "hold_reason": "no exe", "since": now}]
    v = jobcheck.classify(**base, held=held)
    assert (v.ok, v.state) == (False, "held") and "HoldReasonCode 6" in v.reason
    by_person = [{**held[0], "hold_code": 1}]
    assert jobcheck.classify(**base, held=by_person).ok  # condor_hold by a person: left alone


pytestmark_e2e = pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")


@pytest.fixture(scope="module")
@needs("stack")
def slow_poll_stack(service_user):
    with Stack(beat=True, DEFAULT_OWNER=service_user, POLL_INTERVAL="15", SCHEDD_MIN_INTERVAL="0") as s:
        yield s


@pytestmark_e2e
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_start_failure_limit_with_a_15s_poll(slow_poll_stack, service_user):
    """dask-gateway's test_worker_start_failure_limit (3 failed starts fail the cluster within 10 s) with
    POLL_INTERVAL 15 s: only the job event log can make it (the first poll after the request may be 15 s
    away, and each failed start used to wait for one)."""
    from htdask.gateway.inprocess import ThreadGateway, gateway_config
    from htdask.demo.gateway_server import close_client
    from tests.test_gateway_conformance import _failure_options

    config = gateway_config(slow_poll_stack, service_user, worker_status_period=1.0, worker_connect_timeout=8.0,
                            cluster_heartbeat_timeout=30.0)
    config.HTCondorBackend.cluster_options = _failure_options()
    config.HTCondorBackend.cluster_start_timeout = 30.0
    g = ThreadGateway(config).start()
    gw = g.client("dave")
    try:
        cluster = gw.new_cluster(worker_cmd="/bin/false")
        name = cluster.name
        start = time.monotonic()
        cluster.scale(1)

        from dask_gateway_server.backends.db_base import JobStatus
        first_failure = []

        def status():
            workers = g.run(lambda: list(g.backend.db.get_cluster(name).workers.values()))
            if not first_failure and any(w.status == JobStatus.FAILED for w in workers):
                first_failure.append(time.monotonic())
            return gw.get_cluster(name).status.name
        wait_until(lambda: status() in ("FAILED", "STOPPED"), timeout=60, interval=0.2,
                   message="cluster failed after 3 failed starts")
        took = time.monotonic() - start
        after_first = time.monotonic() - (first_failure or [start])[0]
        print(f"worker start failure limit reached {took:.1f}s after scale(1), {after_first:.1f}s after the "
              "first failed start, with a 15 s poll")
        assert status() == "FAILED"
        # without the event log: ~15 s to the first failure, then ~15 s per failed start (measured: 42 s)
        assert after_first <= 10.0, f"3 failed starts took {after_first:.1f}s after the first (POLL_INTERVAL=15)"
        assert took <= 15.0, f"3 failed starts took {took:.1f}s with POLL_INTERVAL=15"
        wait_until(lambda: not live(slow_poll_stack, name), timeout=60, message="no job left")
    finally:
        close_client(gw)
        g.stop()
