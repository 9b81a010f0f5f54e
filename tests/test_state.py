"""The Redis state module on a real redis-server: counters, request order, locks, throttle."""
from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time

import pytest

from htdask.settings import load
from htdask.state import Store, connect, keys


@pytest.fixture
def store(redis_server):
    return Store(connect(redis_server.url))


def leased(store, name: str):
    """Take the cluster's lease; returns its token (the fencing token reservations carry)."""
    lock = store.cluster_lock(name)
    assert store.acquire(lock)
    return lock.local.token


def test_reserve_is_one_incrby_and_respects_the_floor(store):
    token = leased(store, "c")
    assert store.reserve_indexes("c", 5, token) == 0
    assert store.reserve_indexes("c", 3, token) == 5
    assert store.counter("c") == 8
    # Redis lost the counter but jobs up to index 41 are still in the queue: start at 42.
    store.reset_counter("c")
    assert store.reserve_indexes("c", 2, token, floor=42) == 42
    assert store.counter("c") == 44
    # A floor below the counter changes nothing.
    assert store.reserve_indexes("c", 1, token, floor=3) == 44


def test_only_the_lease_holder_reserves_and_a_submit_in_flight_keeps_the_counter(store):
    """Issue 23 item 1: the lease's token fences the counter; an empty cluster starts again at 0 only when no
    submit of it may still commit."""
    from htdask.state.counters import LeaseLost
    lock = store.cluster_lock("f")
    assert store.acquire(lock)
    stale = lock.local.token
    assert store.reserve_indexes("f", 2, stale, empty=True) == 0
    assert store.submits_in_flight("f") == {stale.decode(): "0+2"}
    # the holder stalls past its lease; another takes the lock, finds no job: the stalled submit may commit
    store.leases.drop(lock)
    store.r.delete(keys.lock("f"))
    new = leased(store, "f")
    with pytest.raises(LeaseLost):
        store.reserve_indexes("f", 2, stale, empty=True)
    assert store.counter("f") == 2, "the stale holder changed nothing"
    assert store.reserve_indexes("f", 2, new, empty=True) == 2, "not reset: a submit of f is in flight"
    assert store.lease_held("f", new) and not store.lease_held("f", stale)
    assert store.leases_held([("f", new), ("f", stale), ("nope", new)]) == [True, False, False]
    store.submit_done([("f", new, None), ("f", stale, ["f-0", "f-1"])])
    assert store.submits_in_flight("f") == {} and store.submitted_names("f") == {"f-0", "f-1"}
    assert store.reserve_indexes("f", 1, new, empty=True) == 0, "no submit in flight: an empty cluster restarts"


def _reserve_many(url: str, n: int, out) -> None:
    s = Store(connect(url))
    out.put([s.reserve_indexes("shared", 1, b"one-lease") for _ in range(n)])


