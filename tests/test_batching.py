"""Batched reconciles end to end: requests for many clusters share a few queue reads (one condor_q per
round for all of them), the batch lock passes from round to round, and nothing is left pending.

Real redis-server, a real Celery worker and the local pool; schedd calls are counted in calls.log.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from state import Store, connect, holder_token, keys
from tests.conftest import wait_until
from tests.test_core import make_stack
from workers.htcondor.queue_parser import parse_ads_text


@pytest.fixture
def stack(service_user):
    with make_stack(service_user) as s:
        yield s


def live_by_cluster(stack) -> Counter:
    out = stack.condor("condor_q", "-allusers", "-json", "-attributes", "DaskGatewayCluster,JobStatus")
    assert out.returncode == 0, out.stderr
    return Counter(a["DaskGatewayCluster"] for a in parse_ads_text(out.stdout) if a["JobStatus"] in (1, 2, 5))


def test_requests_for_many_clusters_share_a_few_queue_reads(stack):
    n = 60
    out = stack.python(
        "import json\n"
        "from state import Store, connect; from tasks import api; from tasks.app import app\n"
        "from demo.procs import wait_until\n"
        "store = Store(connect())\n"
        f"ids = [api.enqueue_scale(store, f'm{{i}}', 1).task_id for i in range({n})]\n"
        "results = [app.AsyncResult(t).get(timeout=120) for t in ids]\n"
        "wait_until(lambda: store.batches_done('local'), 120, 0.05, 'rounds done')\n"
        "print(json.dumps(results))", timeout=300)
    results = json.loads(out.stdout.splitlines()[-1])
    reads, submits = stack.calls("condor_q"), stack.calls("condor_submit")
    assert len(submits) == n, "one condor_submit per cluster, none twice"
    assert len(reads) <= n // 4, f"{len(reads)} condor_q for {n} clusters (one per cluster would be {n})"
    assert all(r["state"] in ("ok", "queued") for r in results), results
    assert any(r["state"] == "ok" and r["submitted"] for r in results), "the first request ran its own round"
    assert live_by_cluster(stack) == {f"m{i}": 1 for i in range(n)}


def test_a_batch_lock_left_by_a_dead_process_is_broken_by_the_next_request(stack):
    store = Store(connect(stack.redis.url))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    token = holder_token().split(":")
    token[1] = str(dead.pid)
    # A round died holding the lock, with a cluster still pending (its request recorded at enqueue).
    store.record_new_request("orphan", 2, schedd="local")
    store.add_pending("local", "orphan")
    store.r.set(keys.batch_lock("local"), ":".join(token), px=600_000)
    out = stack.cli("scale", "next", "1")
    assert out.returncode == 0, out.stderr
    wait_until(lambda: live_by_cluster(stack) == {"orphan": 2, "next": 1}, timeout=60, message="both reconciled")
    wait_until(lambda: store.batches_done("local"), timeout=30, message="nothing left pending")


def test_the_poll_takes_clusters_left_pending(stack):
    store = Store(connect(stack.redis.url))
    # A cluster pending with no round to take it (a hand-over lost with Redis's data, say).
    store.record_new_request("left", 0, schedd="local")
    store.add_pending("local", "left")
    out = stack.cli("poll")
    assert out.returncode == 0, out.stderr
    wait_until(lambda: store.batches_done("local"), timeout=30, message="the pending set drained")
