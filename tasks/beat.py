"""Beat runs celery-redbeat's scheduler: one active beat, however many are started, through Redis outages.

Two `celery beat` processes started by mistake would otherwise send every periodic task twice
(celery #2856). RedBeat keeps the schedule's state in Redis (under `htdask.state.keys.redbeat_prefix()`) and sends
only while it holds its Redis lock; the schedule itself stays in beat_schedule.py (RedBeat installs the app's
`beat_schedule` as its static entries, dropping entries no longer there).

What this subclass adds (RedBeat alone lets a Redis outage kill every beat: a standby's lock taken at start
fails into `None` and its tick dies on `None.extend`, the active one dies on `lock.extend`, a beat started while
Redis is down dies in `setup_schedule`):

- the lock is taken in `tick`, not once at start: a standby tries it on every tick (waiting up to
  MAX_LOOP_INTERVAL s for it, polling every LOCK_POLL s), so it takes over within about LOCK_POLL s after the
  lock expires; the active beat extends it on every tick (at least every MAX_LOOP_INTERVAL s) and, when it
  finds it lost (expired while Redis was away, or Redis lost its data), stands by instead of dying;
- a Redis error in a tick (or in `setup_schedule` at start) is an outage: nothing is sent, the next tick
  comes after a backoff (0.5 s doubling to MAX_LOOP_INTERVAL), one warning per outage and one line when Redis
  answers again;
- the static entries are (re)installed whenever this beat takes the lock, so a Redis that came back empty
  gets its schedule again; entries keep their last run time when Redis kept it.

After an outage exactly one beat sends (the lock's holder), and polls resume within about BEAT_LOCK_TIMEOUT +
POLL_INTERVAL: the old lock expires (or is gone), one beat takes it, and the poll entry is due within a period.
"""
from __future__ import annotations

import logging
import time

import redis
from celery.signals import beat_init
from redbeat import RedBeatScheduler
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, acquire_distributed_beat_lock, get_redis
from redis.exceptions import LockError

from htdask.settings import load
from htdask.state import connect, redact
from htdask.state.connection import check_eviction_or_exit, eviction_checked

log = logging.getLogger(__name__)

#: longest seconds between two ticks (each renews the lock; a standby tries to take it this long per tick)
MAX_LOOP_INTERVAL = 5
#: seconds between a standby's tries of the lock within one tick
LOCK_POLL = 1.0
#: first pause after a Redis error (doubling up to MAX_LOOP_INTERVAL)
FIRST_BACKOFF = 0.5
#: what an unreachable (or failing-over, or still loading) Redis raises
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)

# RedBeat takes the lock once, in a `beat_init` receiver that swallows a Redis error into a beat that dies at its
# first tick; our scheduler takes the lock in `tick` instead.
beat_init.disconnect(acquire_distributed_beat_lock)


class Scheduler(RedBeatScheduler):
    """RedBeat's scheduler on our own Redis client (`state.connect`, the one place Redis clients are made,
    Sentinel included: `redbeat.schedulers.get_redis` uses an app's `redbeat_redis` when it has one), riding
    through Redis outages (module docstring)."""

    def __init__(self, app, *args, **kwargs):
        if getattr(app, "redbeat_redis", None) is None:
            app.redbeat_redis = connect(load().redis_url)
        self._installed = False  # static entries written since this beat took the lock
        self._down_since: float | None = None  # monotonic start of the current outage
        self._backoff = 0.0
        super().__init__(app, *args, **kwargs)  # calls setup_schedule

    def setup_schedule(self):
        """At start (celery's Scheduler.__init__): install the static entries now if Redis answers; when it does
        not, the beat starts anyway and installs them once it holds the lock."""
        try:
            self._install()
        except REDIS_DOWN as exc:
            self._outage(exc)

    def _install(self):
        if not eviction_checked():  # Redis was down when beat started (tasks/celeryconfig.py)
            check_eviction_or_exit("htdask beat", get_redis(self.app))
        super().setup_schedule()
        self._installed = True

    def tick(self, min=min, **kwargs):
        try:
            if not self._lead():
                interval = 0.1  # a standby: the next tick tries the lock again at once
            else:
                if not self._installed:
                    self._install()
                interval = super().tick(min=min, **kwargs)  # extends the lock, sends what is due
        except REDIS_DOWN as exc:
            return self._outage(exc)
        except LockError as exc:  # lost between our extend and RedBeat's: stand by
            self._lost(exc)
            return 0.1
        self._recovered()
        return interval

    def _lead(self) -> bool:
        """True while this beat holds the lock (extended now); a standby tries to take it. Raises REDIS_DOWN."""
        if not self.lock_key:
            return True
        if self.lock is not None:
            try:
                self.lock.extend(int(self.lock_timeout))
                return True
            except LockError as exc:
                self._lost(exc)
        lock = get_redis(self.app).lock(self.lock_key, timeout=self.lock_timeout, sleep=LOCK_POLL)
        lock.lua_extend = get_redis(self.app).register_script(LUA_EXTEND_TO_SCRIPT)  # extend *to* the timeout
        if not lock.acquire(blocking=True, blocking_timeout=self.max_interval):
            return False
        log.info("beat: Acquired lock %s: this beat sends", self.lock_key)
        self.lock, self._installed = lock, False
        return True

    def _lost(self, exc) -> None:
        log.warning("beat: lost the lock %s (%s; it expired while Redis was away or this beat stalled): "
                    "standing by", self.lock_key, exc)
        self.lock, self._installed = None, False

    def _outage(self, exc) -> float:
        """Seconds until the next try; one warning per outage."""
        if self._down_since is None:
            self._down_since, self._backoff = time.monotonic(), FIRST_BACKOFF
            log.warning("beat: Redis unreachable (%s): sending nothing until it answers, retrying with backoff "
                        "up to %ss", exc, self.max_interval)
        else:
            self._backoff = min(self._backoff * 2, self.max_interval)
        return self._backoff

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.warning("beat: Redis answers again after %.0fs", time.monotonic() - self._down_since)
            self._down_since = None

    def close(self):
        try:
            super().close()  # releases the lock if this beat holds it
        except (*REDIS_DOWN, LockError) as exc:
            log.info("beat: lock not released (%s): it expires within %ss", exc, self.lock_timeout)
            self.lock = None

    @property
    def info(self) -> str:
        """The start banner's lines: REDIS_URL with its passwords masked by our own parser (RedBeat's, from
        kombu, cannot read a list of sentinels, `sentinel://h:1;sentinel://h:2`, and beat died at start)."""
        lines = [f"       . redis -> {redact(load().redis_url)}"]
        if self.lock_key:
            lines.append(f"       . lock -> `{self.lock_key}` ({self.lock_timeout}s)")
        return "\n".join(lines)
