"""Batched reconciles end to end: requests for many clusters share a few queue reads (one condor_q per
round for all of them), each round queues the next, a dead round's lease frees itself within LOCK_TTL,
and nothing is left pending.

Real redis-server, a real Celery worker and the local pool; schedd calls are counted in calls.log.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from htdask.state import Store, connect, keys
from tests.conftest import REPO, needs, since_start, wait_until
from tests.test_core import make_stack, module_stack  # noqa: F401 (a fixture: one stack per module)
from workers.htcondor.queue_parser import parse_ads_text


@pytest.fixture
def stack(module_stack):
    """The module's stack from this test's start: its calls only (tests/conftest.py, since_start)."""
    return since_start(module_stack)


def live_by_cluster(stack) -> Counter:
    out = stack.condor("condor_q", "-allusers", "-json", "-attributes", "DaskGatewayCluster,JobStatus")
    assert out.returncode == 0, out.stderr
    return Counter(a["DaskGatewayCluster"] for a in parse_ads_text(out.stdout) if a["JobStatus"] in (1, 2, 5))


def test_requests_for_many_clusters_share_a_few_queue_reads(stack):
    n = 60
    out = stack.python(
        "import json\n"
        "from htdask.state import Store, connect; from tasks import api; from tasks.app import app\n"
        "from htdask.demo.procs import wait_until\n"
        "store = Store(connect())\n"
        f"ids = [api.enqueue_scale(store, f'm{{i}}', 1).task_id for i in range({n})]\n"
        "results = [app.AsyncResult(t).get(timeout=120) for t in ids]\n"
        "wait_until(lambda: store.batches_done('local'), 120, 0.05, 'rounds done')\n"
        "print(json.dumps(results))", timeout=300)
    results = json.loads(out.stdout.splitlines()[-1])
    reads, submits = stack.calls("condor_q"), stack.calls("condor_submit")
    assert len(reads) <= n // 4, f"{len(reads)} condor_q for {n} clusters (one per cluster would be {n})"
    # one condor_submit per round (tasks/submissions.py): at most one per queue read, none twice
    assert len(submits) <= len(reads), f"{len(submits)} condor_submit in {len(reads)} rounds for {n} clusters"
    assert all(r["state"] in ("ok", "queued") for r in results), results
    assert any(r["state"] == "ok" and r["submitted"] for r in results), "the first request ran its own round"
    assert live_by_cluster(stack) == {f"m{i}": 1 for i in range(n)}


LOCK_TTL = 3.0

# A round on "another host": it holds the batch lease (renewed by its watchdog) with a token naming another
# host and a pid that means nothing here, with a cluster pending, until it is SIGKILLed.
ROUND_ELSEWHERE = """
import time
from htdask.state import Store, connect, keys
from htdask.settings import load
store = Store(connect(), settings=load().model_copy(update={"lock_ttl": %r}))
store.record_new_request("orphan", 2, schedd="local")
lock = store.batch_lock("local")
assert lock.acquire(blocking=False, token="submit-2.other.example:4242:0123abcd")
store.leases.keep(lock)
store.add_pending("local", "orphan")
print("holding", flush=True)
time.sleep(600)
""" % LOCK_TTL


@pytest.mark.stack
def test_a_sigkilled_round_on_another_host_delays_the_next_reconcile_by_at_most_the_lease_ttl(service_user):
    with make_stack(service_user, LOCK_TTL=str(LOCK_TTL)) as stack:
        store = Store(connect(stack.redis.url))
        holder = subprocess.Popen([sys.executable, "-c", ROUND_ELSEWHERE], env=stack.env, stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert holder.stdout.readline().strip() == "holding"
            time.sleep(2 * LOCK_TTL)
            assert store.batch_state("local") == (1, True), "the live holder's watchdog kept its lease"
            holder.kill()  # SIGKILL: no release
            holder.wait()
            killed = time.monotonic()
            out = stack.cli("scale", "next", "1")
            assert out.returncode == 0, out.stderr
            wait_until(lambda: store.batch_state("local")[0] == 0, timeout=60, interval=0.05,
                       message="the pending clusters taken by a round")
            taken_after = time.monotonic() - killed
        finally:
            holder.kill()
            holder.wait()
        # the round starts once the lease expires unrenewed (nothing polls: POLL_INTERVAL=60, no beat)
        assert taken_after <= LOCK_TTL + 2.0, f"pending clusters waited {taken_after:.1f}s after the holder died"
        wait_until(lambda: live_by_cluster(stack) == {"orphan": 2, "next": 1}, timeout=60, message="both reconciled")
        wait_until(lambda: store.batches_done("local"), timeout=30, message="nothing left pending")


def test_the_poll_takes_clusters_left_pending(stack):
    store = Store(connect(stack.redis.url))
    # A cluster pending with no round to take it (a queued round lost with Redis's data, say).
    store.record_new_request("left", 0, schedd="local")
    store.add_pending("local", "left")
    out = stack.cli("poll")
    assert out.returncode == 0, out.stderr
    wait_until(lambda: store.batches_done("local"), timeout=30, message="the pending set drained")


def _client(redis_url: str, code: str) -> None:
    """Run `code` in a process of its own, a client of `redis_url` (and of nothing else)."""
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO),
           "DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:8786"}
    out = subprocess.run([sys.executable, "-c", "from htdask.state import Store, connect; from tasks import api\n"
                          "store = Store(connect())\n" + code], env=env, cwd=str(REPO), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_scale_request_reads_nothing_before_its_one_recording_script(redis_server):
    """Enqueueing a request is one script on Redis: numbered, recorded and its schedd chosen together
    (tasks/api.enqueue_scale); no read of the cluster's record before it. Counted with Redis's own
    commandstats on a Redis of this test's own: no worker, no beat, no other client is connected while the
    requests are made (checked), so every command counted is one the requests caused."""
    n = 20
    r = connect(redis_server.url)
    _client(redis_server.url, "api.enqueue_scale(store, 'warm', 0, schedd='nobody')\n")  # scripts loaded
    assert [c["id"] for c in r.client_list()] == [str(r.client_id())], "nothing else uses this Redis"
    r.config_resetstat()
    _client(redis_server.url, f"[api.enqueue_scale(store, f'q{{i}}', 2, schedd='nobody') for i in range({n})]\n")
    stats = r.info("commandstats")
    assert [c["id"] for c in r.client_list()] == [str(r.client_id())], "nothing else used this Redis meanwhile"
    scripts = stats.get("cmdstat_evalsha", {}).get("calls", 0) - stats.get("cmdstat_evalsha", {}).get("failed_calls", 0)
    assert scripts == n, stats
    # (commandstats also counts the commands a script runs: the script's own HGETs are expected; without quota
    # limits it sums no owner's use (htdask/state/quota.py: no HGETALL); a read before it would add one)
    reads = {k: v["calls"] for k, v in stats.items() if k in ("cmdstat_hgetall", "cmdstat_smembers")}
    assert reads == {}, reads
    assert Store(r).get("q7").schedd == "nobody"


def test_a_request_whose_task_is_lost_before_it_starts_is_reconciled_after_its_mark_expires(service_user,
                                                                                          monkeypatch):
    """A request joins its schedd's round where it enters, naming its own task as the queued round; that
    task lost (with a worker that had prefetched it, say) holds the cluster, and the requests that came
    after it, only until the mark expires (LOCK_TTL): then the next request or poll takes the lease."""
    import uuid
    monkeypatch.setenv("LOCK_TTL", str(LOCK_TTL))  # this process's Store names the lost task for LOCK_TTL
    with make_stack(service_user, LOCK_TTL=str(LOCK_TTL)) as stack:
        store = Store(connect(stack.redis.url))
        assert store.settings.lock_ttl == LOCK_TTL
        # tasks.api's script, its task never sent
        _, joined = store.record_and_enqueue("lost", 1, schedd="local", keep_schedd=True, task_id=str(uuid.uuid4()))
        assert joined[0], "no round ran or was queued: the lost task was named"
        out = stack.cli("scale", "after", "1")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: not store.r.exists(keys.round_queued("local")), timeout=LOCK_TTL + 5,
                   message="the lost task's mark expired")
        assert stack.cli("poll").returncode == 0  # (beat's poll, sooner)
        wait_until(lambda: live_by_cluster(stack) == {"lost": 1, "after": 1}, timeout=60,
                   message="both reconciled")
        wait_until(lambda: store.batches_done("local"), timeout=30, message="nothing left pending")
