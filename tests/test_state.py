"""The Redis state module on a real redis-server: counters, request order, locks, throttle."""
from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time

import pytest

from state import Store, connect, holder_token, keys


@pytest.fixture
def store(redis_server):
    return Store(connect(redis_server.url))


def test_reserve_is_one_incrby_and_respects_the_floor(store):
    assert store.reserve_indexes("c", 5) == 0
    assert store.reserve_indexes("c", 3) == 5
    assert store.counter("c") == 8
    # Redis lost the counter but jobs up to index 41 are still in the queue: start at 42.
    store.reset_counter("c")
    assert store.reserve_indexes("c", 2, floor=42) == 42
    assert store.counter("c") == 44
    # A floor below the counter changes nothing.
    assert store.reserve_indexes("c", 1, floor=3) == 44


def _reserve_many(url: str, n: int, out) -> None:
    s = Store(connect(url))
    out.put([s.reserve_indexes("shared", 1) for _ in range(n)])


def test_8_processes_x_1000_reservations_never_duplicate(redis_server):
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
    store.reserve_indexes("d", 3)
    store.write_poll("local", {"d": {"idle": 1, "held_reasons": {}}}, {"d": {"1.0": "{}"}}, time.time())
    store.delete("d")
    assert [k for k in store.r.scan_iter(match="*:d")] == []
    assert "d" not in store.cluster_names()


def test_lock_of_a_dead_process_on_this_host_is_broken(store):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    token = holder_token().split(":")
    token[1] = str(dead.pid)
    store.r.set(keys.lock("c"), ":".join(token), px=60000)
    assert store.break_dead_lock(keys.lock("c"))
    store.r.set(keys.lock("c"), holder_token(), px=60000)  # our own, alive: kept
    assert not store.break_dead_lock(keys.lock("c"))


def test_throttle_spaces_calls_by_the_interval(store):
    start = time.monotonic()
    for _ in range(4):
        store.throttle_wait("s", 0.2)
    assert time.monotonic() - start >= 0.55  # 3 waits of ~0.2 s after the first call


def test_many_locks_in_one_round_trip_interoperate_with_redis_py_locks(store):
    locks = [store.cluster_lock(c, 30) for c in ("a", "b", "c")]
    other = store.cluster_lock("b", 30)
    assert other.acquire(blocking=False, token="someone-else")
    token = holder_token()
    taken, holders = store.try_locks(locks, token)
    assert [lock.name for lock in taken] == [keys.lock("a"), keys.lock("c")]
    assert holders == {keys.lock("b"): "someone-else"}
    assert all(lock.owned() for lock in taken), "taken locks carry our token (redis-py's owned())"
    store.r.delete(keys.lock("c"))  # expired meanwhile
    assert store.release_locks(taken) == [taken[1]], "an expired lock is reported, not released"
    assert not store.r.exists(keys.lock("a")) and store.r.get(keys.lock("b")) == "someone-else"
    taken[0].acquire(blocking=False)  # released locks can be taken again one by one
    taken[0].release()


def test_a_handed_over_lock_is_adopted_only_while_it_still_holds_the_token(store):
    sender = store.batch_lock("s", 30)
    assert sender.acquire(blocking=False, token=holder_token())
    token = sender.local.token.decode()
    receiver = store.batch_lock("s", 30)
    assert store.adopt_lock(receiver, token) and receiver.owned()
    receiver.release()
    late = store.batch_lock("s", 30)
    assert not store.adopt_lock(late, token), "the lock was released: the old token is worth nothing"
    assert late.local.token is None
    store.r.set(keys.batch_lock("s"), "new-holder")
    assert not store.adopt_lock(late, token) and store.r.get(keys.batch_lock("s")) == "new-holder"


def test_join_pending_adds_the_cluster_and_takes_a_free_batch_lock_once(store):
    first, second = store.batch_lock("s", 30), store.batch_lock("s", 30)
    assert store.join_pending("s", "x", first, "tok-1") == (True, None)
    assert store.join_pending("s", "y", second, "tok-2") == (False, "tok-1")
    assert store.batch_state("s") == (2, True)
    assert sorted(store.pop_pending("s", 10)) == ["x", "y"]
    assert store.batch_state("s") == (0, True)
    assert not store.batches_done("s"), "a held batch lock means a round is running"
    first.release()
    assert store.batches_done("s")
