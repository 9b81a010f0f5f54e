"""The exporter against a real redis-server: what it serves, from state written the way the workers write it.

The schedd side is not involved here (tests/test_exporter_e2e.py runs the whole stack); the state is
written through `state` exactly as the poller and the reconciler write it.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from htdask.exporter.server import App, make
from htdask.demo.services import REPO
from htdask.settings import load
from htdask.state import Store, connect
from htdask.state.metrics import Recorder
from tasks.poll import summary_fields
from htdask.domain.summary import summarize


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, frozenset(labels)): value} of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: dict, name: str, **labels) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


@pytest.fixture
def served(redis_server):
    """The exporter's WSGI app on a free loopback port, in this process; yields (base URL, store)."""
    store = Store(connect(redis_server.url), recorder=Recorder())
    server = make("127.0.0.1", 0, App(store, poll_interval=10.0, schedds=("local",)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", store
    server.shutdown()
    server.server_close()


def held_ad(proc: int, code: int | None, reason: str) -> dict:
    ad = {"ClusterId": 7, "ProcId": proc, "DaskGatewayCluster": "alpha", "DaskWorkerIndex": proc,
          "DaskWorkerName": f"alpha-{proc}", "JobStatus": 5, "HoldReason": reason}
    if code is not None:
        ad["HoldReasonCode"] = code
    return ad


def write_state(store: Store, polled_at: float) -> None:
    """alpha: 3 desired, 2 running + 3 held (two codes and one without a code); beta: requested, never polled."""
    store.record_new_request("alpha", 3, schedd="local", owner="alice")
    store.record_new_request("beta", 2, schedd="local", owner="bob")
    ads = [{"ClusterId": 7, "ProcId": p, "DaskGatewayCluster": "alpha", "DaskWorkerIndex": p,
            "DaskWorkerName": f"alpha-{p}", "JobStatus": 2} for p in (0, 1)]
    ads += [held_ad(2, 13, "Transfer input files failure: réseau"), held_ad(3, 13, "another 13 with text"),
            held_ad(4, None, "no code at all")]
    fields = {n: summary_fields(s, polled_at) for n, s in summarize(ads).items()}
    # as Poller._add_ended does: how the jobs that left the queue ended (htdask.domain.jobend kinds)
    fields["alpha"]["ended"] = {"exit_code_0": 1, "exit_code_1": 2, "signal_9": 1, "removed": 1}
    fields["alpha"]["ended_completed"], fields["alpha"]["ended_removed"] = 4, 1
    fields["alpha"]["completed"] += 4
    fields["alpha"]["removed"] += 1
    # as the poller's scheduler probe does (workers.dask_scheduler): 1 of the 2 running workers connected
    fields["alpha"]["scheduler"] = {"address": "tcp://10.0.0.1:8786", "running": 2, "error": None, "connected": 1,
                                    "not_connected": [["7.1", "alpha-1", polled_at - 30]]}
    store.metrics.command("local", "submit", 0.3, ok=True)
    store.metrics.command("local", "submit", 70.0, ok=False)
    store.metrics.command("local", "query", 0.02, ok=True)
    store.metrics.request_to_submit("local", 1.5)
    store.write_poll("local", fields, {}, polled_at, duration=0.25)  # the measurements ride this pipeline
    store.poll_failed("other", "condor_q: connection refused")


def test_metrics_are_read_from_redis_at_scrape_time(served):
    base, store = served
    write_state(store, polled_at=time.time())
    assert not store.metrics.pending(), "the measurements went out with the poll's pipeline"
    m = samples(requests.get(f"{base}/metrics", timeout=10).text)
    assert value(m, "htdask_redis_up") == 1
    assert value(m, "htdask_cluster_desired_workers", cluster="alpha", owner="alice", schedd="local") == 3
    assert value(m, "htdask_cluster_desired_workers", cluster="beta", owner="bob", schedd="local") == 2
    for state, n in {"idle": 0, "running": 2, "held": 3, "completed": 4, "removed": 1, "suspended": 0,
                     "transferring_output": 0}.items():
        assert value(m, "htdask_cluster_jobs", cluster="alpha", owner="alice", schedd="local", state=state) == n
    assert value(m, "htdask_cluster_jobs", cluster="beta", owner="bob", schedd="local", state="running") is None, \
        "a cluster never polled has no job counts (unknown is not 0)"
    held = {dict(k[1])["hold_reason_code"]: v for k, v in m.items() if k[0] == "htdask_cluster_held_jobs_by_reason"}
    assert held == {"13": 2, "unknown": 1}, "codes, never the reasons' free text"
    assert value(m, "htdask_cluster_stale", cluster="alpha", schedd="local") == 0
    assert value(m, "htdask_cluster_stale", cluster="beta", schedd="local") == 1
    ended = {dict(k[1])["reason"]: v for k, v in m.items() if k[0] == "htdask_jobs_ended_total" and dict(k[1])["schedd"] == "local"}
    assert ended == {"exit_code_0": 1, "exit_code_1": 2, "signal_9": 1, "removed": 1}, "how they ended, not 'completed'"
    assert 0 <= value(m, "htdask_poll_age_seconds", schedd="local") < 5
    assert value(m, "htdask_poll_duration_seconds", schedd="local") == 0.25
    assert value(m, "htdask_poll_failures_total", schedd="local") == 0
    assert value(m, "htdask_poll_failures_total", schedd="other") == 1
    sub = dict(schedd="local", command="condor_submit")
    assert value(m, "htdask_schedd_command_duration_seconds_bucket", le="0.25", **sub) == 0
    assert value(m, "htdask_schedd_command_duration_seconds_bucket", le="0.5", **sub) == 1
    assert value(m, "htdask_schedd_command_duration_seconds_bucket", le="60.0", **sub) == 1
    assert value(m, "htdask_schedd_command_duration_seconds_bucket", le="+Inf", **sub) == 2
    assert value(m, "htdask_schedd_command_duration_seconds_count", **sub) == 2
    assert value(m, "htdask_schedd_command_duration_seconds_sum", **sub) == pytest.approx(70.3)
    assert value(m, "htdask_schedd_command_failures_total", **sub) == 1
    assert value(m, "htdask_schedd_command_failures_total", schedd="local", command="condor_q") == 0
    assert value(m, "htdask_request_to_submit_seconds_bucket", schedd="local", le="1.0") == 0
    assert value(m, "htdask_request_to_submit_seconds_bucket", schedd="local", le="2.5") == 1

    # Read at scrape time: a later write shows at the next scrape, with no restart.
    store.record_new_request("alpha", 5, schedd="local", owner="alice")
    m = samples(requests.get(f"{base}/metrics", timeout=10).text)
    assert value(m, "htdask_cluster_desired_workers", cluster="alpha", owner="alice", schedd="local") == 5


def test_crash_loop_is_served_while_it_delays_submissions(served):
    base, store = served
    write_state(store, polled_at=time.time())
    store.set_backoff("alpha", time.time() + 80, "4 workers exited within 2 min (exit code 1)")
    store.set_backoff("beta", time.time() - 1, "3 workers exited within 2 min (exit code 2)")  # over
    m = samples(requests.get(f"{base}/metrics", timeout=10).text)
    assert value(m, "htdask_cluster_crash_loop", cluster="alpha", schedd="local") == 1
    assert value(m, "htdask_cluster_crash_loop", cluster="beta", schedd="local") == 0
    page = requests.get(f"{base}/", timeout=10).text
    assert "crash loop: 4 workers exited within 2 min (exit code 1), next try in" in page
    assert "exit code 2" not in page


def test_every_state_owner_holds_and_ends_say_what_status_says(served):
    """Issue 23 items 6 and 9: the status page and the metrics show every JobStatus, the Unix user the
    jobs run as, a person's hold as left alone, idle jobs no slot matches, the workers connected to the
    scheduler, and how ended jobs ended: in the words `htdask status` uses (tasks.status.notes)."""
    from htdask.commands import format_status
    from tasks.api import status_rows
    base, store = served
    store.record_new_request("gamma", 4, schedd="local")  # no owner requested: the jobs' Owner is shown
    ads = [{"ClusterId": 9, "ProcId": p, "DaskGatewayCluster": "gamma", "DaskWorkerIndex": p, "Owner": "carol",
            "DaskWorkerName": f"gamma-{p}", "JobStatus": st, "EnteredCurrentStatus": int(time.time()) - 40}
           for p, st in enumerate((2, 2, 6, 7, 1))]
    ads[4]["LastRejMatchReason"] = "no match found "
    ads.append({**held_ad(5, 1, "via condor_hold (by user root)"), "ClusterId": 9, "DaskGatewayCluster": "gamma"})
    fields = {n: summary_fields(sm, time.time()) for n, sm in summarize(ads).items()}
    fields["gamma"]["ended"] = {"exit_code_1": 5}
    fields["gamma"]["ended_completed"] = 5
    fields["gamma"]["completed"] += 5
    fields["gamma"]["scheduler"] = {"address": "tcp://10.0.0.1:8786", "running": 2, "error": None, "connected": 1,
                                    "not_connected": [["9.1", "gamma-1", int(time.time()) - 40]]}
    store.write_poll("local", fields, {}, time.time())
    m = samples(requests.get(f"{base}/metrics", timeout=10).text)
    labels = dict(cluster="gamma", owner="carol", schedd="local")
    assert {st: value(m, "htdask_cluster_jobs", state=st, **labels) for st in
            ("idle", "running", "held", "suspended", "transferring_output", "completed", "removed")} == \
        {"idle": 1, "running": 2, "held": 1, "suspended": 1, "transferring_output": 1, "completed": 5, "removed": 0}
    assert value(m, "htdask_cluster_connected_workers", cluster="gamma", schedd="local") == 1
    assert value(m, "htdask_cluster_unmatched_jobs", cluster="gamma", schedd="local") == 1
    assert value(m, "htdask_jobs_ended_total", cluster="gamma", schedd="local", reason="exit_code_1") == 5
    page = requests.get(f"{base}/", timeout=10).text
    row = page[page.index('data-cluster="gamma"'):]
    row = row[:row.index("</tr>")]
    assert "<td>carol</td>" in row
    import html
    rows = [r for r in status_rows(store, "gamma")]
    for note in rows[0]["notes"]:
        assert html.escape(note) in row, (note, row)
    assert "held x1 by a user/admin, left alone: via condor_hold (by user root)" in rows[0]["notes"]
    assert "1 idle job no slot matches (no match found)" in rows[0]["notes"]
    assert "ended: 5 exit code 1" in rows[0]["notes"]
    assert any(n.startswith("1 of 2 running workers connected to tcp://10.0.0.1:8786; not connected: gamma-1 "
                            "(job 9.1, running ") for n in rows[0]["notes"]), rows[0]["notes"]
    table = format_status(rows)
    assert all(n in table for n in rows[0]["notes"])
    head, line = table.splitlines()[:2]
    cells = dict(zip(head.split(), line.split()))
    assert (cells["OWNER"], cells["IDLE"], cells["RUNNING"], cells["CONNECTED"], cells["HELD"], cells["SUSPENDED"],
            cells["TRANSFERRING"], cells["COMPLETED"]) == ("carol", "1", "2", "1", "1", "1", "1", "5")


def test_summary_older_than_three_poll_intervals_is_stale(served):
    base, store = served  # poll_interval 10 s
    write_state(store, polled_at=time.time() - 31)
    m = samples(requests.get(f"{base}/metrics", timeout=10).text)
    assert value(m, "htdask_cluster_stale", cluster="alpha", schedd="local") == 1
    assert value(m, "htdask_poll_age_seconds", schedd="local") >= 31


@pytest.mark.external
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: apt-get install prometheus")
def test_promtool_check_metrics_is_clean(served):
    base, store = served
    write_state(store, polled_at=time.time())
    text = requests.get(f"{base}/metrics", timeout=10).text
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


def test_redis_down_is_a_metric_and_healthz_stays_up(served, redis_server):
    base, _ = served
    redis_server.stop()
    r = requests.get(f"{base}/metrics", timeout=30)
    assert r.status_code == 200
    assert value(samples(r.text), "htdask_redis_up") == 0
    assert requests.get(f"{base}/healthz", timeout=10).text == "ok\n"
    assert requests.get(f"{base}/", timeout=30).status_code == 503
    assert requests.get(f"{base}/nothing", timeout=10).status_code == 404


def test_status_page_escapes_and_lists_clusters(served):
    base, store = served
    write_state(store, polled_at=time.time())
    store.set_error("alpha", "<script>alert(1)</script>")
    r = requests.get(f"{base}/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert '<meta http-equiv="refresh" content="10">' in r.text
    assert 'data-cluster="alpha"' in r.text and 'data-cluster="beta"' in r.text
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text
    assert "réseau" in r.text


@pytest.mark.parametrize("args, message", [(["--port", "0"], "0 is not in the range"),
                                            (["--port", "http"], "'http' is not a valid integer")])
def test_cli_refuses_a_bad_port_with_one_line(args, message):
    out = subprocess.run([sys.executable, str(REPO / "cli.py"), "exporter", *args], capture_output=True,
                         text=True, timeout=60, cwd=str(REPO))
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, out.stderr


def test_cli_bad_setting_is_one_line_naming_it():
    import os
    out = subprocess.run([sys.executable, str(REPO / "cli.py"), "exporter", "--port", "1"], capture_output=True,
                         text=True, timeout=60, cwd=str(REPO), env={**os.environ, "POLL_INTERVAL": "soon"})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: POLL_INTERVAL='soon' is not a number"]


def test_cli_port_in_use_is_one_line_exit_1(redis_server):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, str(REPO / "cli.py"), "exporter", "--port", str(port)],
                             capture_output=True, text=True, timeout=60, cwd=str(REPO),
                             env={**__import__("os").environ, "REDIS_URL": redis_server.url})
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_measurements_ride_existing_pipelines_without_extra_round_trips(redis_server, monkeypatch):
    """The worker's measurements add no Redis round trip: they go out with the poll's write and the
    release of a round's locks (each one network write, measured or not)."""
    import redis as redis_lib

    sends = []
    real = redis_lib.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sends.append(1)
        return real(self, command, check_health)

    # a long lease: the watchdog's renewals (every TTL/3, off the hot path) stay out of the count
    store = Store(connect(redis_server.url), recorder=Recorder(),
                  settings=load().model_copy(update={"lock_ttl": 600}))
    store.r.ping()
    write_state(store, polled_at=time.time())  # scripts loaded, connections made
    monkeypatch.setattr(redis_lib.connection.AbstractConnection, "send_packed_command", counting)

    def round_trips(measure: bool) -> int:
        if measure:
            store.metrics.command("local", "submit", 0.2, ok=True)
            store.metrics.command("local", "query", 0.1, ok=False)
            store.metrics.request_to_submit("local", 0.7)
        sends.clear()
        store.write_poll("local", {}, {}, time.time(), duration=0.1)
        locks = [store.cluster_lock("alpha")]
        taken, _ = store.try_locks(locks)
        store.metrics.command("local", "remove", 0.05, ok=True) if measure else None
        store.release_locks(taken)
        return len(sends)

    round_trips(measure=False)  # redis-py loads the lock release script once
    unmeasured = round_trips(measure=False)
    assert round_trips(measure=True) == unmeasured
    fields = store.r.hgetall("htdask:metrics:local")
    assert fields["cmd:condor_rm:b:0.05"] == "1" and fields["cmd:condor_q:failures"] == "1"
    assert not store.metrics.pending()
