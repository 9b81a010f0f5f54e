"""Issue 12 item 6: holds a person made are left alone.

A job held with condor_hold (HoldReasonCode 1) or with a code listed in HOLD_KEEP_CODES (here 34, the
pool's memory hold) is never released or replaced by the controller, still counts as a worker of its
cluster, and is shown as such in `status` and `jobs`.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.conftest import live, queue_of, wait_until
from tests.test_core import make_stack, scale
from tests.test_reliability import fault

pytestmark = pytest.mark.stack


def test_user_and_admin_holds_are_never_released_or_replaced(service_user):
    with make_stack(service_user, HOLD_RELEASE_LIMIT="1", HOLD_KEEP_CODES="34") as stack:
        fault(stack, "hold-next", "1")  # the first job to start is held with code 34 (kept by the setting)
        scale(stack, "adm", 3)
        wait_until(lambda: sorted(j["JobStatus"] for j in live(stack, "adm")) == [2, 2, 5], timeout=60,
                   message="2 running, 1 held by the pool")
        victim = [j for j in live(stack, "adm") if j["JobStatus"] == 2][0]
        out = stack.condor("condor_hold", f"{victim['ClusterId']}.{victim['ProcId']}")  # an admin holds one
        assert out.returncode == 0, out.stderr
        for _ in range(3):  # several polls: each would release or replace a system hold
            assert stack.cli("poll").returncode == 0
            time.sleep(0.5)
        scale(stack, "adm", 3)  # a request reconciles the cluster (and would apply the hold policy)
        wait_until(lambda: _scale_tasks_done(stack) == 2, message="the second scale task")
        time.sleep(0.5)
        assert sorted(j["JobStatus"] for j in live(stack, "adm")) == [2, 5, 5]
        assert len(queue_of(stack, "adm")) == 3
        assert stack.calls("condor_release") == [] and stack.calls("condor_rm") == []
        assert len(stack.calls("condor_submit")) == 1
        row = json.loads(stack.cli("status", "adm", "--json").stdout)["clusters"][0]
        assert row["held"] == 2 and len(row["held_kept"]) == 2, row
        assert [n for r, n in row["held_kept"].items() if "condor_hold" in r] == [1], row
        assert stack.cli("status", "adm").stdout.count("by a user/admin, left alone") == 2
        jobs = json.loads(stack.cli("jobs", "adm", "--json").stdout)["jobs"]
        assert sorted(j["kept_hold"] for j in jobs) == [False, True, True]
        assert "(user/admin hold, left alone)" in stack.cli("jobs", "adm").stdout


def _scale_tasks_done(stack) -> int:
    text = (stack.logdir / "worker1.log").read_text(errors="replace")
    return sum(1 for ln in text.splitlines() if "tasks.scale_cluster[" in ln and "succeeded" in ln)


def test_a_worker_whose_program_is_missing_stays_held_with_its_reason(service_user):
    """Issue 25 item 5: the start script exits 86 when the worker's program is missing on the execute host,
    and the job's on_exit_hold holds it (HoldReasonCode 3, subcode 86). Releasing or replacing it would only
    run the same missing program again: the controller leaves it held (however many polls and requests),
    and `status` shows why."""
    from htdask.demo.services import Stack
    from htdask.domain.jobfiles import MISSING_REASON
    with Stack(DEFAULT_OWNER=service_user, POLL_INTERVAL="60", SCHEDD_MIN_INTERVAL="0", HOLD_RELEASE_LIMIT="1",
               DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786",
               DASK_WORKER_COMMAND="/opt/nowhere/bin/python3 -m distributed.cli.dask_worker") as stack:
        scale(stack, "nopy", 2)
        wait_until(lambda: sorted(j["JobStatus"] for j in live(stack, "nopy")) == [5, 5], timeout=60,
                   message="both workers held")
        for _ in range(3):  # several polls: each would release (HOLD_RELEASE_LIMIT=1) or replace a system hold
            assert stack.cli("poll").returncode == 0
            time.sleep(0.5)
        scale(stack, "nopy", 2)  # a request reconciles the cluster (and applies the hold policy)
        wait_until(lambda: _scale_tasks_done(stack) == 2, message="the second scale task")
        time.sleep(0.5)
        out = stack.condor("condor_q", "-allusers", "-json", "-constraint", 'DaskGatewayCluster == "nopy"',
                           "-attributes", "JobStatus,HoldReasonCode,HoldReasonSubCode,HoldReason,NumJobStarts")
        ads = json.loads(out.stdout)
        assert [(a["JobStatus"], a["HoldReasonCode"], a["HoldReasonSubCode"], a["NumJobStarts"]) for a in ads] == \
            [(5, 3, 86, 1)] * 2, ads
        assert ads[0]["HoldReason"] == MISSING_REASON
        assert stack.calls("condor_release") == [] and stack.calls("condor_rm") == []
        assert len(stack.calls("condor_submit")) == 1
        assert stack.cli("poll").returncode == 0
        status = stack.cli("status", "nopy")
        assert f"held x2: {MISSING_REASON}" in status.stdout, status.stdout
