"""state/rounds.py against a real redis-server: the batch lock names the task that will handle a cluster."""
from __future__ import annotations

from state import Store, connect, holder_token, keys, rounds


def test_a_round_names_the_next_task_atomically_with_taking_its_batch(redis_server):
    store = Store(connect(redis_server.url))
    lock = store.batch_lock("s", timeout=60)
    first, later = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    taken, _ = store.join_pending("s", "a", lock, holder_token(first))
    assert taken
    # b joins before the batch is taken: the lock names the running round's task, which takes b
    _, holder = store.join_pending("s", "b", store.batch_lock("s", 60), holder_token())
    assert rounds.holder_task(holder) == first
    assert sorted(rounds.start_round(store, "s", lock, holder_token(later), 10)) == ["a", "b"]
    # c joins during the round: the lock names the next round's task
    _, holder = store.join_pending("s", "c", store.batch_lock("s", 60), holder_token())
    assert rounds.holder_task(holder) == later
    assert rounds.release_unless_pending(store, "s", lock) == rounds.KEPT, "c is pending: hand over, not release"
    assert lock.owned()
    assert rounds.start_round(store, "s", lock, holder_token(), 10) == ["c"]
    assert rounds.release_unless_pending(store, "s", lock) == rounds.RELEASED
    assert not store.r.exists(keys.batch_lock("s"))


def test_a_lost_lock_is_neither_released_nor_swapped(redis_server):
    store = Store(connect(redis_server.url))
    lock = store.batch_lock("s", timeout=60)
    assert lock.acquire(blocking=False, token=holder_token())
    store.r.set(keys.batch_lock("s"), "someone-else")  # ours expired and another process took it
    store.add_pending("s", "x")
    assert rounds.start_round(store, "s", lock, holder_token(), 10) == ["x"]
    assert store.r.get(keys.batch_lock("s")) == "someone-else"
    assert rounds.release_unless_pending(store, "s", lock) == rounds.LOST
    assert store.r.get(keys.batch_lock("s")) == "someone-else"
    assert rounds.holder_task("host:12:" + "ab" * 16) is None, "a plain token names no task"
