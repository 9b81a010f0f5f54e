"""htdask/state/rounds.py against a real redis-server: a queued request names the task that will handle its cluster
(the running round's, then — from the moment that round took its batch — the next round's), and no token
passes between tasks."""
from __future__ import annotations

import time

from htdask.state import Store, connect, keys, rounds

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
    assert store.finish_round("s", lock, LATER, 10) == rounds.KEPT, "c is pending: the next task is to be sent"
    assert not store.r.exists(keys.batch_lock("s")), "released: the next task takes the lease anew"
    taken, _, handler = store.join_pending("s", "d", store.batch_lock("s"))
    assert not taken and handler == LATER, "queued behind the next round, not taking the free lock"
    nxt = store.batch_lock("s")
    assert store.start_queued_round("s", nxt, LATER)[0] and nxt.owned()
    assert sorted(store.start_round("s", nxt, FIRST, 10, 60)) == ["c", "d"]
    assert store.finish_round("s", nxt, FIRST, 10) == rounds.RELEASED
    assert store.batches_done("s")


def test_a_lost_lock_is_neither_released_nor_renamed(redis_server):
    store = Store(connect(redis_server.url))
    lock = store.batch_lock("s")
    assert store.join_pending("s", "x", lock, FIRST)[0]
    store.r.set(keys.batch_lock("s"), "someone-else")  # ours expired and another process took it
    assert store.start_round("s", lock, LATER, 10, 60) == ["x"]
    assert not store.r.exists(keys.round_queued("s")), "a lost lock names no next round"
    assert store.finish_round("s", lock, LATER, 10) == rounds.LOST
    assert store.r.get(keys.batch_lock("s")) == "someone-else"
    assert rounds.holder_task("ab" * 16) is None, "a plain token names no task"


def test_a_dead_rounds_mark_holds_nobody_up_once_its_lease_is_gone(redis_server):
    """Issue 23 item 0: the queued mark of a round that died (SIGKILL with its batch taken) is honoured only
    while the round's lease lives; the mark of a task sent but lost (prefetched by a dead worker) only for
    its short TTL. Then the next request takes the lock itself, and the poll may queue a round."""
    store = Store(connect(redis_server.url))
    lock = store.batch_lock("s")
    assert store.join_pending("s", "a", lock, FIRST)[0]
    assert store.start_round("s", lock, LATER, 10, 600) == ["a"]
    taken, _, handler = store.join_pending("s", "b", store.batch_lock("s"))
    assert not taken and handler == LATER, "while the round's lease lives, its mark names the next round"
    assert store.batch_state("s") == (1, True)
    store.leases.drop(lock)
    store.r.delete(keys.batch_lock("s"))  # the round was SIGKILLed: its lease expired unrenewed
    assert store.batch_state("s") == (1, False), "a dead round's mark is no round: the poll may queue one"
    nxt = store.batch_lock("s")
    taken, watch, _ = store.join_pending("s", "c", nxt, FIRST)
    assert taken and watch is None, "the next request takes the lock at once"
    assert not store.r.exists(keys.round_queued("s"))
    assert sorted(store.start_round("s", nxt, LATER, 10, 600)) == ["b", "c"]
    store.add_pending("s", "d")
    assert store.finish_round("s", nxt, LATER, 0.3) == rounds.KEPT
    assert store.join_pending("s", "e", store.batch_lock("s"))[2] == LATER, "the sent task's mark is honoured"
    assert 0 < store.r.pttl(keys.round_queued("s")) <= 300
    time.sleep(0.4)  # ... for its TTL only: the task may have been lost with its worker
    last = store.batch_lock("s")
    assert store.join_pending("s", "f", last, FIRST)[0]
    assert sorted(store.start_round("s", last, LATER, 10, 600)) == ["d", "e", "f"]
    assert store.finish_round("s", last, LATER, 10) == rounds.RELEASED and store.batches_done("s")
    # a lost lock's own mark is cleared with it
    lost = store.batch_lock("s")
    assert store.join_pending("s", "g", lost, FIRST)[0]
    store.start_round("s", lost, LATER, 10, 600)
    store.leases.drop(lost)
    store.r.set(keys.batch_lock("s"), "someone-else")
    assert store.finish_round("s", lost, LATER, 10) == rounds.LOST
    assert not store.r.exists(keys.round_queued("s"))