def test_8_processes_x_1000_reservations_never_duplicate(redis_server):
    connect(redis_server.url).set(keys.lock("shared"), "one-lease")  # a lease all of them hold (no TTL)
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_reserve_many, args=(redis_server.url, 1000, q)) for _ in range(8)]
    for p in procs:
        p.start()
    got = [i for _ in procs for i in q.get(timeout=120)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(got) == 8000 and len(set(got)) == 8000 and sorted(got) == list(range(8000))


def test_a_stale_request_never_overrides_a_newer_one(store):
    assert store.record_request("c", 5, schedd="local", seq=10)
    assert not store.record_request("c", 2, schedd="local", seq=9)
    assert store.get("c").desired == 5
    assert store.record_request("c", 5, schedd="local", seq=10), "the same request again is harmless"
    assert store.record_request("c", 7, schedd="local", seq=11)
    rec = store.get("c")
    assert (rec.desired, rec.seq) == (7, 11)
    assert rec.generation == 2, "the repeated request 10 was not written again"


def test_named_requests_replace_the_wanted_set(store):
    store.record_request("g", 2, schedd="local", names=["a", "b"])
    assert store.get("g").names == {"a", "b"}
    store.record_request("g", 1, schedd="local", names=["b"])
    assert store.get("g").names == {"b"}


def test_delete_forgets_every_key_of_the_cluster(store):
    store.record_request("d", 3, schedd="local", owner="alice", options={"nthreads": 2})
    lock = store.cluster_lock("d")
    assert store.acquire(lock)
    store.reserve_indexes("d", 3, lock.local.token)  # a submit in flight, until...
    store.submit_done([("d", lock.local.token, ["d-0"])])
    assert store.release(lock)
    store.write_poll("local", {"d": {"idle": 1, "held_reasons": {}}}, {"d": {"1.0": "{}"}}, time.time())
    store.delete("d")
    assert [k for k in store.r.scan_iter(match="*:d")] == []
    assert "d" not in store.cluster_names()


HOLDER = """
import sys, time
from htdask.settings import load
from htdask.state import Store, connect
store = Store(connect(sys.argv[1]), settings=load().model_copy(update={"lock_ttl": float(sys.argv[2])}))
lock = store.cluster_lock("c")
# a token naming another host and a pid that means nothing here: liveness must not depend on it
assert lock.acquire(blocking=False, token="other-host.example:4242:0123abcd")
store.leases.keep(lock)
print("held", flush=True)
time.sleep(600)
"""


def test_a_lease_outlives_its_ttl_while_held_and_frees_itself_when_its_holder_is_killed(redis_server, store):
    ttl = 1.0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, redis_server.url, str(ttl)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        time.sleep(3 * ttl)  # three TTLs: only the holder's watchdog keeps the lock
        assert store.r.get(keys.lock("c")) == "other-host.example:4242:0123abcd"
        assert not store.try_locks([store.cluster_lock("c")])[0], "a live holder's lease is not taken"
        holder.kill()  # SIGKILL: no release, no cleanup
        holder.wait()
        killed = time.monotonic()
        lock = store.cluster_lock("c")
        while not store.try_locks([lock])[0]:
            time.sleep(0.02)
        assert time.monotonic() - killed <= ttl + 0.5, "the lease freed itself within its TTL"
        assert store.release_locks([lock]) == []
    finally:
        holder.kill()
        holder.wait()


def test_the_watchdog_renews_held_locks_until_they_are_released(redis_server):
    store = Store(connect(redis_server.url), settings=load().model_copy(update={"lock_ttl": 0.6}))
    taken, _ = store.try_locks([store.cluster_lock("a"), store.cluster_lock("b")])
    single = store.batch_lock("s")
    assert len(taken) == 2 and store.acquire(single)
    time.sleep(2.0)
    assert store.r.exists(keys.lock("a"), keys.lock("b"), keys.batch_lock("s")) == 3
    assert store.release_locks(taken) == [] and store.release(single)
    assert store.leases.held() == 0
    assert store.r.exists(keys.lock("a"), keys.lock("b"), keys.batch_lock("s")) == 0


def test_throttle_spaces_calls_by_the_interval(store):
    start = time.monotonic()
    for _ in range(4):
        store.throttle_wait("s", 0.2)
    assert time.monotonic() - start >= 0.55  # 3 waits of ~0.2 s after the first call


def test_many_locks_in_one_round_trip_interoperate_with_redis_py_locks(store):
    locks = [store.cluster_lock(c) for c in ("a", "b", "c")]
    other = store.cluster_lock("b")
    assert other.acquire(blocking=False, token="someone-else")
    taken, expiry = store.try_locks(locks)
    assert [lock.name for lock in taken] == [keys.lock("a"), keys.lock("c")]
    assert list(expiry) == [keys.lock("b")] and 0 < expiry[keys.lock("b")] <= store.leases.ttl
    assert all(lock.owned() for lock in taken), "taken locks carry our token (redis-py's owned())"
    store.r.delete(keys.lock("c"))  # expired meanwhile
    assert store.release_locks(taken) == [taken[1]], "an expired lock is reported, not released"
    assert not store.r.exists(keys.lock("a")) and store.r.get(keys.lock("b")) == "someone-else"
    taken[0].acquire(blocking=False)  # released locks can be taken again one by one
    taken[0].release()


def test_join_pending_adds_the_cluster_and_takes_a_free_batch_lock_once(store):
    first, second, third = store.batch_lock("s"), store.batch_lock("s"), store.batch_lock("s")
    assert store.join_pending("s", "x", first) == (True, None, None)
    taken, watch, _ = store.join_pending("s", "y", second)
    assert not taken and 0 < watch <= store.leases.ttl, "the first to find the lock held arms the watch"
    assert store.join_pending("s", "z", third)[:2] == (False, None), "once"
    assert store.batch_state("s") == (3, True)
    assert sorted(store.pop_pending("s", 10)) == ["x", "y", "z"]
    assert store.batch_state("s") == (0, True)
    assert not store.batches_done("s"), "a held batch lock means a round is running"
    assert store.watch_round("s", second)[:2] == (False, None), "nothing pending: the watch ends"
    assert store.release(first)
    assert store.batches_done("s")


def test_a_queued_round_gathers_requests_and_takes_the_lock_anew(store):
    running = store.batch_lock("s")
    assert store.join_pending("s", "x", running)[0]
    store.add_pending("s", "y")
    assert store.queue_round("s", "next-task", 60) and not store.queue_round("s", "other", 60), "one at a time"
    assert store.release(running)
    taken, watch, handler = store.join_pending("s", "z", store.batch_lock("s"))
    assert not taken and handler == "next-task", "left to the queued round"
    assert watch is not None and 59 < watch <= 60, "the watch armed, due when the queued task's mark expires"
    assert store.batch_state("s") == (3, True), "x, y, z pending; a round queued"
    queued = store.batch_lock("s")
    assert store.start_queued_round("s", queued, "next-task")[0] and queued.owned()
    assert store.join_pending("s", "w", store.batch_lock("s"))[0] is False
    assert store.release(queued) and store.join_pending("s", "v", store.batch_lock("s"))[0]


def test_the_watch_takes_the_lock_a_dead_holder_left(store):
    store.r.set(keys.batch_lock("s"), "other-host.example:4242:0123abcd", px=300)  # renewed by nobody
    taken, watch, _ = store.join_pending("s", "x", store.batch_lock("s"))
    assert not taken and watch is not None
    time.sleep(watch + 0.05)
    lock = store.batch_lock("s")
    assert store.watch_round("s", lock) == (True, None, None) and store.pop_pending("s", 10) == ["x"]
    assert store.release(lock)


def test_retiring_marks_are_live_until_their_deadline_and_claimed_once_by_their_token(store):
    """htdask/state/retiring.py: a reconcile does not count marked jobs; only the retirement that marked them
    removes them, and only while the mark lives (Redis's clock)."""
    store.mark_retiring("r", "tok1", ["5.0", "5.1"], lifetime=30)
    store.mark_retiring("r", "tok2", ["5.2"], lifetime=0.2)
    store.mark_retiring("s", "tok3", [f"6.{p}" for p in range(2500)], lifetime=30)  # many: HSET in parts
    got = store.retiring(["r", "s", "none"])
    assert got["r"] == {"5.0", "5.1", "5.2"} and len(got["s"]) == 2500 and "none" not in got
    time.sleep(0.3)
    assert store.retiring(["r"]) == {"r": {"5.0", "5.1"}}  # 5.2's mark died: it counts again
    assert store.claim_retiring("r", "tok2") == []  # dead: not removed by its late retirement
    assert sorted(store.claim_retiring("r", "tok1")) == ["5.0", "5.1"]
    assert store.claim_retiring("r", "tok1") == [] and store.retiring(["r"]) == {}
    store.delete("s")
    assert store.retiring(["s"]) == {}
