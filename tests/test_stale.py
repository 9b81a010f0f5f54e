"""Issue 12 item 3: staleness by age, clusters nobody serves, unknown clusters.

- a summary older than 3 x POLL_INTERVAL is stale (status table and --json, with the reason);
- a cluster on a queue no worker consumes (workers heartbeat their queues into Redis) is stale with
  that reason, and `delete --force` removes its record, listing its jobs;
- `status`, `jobs` and `delete` treat an unknown cluster alike: one line, exit 1.
"""
from __future__ import annotations

import json
import time

import pytest

from htdask.demo.services import Stack
from htdask.state import Store, connect
from tests.conftest import live, wait_until
from tests.test_core import FAKE_WORKER, scale

pytestmark = pytest.mark.stack


def _row(stack, cluster: str) -> dict:
    out = stack.cli("status", cluster, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["clusters"][0]


def test_stale_by_age_and_by_queue_nobody_consumes_then_delete_force(service_user):
    with Stack(beat=True, DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=FAKE_WORKER, POLL_INTERVAL="1",
               SCHEDD_MIN_INTERVAL="0", DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786") as stack:
        scale(stack, "old", 2)
        wait_until(lambda: len(live(stack, "old")) == 2, message="2 jobs")
        wait_until(lambda: _row(stack, "old")["running"] == 2, message="beat's poll")
        assert not _row(stack, "old")["stale"]
        beat = stack.others.pop()
        beat.stop()  # beat stops: the summary ages past 3 x POLL_INTERVAL
        row = wait_until(lambda: (r := _row(stack, "old"))["stale"] and r, timeout=20, message="stale by age")
        assert row["stale_reason"].startswith("no poll ran for") and row["running"] == 2
        text = stack.cli("status").stdout
        assert "(stale)" in text and "stale: no poll ran for" in text

        # a cluster on a queue no worker consumes: stale with that reason, --wait fails fast, --force works
        out = stack.cli("scale", "orphan", "1", "--schedd", "nowhere")
        assert out.returncode == 0, out.stderr
        row = _row(stack, "orphan")
        assert row["stale"] and row["stale_reason"] == "no worker consumes queue nowhere"
        assert "stale: no worker consumes queue nowhere" in stack.cli("status").stdout
        out = stack.cli("delete", "orphan", "--wait")
        assert out.returncode == 1 and "no worker consumes queue nowhere" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        store = Store(connect(stack.redis.url))
        store.write_poll("nowhere", {"orphan": {"idle": 1, "held_reasons": {}, "polled_at": time.time()}},
                         {"orphan": {"7.0": json.dumps({"job_id": "7.0", "name": "orphan-0", "status": 1})}},
                         time.time())  # what a poll of that schedd saw before its worker went away
        out = stack.cli("delete", "orphan", "--force")
        assert out.returncode == 0, out.stderr
        assert "record removed" in out.stdout and "7.0 (orphan-0)" in out.stdout and "NOT removed" in out.stdout
        assert store.get("orphan") is None and store.tombstone("orphan") > 0
        assert stack.cli("status", "orphan").returncode == 1

        # the worker of queue local stops: its clusters are stale for that reason
        stack.workers.pop().stop()
        row = _row(stack, "old")
        assert row["stale"] and row["stale_reason"] == "no worker consumes queue local"


def test_unknown_cluster_is_one_line_exit_1_for_status_jobs_and_delete(service_user):
    with Stack(DEFAULT_OWNER=service_user, SCHEDD_MIN_INTERVAL="0") as stack:
        for args in (["status", "nosuch"], ["jobs", "nosuch"], ["delete", "nosuch"],
                     ["status", "nosuch", "--json"]):
            out = stack.cli(*args)
            assert out.returncode == 1, (args, out.stdout, out.stderr)
            assert out.stderr.strip() == "error: no cluster named 'nosuch'", (args, out.stderr)
        assert stack.calls() == []  # nothing reached the schedd
