"""A beat scheduler that sends only while it holds a Redis lock: one active beat, however many run.

Two `celery beat` processes started by mistake would otherwise send every periodic task twice
(celery #2856). Like RedBeat's and single-beat's lock: the holder renews it on every tick; a second beat
waits, and takes over within `LOCK_TTL` seconds when the holder dies.
"""
from __future__ import annotations

import logging

from celery.beat import PersistentScheduler

from state import connect, holder_token, keys

log = logging.getLogger(__name__)

#: seconds a dead beat's lock outlives it (ticks renew it far more often)
LOCK_TTL = 30
#: seconds between a standby beat's attempts to take the lock
STANDBY_TICK = 5.0


class LockedScheduler(PersistentScheduler):
    def __init__(self, *args, **kwargs):
        self._redis = None
        self._token = holder_token()
        self._active: bool | None = None
        super().__init__(*args, **kwargs)

    def _holds_lock(self) -> bool:
        if self._redis is None:
            self._redis = connect(self.app.conf.broker_url)
        key = keys.beat_lock()
        held = bool(self._redis.set(key, self._token, nx=True, ex=LOCK_TTL)) or (
            self._redis.get(key) == self._token and bool(self._redis.expire(key, LOCK_TTL)))
        if held != self._active:
            if held:
                log.info("this beat holds %s: sending periodic tasks", key)
            else:
                log.warning("another beat holds %s: standing by", key)
            self._active = held
        return held

    def tick(self, *args, **kwargs):
        try:
            if not self._holds_lock():
                return STANDBY_TICK
        except Exception as exc:  # Redis away: send nothing rather than risk a double
            log.warning("beat lock unavailable (%s); standing by", exc)
            return STANDBY_TICK
        return super().tick(*args, **kwargs)
