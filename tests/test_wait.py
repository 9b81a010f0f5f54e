"""Issue 12 item 4: `scale --wait` fails fast with the cause, reads beat's summaries, and counts its
progress toward the target in both directions."""
from __future__ import annotations

import time

import pytest

from htdask.demo.services import Stack
from tests.conftest import live, wait_until
from tests.test_core import FAKE_WORKER
from tests.test_reliability import fault

pytestmark = pytest.mark.stack


def _polls(stack) -> int:
    """condor_q calls of the poller (its constraint is the marker alone)."""
    return sum(1 for row in stack.calls("condor_q") if "DaskGatewayCluster =!= undefined" in row[2])


def test_scale_wait_reads_beat_and_fails_fast(service_user):
    with Stack(beat=True, DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=FAKE_WORKER, POLL_INTERVAL="2",
               SCHEDD_MIN_INTERVAL="0", DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786",
               TASK_MAX_RETRIES="1", RETRY_BACKOFF_MAX="1") as stack:
        # up: beat's polls show the progress; the wait adds at most one poll of its own
        before, started = _polls(stack), time.monotonic()
        out = stack.cli("scale", "w", "3", "--wait", "--timeout", "60")
        assert out.returncode == 0, out.stderr
        elapsed = time.monotonic() - started
        assert _polls(stack) - before <= elapsed / 2 + 2, "beat's polls plus at most one"
        assert "3 running, target 3 (3 of 3 started)" in out.stderr
        # down: progress counts jobs gone
        out = stack.cli("scale", "w", "1", "--wait", "--timeout", "60")
        assert out.returncode == 0, out.stderr
        assert "1 live, target 1 (2 of 2 gone)" in out.stderr.splitlines()[-1]
        assert len(live(stack, "w")) == 1

        # a cluster in error for good: exit 1 with the stored error, long before the timeout
        fault(stack, "submit-fail", "1000")
        started = time.monotonic()
        out = stack.cli("scale", "bad", "2", "--wait", "--timeout", "120")
        assert out.returncode == 1 and time.monotonic() - started < 30
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("error: cluster bad:") and "condor_submit" in last, out.stderr
        fault(stack, "clear")

        # no worker consumes the queue: exit 1 at once
        started = time.monotonic()
        out = stack.cli("scale", "lost", "2", "--schedd", "elsewhere", "--wait", "--timeout", "120")
        assert out.returncode == 1 and time.monotonic() - started < 10
        assert out.stderr.strip().splitlines()[-1] == \
            "error: no worker consumes queue elsewhere: cluster lost cannot reach 2 workers"