def test_a_request_joins_where_it_enters_and_names_its_own_task_only_when_no_round_runs_or_is_queued(redis_server):
    """Store.record_and_enqueue (tasks.api): recorded and joined in one script; the first request's task is
    named as the queued round, later ones are left to it (their tasks touch Redis no more), one that finds
    a round running is left to that round and arms the watch once; the named task takes the lease."""
    store = Store(connect(redis_server.url))
    (seq, where, *_), joined = store.record_and_enqueue("a", 1, schedd="s", keep_schedd=True, task_id=FIRST)
    assert where == "s" and store.get("a").desired == 1 and store.get("a").seq == seq
    assert joined == (True, None, FIRST) and store.r.get(keys.round_queued("s")) == FIRST
    assert 0 < store.r.pttl(keys.round_queued("s")) <= store.settings.lock_ttl * 1000, "honoured while it starts"
    _, joined = store.record_and_enqueue("b", 2, schedd="s", keep_schedd=True, task_id=LATER)
    assert joined[0] is False and joined[2] == FIRST and joined[1] is not None, "queued: the watch armed"
    lock = store.batch_lock("s")
    assert store.start_queued_round("s", lock, FIRST)[0], "the named task takes the lease"
    assert not store.r.exists(keys.round_queued("s"))
    store.r.delete(keys.round_watch("s"))  # as the watch task does when it runs
    _, joined = store.record_and_enqueue("c", 1, schedd="s", keep_schedd=True, task_id=LATER)
    assert joined[0] is False and joined[2] == FIRST and joined[1] is not None, "running: the watch armed"
    assert store.record_and_enqueue("d", 1, schedd="s", keep_schedd=True, task_id=LATER)[1][1] is None, "once"
    assert sorted(store.start_round("s", lock, LATER, 10, 60)) == ["a", "b", "c", "d"]
    assert store.finish_round("s", lock, LATER, 10) == rounds.RELEASED and store.batches_done("s")
    # a cluster recorded on another schedd is recorded, not joined here: its task joins on its own schedd
    store.record_new_request("e", 1, schedd="t")
    (seq, where, *_), joined = store.record_and_enqueue("e", 3, schedd="s", keep_schedd=True, task_id=FIRST)
    assert where == "t" and joined is None and store.get("e").desired == 3 and not store.has_pending("s")


def test_a_task_named_by_its_enqueue_that_joins_itself_takes_the_free_lease(redis_server):
    """A request whose write no replica confirmed carries no `handled_by`: its task joins (join_recorded)
    although its enqueue named it as the queued round; it is not left waiting for itself."""
    store = Store(connect(redis_server.url))
    (seq, *_), joined = store.record_and_enqueue("a", 1, schedd="s", keep_schedd=True, task_id=FIRST)
    assert joined[0]
    lock = store.batch_lock("s")
    current, (taken, _, _) = store.join_recorded("a", seq, schedd="s", lock=lock, task_id=FIRST)
    assert current and taken and lock.owned()
    assert not store.r.exists(keys.round_queued("s"))
    assert store.start_round("s", lock, LATER, 10, 60) == ["a"]
    assert store.finish_round("s", lock, LATER, 10) == rounds.RELEASED


def test_a_sent_task_lost_with_its_worker_delays_its_clusters_by_its_marks_ttl_only(redis_server):
    """CI failure of test_reliability.py::test_worker_killed_during_scale_down: the scale task named at enqueue
    was prefetched by the worker then SIGKILLed (it comes back only after the visibility timeout). The poll's
    reconcile found the task's queued mark, was left to it, and armed nothing: the cluster waited for the next
    poll. A join or an enqueue that finds a sent task's mark arms the watch, due when the mark expires; the
    watch takes the free lease and runs the round."""
    store = Store(connect(redis_server.url))
    (seq, *_), joined = store.record_and_enqueue("a", 10, schedd="s", keep_schedd=True, task_id=FIRST)
    assert joined == (True, None, FIRST)
    store.r.pexpire(keys.round_queued("s"), 300)  # the task's time to start, shortened
    # ... and FIRST never runs. The poll's reconcile task joins:
    taken, watch, handler = store.join_pending("s", "a", store.batch_lock("s"), LATER)
    assert not taken and handler == FIRST
    assert watch is not None and 0 < watch <= 0.3, "a watch due when the lost task's mark expires"
    assert store.join_pending("s", "b", store.batch_lock("s"))[1] is None, "armed once"
    _, again = store.record_and_enqueue("c", 1, schedd="s", keep_schedd=True, task_id=LATER)
    assert again == (False, None, FIRST), "an enqueue meanwhile is left to the mark, the watch armed already"
    time.sleep(watch + 0.05)
    lock = store.batch_lock("s")
    assert store.watch_round("s", lock)[0], "the watch takes the free lease"
    assert sorted(store.start_round("s", lock, LATER, 10, 60)) == ["a", "b", "c"]
    assert store.finish_round("s", lock, LATER, 10) == rounds.RELEASED and store.batches_done("s")
    # and an enqueue alone is covered too: the first finding a sent task's mark arms the watch
    store.record_and_enqueue("d", 1, schedd="s", keep_schedd=True, task_id=FIRST)
    _, joined = store.record_and_enqueue("e", 1, schedd="s", keep_schedd=True, task_id=LATER)
    assert joined[0] is False and joined[2] == FIRST and joined[1] is not None
