"""Issue 23 item 8: beat survives a Redis outage (tasks/beat.py).

Real processes: a redis-server stopped and started again on the same port (without persistence, so it comes
back empty: no lock, no schedule), a Celery worker, two beats (active and standby) and a beat started while
Redis is down. Before the fix every beat died (the standby on `None.extend`, the active one on `lock.extend`,
the late one in `setup_schedule`) and no poll ran again.
"""
from __future__ import annotations

import time

from htdask.demo.services import Stack, celery_beat
from htdask.state import Store, connect
from tests.conftest import wait_until

POLL_INTERVAL = 2
LOCK_TIMEOUT = 10  # BEAT_LOCK_TIMEOUT's least value
OUTAGE = LOCK_TIMEOUT + 2  # longer than the lock: it cannot survive the outage
SENDS = "Sending due task poll-local"


def _sends(stack, name: str) -> int:
    return (stack.logdir / f"{name}.log").read_text(errors="replace").count(SENDS)


def _ok_at(store) -> float:
    try:
        return float(store.poll_status("local").get("ok_at") or 0)
    except Exception:  # Redis away or starting
        return 0.0


def _start_beat(stack, name: str):
    proc = celery_beat(stack.env, stack.logdir, name=name)
    stack.others.append(proc)  # stopped with the stack
    return proc


def test_two_beats_ride_through_a_redis_outage_and_one_sends(service_user):
    with Stack(DEFAULT_OWNER=service_user, POLL_INTERVAL=str(POLL_INTERVAL), BEAT_LOCK_TIMEOUT=str(LOCK_TIMEOUT),
               SCHEDD_MIN_INTERVAL="0") as stack:
        store = Store(connect(stack.redis.url))
        beats = {"beat-a": _start_beat(stack, "beat-a")}
        wait_until(lambda: _sends(stack, "beat-a") >= 1, timeout=30, message="beat-a sending")
        beats["beat-b"] = _start_beat(stack, "beat-b")  # the standby
        wait_until(lambda: _ok_at(store) > 0, timeout=30, message="a first poll")
        time.sleep(2 * POLL_INTERVAL)
        assert _sends(stack, "beat-b") == 0, "the standby sent while the active beat held the lock"

        stack.redis.stop()
        time.sleep(OUTAGE / 2)
        beats["beat-late"] = _start_beat(stack, "beat-late")  # started while Redis is down
        time.sleep(OUTAGE / 2)
        before = {name: _sends(stack, name) for name in beats}
        stack.redis.start()  # same port, empty: the lock and RedBeat's schedule are gone
        restarted = time.monotonic()

        # polls resume within BEAT_LOCK_TIMEOUT + POLL_INTERVAL (plus the worker's reconnection)
        wait_until(lambda: _ok_at(store) > 0, timeout=LOCK_TIMEOUT + POLL_INTERVAL + 10,
                   message=f"a poll after the outage\n{stack.logs()}")
        first = _ok_at(store)
        wait_until(lambda: _ok_at(store) > first, timeout=3 * POLL_INTERVAL + 5, message="polls going on")
        time.sleep(3 * POLL_INTERVAL)
        elapsed = time.monotonic() - restarted

        for name, proc in beats.items():
            assert proc.alive(), f"{name} died:\n{proc.tail(40)}"
        after = {name: _sends(stack, name) - before[name] for name in beats}
        senders = [name for name, n in after.items() if n]
        assert len(senders) == 1, after  # exactly one beat sends
        assert after[senders[0]] <= elapsed / POLL_INTERVAL + 2, (after, elapsed)  # not doubled either
        for name in beats:  # one warning per outage, not one per retry
            text = (stack.logdir / f"{name}.log").read_text(errors="replace")
            assert text.count("Redis unreachable") == 1, (name, text[-3000:])
            assert "Traceback" not in text, (name, text[-3000:])


def test_a_beat_started_while_redis_is_down_sends_once_it_is_up(service_user):
    with Stack(DEFAULT_OWNER=service_user, POLL_INTERVAL=str(POLL_INTERVAL), BEAT_LOCK_TIMEOUT=str(LOCK_TIMEOUT),
               SCHEDD_MIN_INTERVAL="0") as stack:
        store = Store(connect(stack.redis.url))
        stack.redis.stop()
        beat = _start_beat(stack, "beat-late")
        time.sleep(5)
        assert beat.alive(), beat.tail(40)
        stack.redis.start()
        wait_until(lambda: _sends(stack, "beat-late") >= 1, timeout=LOCK_TIMEOUT + POLL_INTERVAL,
                   message=f"beat-late sending\n{beat.tail(40)}")
        wait_until(lambda: _ok_at(store) > 0, timeout=30, message=f"a poll\n{stack.logs()}")
        assert beat.alive(), beat.tail(40)
