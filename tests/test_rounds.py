"""state/rounds.py against a real redis-server: a queued request names the task that will handle its cluster
(the running round's, then — from the moment that round took its batch — the next round's), and no token
passes between tasks."""
from __future__ import annotations

from state import Store, connect, keys, rounds

FIRST, LATER = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


def test_a_round_names_the_next_task_atomically_with_taking_its_batch(redis_server):
    store = Store(connect(redis_server.url))
    lock = store.batch_lock("s")
    assert store.join_pending("s", "a", lock, FIRST)[0]
    # b joins before the batch is taken: the running round's task takes b
    taken, _, handler = store.join_pending("s", "b", store.batch_lock("s"))
    assert not taken and handler == FIRST
    assert sorted(store.start_round("s", lock, LATER, 10, 60)) == ["a", "b"]
    # c joins during the round: the next round's task will take it
    taken, watch, handler = store.join_pending("s", "c", store.batch_lock("s"))
    assert not taken and handler == LATER and watch is None, "the watch was armed once, by b"
    assert store.finish_round("s", lock, LATER) == rounds.KEPT, "c is pending: the next task is to be sent"
    assert not store.r.exists(keys.batch_lock("s")), "released: the next task takes the lease anew"
    taken, _, handler = store.join_pending("s", "d", store.batch_lock("s"))
    assert not taken and handler == LATER, "queued behind the next round, not taking the free lock"
    nxt = store.batch_lock("s")
    assert store.start_queued_round("s", nxt, LATER)[0] and nxt.owned()
    assert sorted(store.start_round("s", nxt, FIRST, 10, 60)) == ["c", "d"]
    assert store.finish_round("s", nxt, FIRST) == rounds.RELEASED
    assert store.batches_done("s")


def test_a_lost_lock_is_neither_released_nor_renamed(redis_server):
    store = Store(connect(redis_server.url))
    lock = store.batch_lock("s")
    assert store.join_pending("s", "x", lock, FIRST)[0]
    store.r.set(keys.batch_lock("s"), "someone-else")  # ours expired and another process took it
    assert store.start_round("s", lock, LATER, 10, 60) == ["x"]
    assert not store.r.exists(keys.round_queued("s")), "a lost lock names no next round"
    assert store.finish_round("s", lock, LATER) == rounds.LOST
    assert store.r.get(keys.batch_lock("s")) == "someone-else"
    assert rounds.holder_task("ab" * 16) is None, "a plain token names no task"
