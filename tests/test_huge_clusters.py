"""Issue 23 item 5: huge clusters scale down; no argv and no log line grows with the number of jobs.

`MAX_WORKERS_PER_CLUSTER=30000; htdask scale big 26000`, then `htdask scale big 100` failed every round with
`[Errno 7] Argument list too long` (one condor_rm -constraint listing ~25,900 worker indexes) and wrote a
170 KB log line. Through the real path (redis-server, Celery worker, the local pool with no free slots, as
bench/scale_10k.py does, so the 26,000 jobs stay idle and the figure is the controller and the schedd).
"""
from __future__ import annotations

import json
import time

from htdask.demo import services
from htdask.demo.services import Stack
from htdask.domain.jobspec import CONSTRAINT_MAX
from htdask.state import Store, connect
from tasks import ended
from tests.conftest import wait_until

BIG, SMALL = 26_000, 100
#: longest log line accepted (a line naming thousands of jobs would be ~170 KB)
LINE_MAX = 2_000


def ids_of(stack, cluster: str) -> list[dict]:
    out = stack.condor("condor_q", "-allusers", "-json", "-constraint", f'DaskGatewayCluster == "{cluster}"',
                       "-attributes", "ClusterId,ProcId,JobStatus,DaskWorkerIndex,DaskWorkerName")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else []


def test_a_26000_job_cluster_scales_down_to_100_with_short_argv_and_log_lines(service_user):
    started = time.monotonic()
    with Stack(DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=str(services.FAKE_WORKER), LOCALPOOL_SLOTS="0",
               MAX_WORKERS_PER_CLUSTER="30000", POLL_INTERVAL="600", SCHEDD_MIN_INTERVAL="0",
               DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786") as stack:
        out = stack.cli("scale", "big", str(BIG))
        assert out.returncode == 0, out.stderr
        wait_until(lambda: len(ids_of(stack, "big")) == BIG, timeout=600, interval=3, message=f"{BIG} jobs")
        out = stack.cli("poll", timeout=300)  # the poll records the 26,000 jobs (so it sees them leave)
        assert out.returncode == 0, out.stderr
        mark = time.time()
        out = stack.cli("scale", "big", str(SMALL))
        assert out.returncode == 0, out.stderr
        jobs = wait_until(lambda: (lambda j: len(j) == SMALL and j)(
            [a for a in ids_of(stack, "big") if a["JobStatus"] in (1, 2, 5)]), timeout=300, interval=2,
            message=f"{SMALL} jobs left")
        # the highest indexes went (all idle); the 100 left are the lowest, each name on one job
        assert sorted(a["DaskWorkerIndex"] for a in jobs) == list(range(SMALL))
        assert len({a["DaskWorkerName"] for a in jobs}) == SMALL
        rms = [json.loads(row[2]) for row in stack.calls("condor_rm") if float(row[0]) >= mark]
        assert rms and len(rms) <= 3, [len(json.dumps(a)) for a in rms]
        assert all(len(word) <= CONSTRAINT_MAX for argv in rms for word in argv)
        # the next poll reads how the 25,900 jobs ended from the history (one bounded constraint)
        out = stack.cli("poll", timeout=300)
        assert out.returncode == 0, out.stderr
        summary = Store(connect(stack.redis.url)).summaries(["big"])["big"]
        assert int(summary["ended_removed"]) >= ended.HISTORY_LIMIT, summary
        time.sleep(1)
        for path in stack.logdir.glob("worker*.log"):
            lines = path.read_text(errors="replace").splitlines()
            long = [ln[:200] for ln in lines if len(ln) > LINE_MAX]
            assert not long, (path.name, len(long), long[:3])
            text = "\n".join(lines)
            assert "Argument list too long" not in text and "history of ended jobs unavailable" not in text
    print(f"26,000 -> 100 took {time.monotonic() - started:.0f} s")


def test_the_history_constraint_of_many_vanished_jobs_stays_one_bounded_argument():
    """The poll asks condor_history how vanished jobs ended: ranges of ProcIds keep it short, and a list
    no range shortens falls back to the clusters' jobs that ended since the last poll."""
    contiguous = {"big": {f"12.{p}" for p in range(100, 26000)}}
    c = ended.history_constraint(contiguous, ["other"], 1000.0)
    assert "ClusterId == 12 && ProcId >= 100 && ProcId <= 25999" in c and "other" in c and len(c) < 300
    scattered = {"big": {f"12.{p}" for p in range(0, 52000, 2)}}
    c = ended.history_constraint(scattered, [], 1000.0)
    assert c == 'DaskGatewayCluster =!= undefined && member(DaskGatewayCluster, {"big"}) && ' \
                "EnteredCurrentStatus >= 1000"
    many_short = [f"c{i}" for i in range(5000)]
    c = ended.history_constraint({}, many_short, 1000.0)
    assert c == "DaskGatewayCluster =!= undefined && EnteredCurrentStatus >= 1000"
    assert ended.history_constraint({}, [], None) is None


def test_the_gateway_may_ask_how_thousands_of_named_workers_ended(service_user):
    """The gateway's `tasks.ended_jobs` with 5,000 worker names (uuid hex, as the gateway names them): the
    names go into several bounded history constraints (one argument of ~170 KB failed with E2BIG), and
    the one that has a history is found."""
    with Stack(DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=str(services.FAKE_WORKER), POLL_INTERVAL="600",
               SCHEDD_MIN_INTERVAL="0", DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786") as stack:
        for n in (1, 0):
            out = stack.cli("scale", "hx", str(n))
            assert out.returncode == 0, out.stderr
            wait_until(lambda: len([a for a in ids_of(stack, "hx") if a["JobStatus"] in (1, 2, 5)]) == n,
                       message=f"{n} jobs")
        out = stack.python(
            "import json, sys; from tasks.app import app\n"
            "names = [f'{i:032x}' for i in range(5000)] + ['hx-0']\n"
            "res = app.send_task('tasks.ended_jobs', kwargs={'cluster': 'hx', 'names': names}, queue='local')\n"
            "print(json.dumps(res.get(timeout=120)))\n", timeout=180)
        found = json.loads(out.stdout.strip().splitlines()[-1])
        assert list(found) == ["hx-0"] and found["hx-0"]["JobStatus"] == 3, found
        calls = [json.loads(row[2]) for row in stack.calls("condor_history")]
        assert len(calls) >= 10 and all(len(word) <= CONSTRAINT_MAX for argv in calls for word in argv)
