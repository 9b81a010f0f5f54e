"""Issue 23 items 6 and 9, through the real path (Redis, Celery worker and beat, the local pool, the
exporter, a real Dask scheduler): every JobStatus is counted and shown, `--wait` says what it waits
for, OWNER is the Unix user the jobs run as, the workers connected to the scheduler are shown beside
the running jobs (a running job whose worker never connected is named), an idle job no slot can match
says so, and the CLI, --json, the status page and the metrics say the same."""
from __future__ import annotations

import html
import json
import subprocess
import sys
import time

import pytest
import requests

from htdask.demo.procs import free_port, wait_for_port
from htdask.demo.services import REPO, Stack
from tests.conftest import live, queue_of, wait_until
from tests.test_core import FAKE_WORKER
from tests.test_exporter import samples, value


@pytest.fixture
def dask_scheduler():
    """A real Dask scheduler on a free loopback port (the fake workers never connect to it)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                             "--port", str(port), "--no-dashboard"], cwd=str(REPO),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=60)
        yield f"tcp://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _row(stack, cluster: str) -> dict:
    out = stack.cli("status", cluster, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["clusters"][0]


def _metrics(stack) -> dict:
    return samples(requests.get(stack.exporter_url + "metrics", timeout=10).text)


def _page_row(stack, cluster: str) -> str:
    page = requests.get(stack.exporter_url, timeout=10).text
    row = page[page.index(f'data-cluster="{cluster}"'):]
    return row[:row.index("</tr>")]


def test_every_job_state_owner_connections_and_unmatched_jobs_are_shown(service_user, dask_scheduler):
    with Stack(beat=True, exporter=True, DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=FAKE_WORKER,
               POLL_INTERVAL="1", SCHEDD_MIN_INTERVAL="0", DASK_SCHEDULER_ADDRESS=dask_scheduler) as stack:
        out = stack.cli("scale", "st", "2", "--wait", "--timeout", "60")
        assert out.returncode == 0, out.stderr
        # workers connected to the scheduler, beside the running jobs: the fake workers never connect
        row = wait_until(lambda: (r := _row(stack, "st"))["scheduler"] and r, timeout=30, message="a probe")
        assert (row["scheduler"]["connected"], row["scheduler"]["running"]) == (0, 2), row
        names = sorted(n for _j, n, _s in row["scheduler"]["not_connected"])
        assert names == ["st-0", "st-1"]
        assert any(n.startswith(f"0 of 2 running workers connected to {dask_scheduler}; not connected: st-")
                   for n in row["notes"]), row["notes"]
        # OWNER: the Unix user the jobs run as (DEFAULT_OWNER here; the request named none)
        assert row["owner"] == service_user
        text = stack.cli("status", "st").stdout
        head, line = text.splitlines()[:2]
        cells = dict(zip(head.split(), line.split()))
        assert (cells["OWNER"], cells["RUNNING"], cells["CONNECTED"]) == (service_user, "2", "0"), text
        m = _metrics(stack)
        assert value(m, "htdask_cluster_jobs", cluster="st", owner=service_user, schedd="local", state="running") == 2
        assert value(m, "htdask_cluster_connected_workers", cluster="st", schedd="local") == 0

        # a suspended job is counted and shown, and not replaced
        victim = sorted(live(stack, "st"), key=lambda a: a["ProcId"])[0]
        job = f"{victim['ClusterId']}.{victim['ProcId']}"
        assert stack.condor("condor_suspend", job).returncode == 0
        row = wait_until(lambda: (r := _row(stack, "st"))["suspended"] == 1 and r, timeout=30, message="suspended")
        assert (row["running"], row["idle"], row["held"]) == (1, 0, 0)
        submits = len(stack.calls("condor_submit"))
        time.sleep(3)  # several polls
        assert len(stack.calls("condor_submit")) == submits and len(queue_of(stack, "st")) == 2, "not replaced"
        out = stack.cli("scale", "st", "2", "--wait", "--timeout", "4")
        assert out.returncode == 1
        last = out.stderr.strip().splitlines()[-1]
        assert "waiting for 2 running jobs and no other" in last and "1 suspended" in last, out.stderr
        assert "0 transferring output" in last
        text = stack.cli("status", "st").stdout
        head, line = text.splitlines()[:2]
        assert dict(zip(head.split(), line.split()))["SUSPENDED"] == "1", text
        m = _metrics(stack)
        assert value(m, "htdask_cluster_jobs", cluster="st", owner=service_user, schedd="local",
                     state="suspended") == 1
        assert stack.condor("condor_continue", job).returncode == 0
        out = stack.cli("scale", "st", "2", "--wait", "--timeout", "60")
        assert out.returncode == 0, out.stderr

        # a job transferring its output (JobStatus 6), put there by the pool's seed command
        seeded = subprocess.run([sys.executable, "-m", "htdask_localpool", "seed", "1", "--status", "6",
                                 "--attr", 'DaskGatewayCluster="xfer"', "--attr", 'DaskWorkerName="xfer-0"',
                                 "--attr", "DaskWorkerIndex=0"], env=stack.env, cwd=str(REPO),
                                capture_output=True, text=True, timeout=60)
        assert seeded.returncode == 0, seeded.stderr
        wait_until(lambda: any(r["name"] == "xfer" and r["transferring_output"] == 1 for r in
                               json.loads(stack.cli("status", "--json").stdout)["clusters"]),
                   timeout=30, message="transferring output")  # (unknown until a poll summarized it)
        text = stack.cli("status", "xfer").stdout
        head, line = text.splitlines()[:2]
        assert dict(zip(head.split(), line.split()))["TRANSFERRING"] == "1", text
        assert any(v == 1 for k, v in _metrics(stack).items() if k[0] == "htdask_cluster_jobs"
                   and ("cluster", "xfer") in k[1] and ("state", "transferring_output") in k[1])

        # --memory 100TiB: no slot of the pool can ever match: status says so, everywhere
        out = stack.cli("scale", "big", "1", "--memory", "100TiB")
        assert out.returncode == 0, out.stderr
        row = wait_until(lambda: (r := _row(stack, "big"))["unmatched"] and r, timeout=30, message="unmatched")
        assert row["unmatched"] == {"no match found": 1} and row["idle"] == 1
        assert "1 idle job no slot matches (no match found)" in row["notes"]
        assert "1 idle job no slot matches (no match found)" in stack.cli("status", "big").stdout
        jobs = json.loads(stack.cli("jobs", "big", "--json").stdout)["jobs"]
        assert jobs[0]["state"] == "Idle (no slot matches: no match found)"
        assert value(_metrics(stack), "htdask_cluster_unmatched_jobs", cluster="big", schedd="local") == 1
        for cluster in ("st", "big"):
            page = _page_row(stack, cluster)
            for note in _row(stack, cluster)["notes"]:
                if "running " not in note:  # (the time a job has run moves between two reads)
                    assert html.escape(note) in page, (note, page)


def test_scheduler_probe_is_bounded_and_says_why():
    """A scheduler that is gone answers at once (refused); one that accepts and never replies costs at most
    the bound; a tls:// scheduler is not asked (the controller holds no credentials)."""
    import socket

    from workers import dask_scheduler
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        hung = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        gone = f"tcp://127.0.0.1:{free_port()}"
        started = time.monotonic()
        views = dask_scheduler.connected_workers([hung, gone, "tls://10.0.0.1:8786"], timeout=0.5, total=1.0)
        assert time.monotonic() - started < 5, "bounded (1 s, and an idle machine would take ~1 s)"
    assert views[gone].error == "unreachable: connection refused" and views[gone].names is None
    assert views[hung].error.startswith("no answer within") and views[hung].names is None
    assert views["tls://10.0.0.1:8786"].error == "not asked: tls:// needs credentials"


def test_scheduler_probe_names_the_connected_workers(dask_scheduler):
    from distributed import Worker
    import asyncio

    from workers import dask_scheduler as probe

    async def with_worker():
        async with Worker(dask_scheduler, name="w-7", nthreads=1, dashboard=False):
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: probe.connected_workers([dask_scheduler], timeout=5, total=10))

    views = asyncio.run(with_worker())
    assert views[dask_scheduler].names == frozenset({"w-7"}) and views[dask_scheduler].error is None
