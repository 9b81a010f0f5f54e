"""Beat runs celery-redbeat's scheduler: one active beat, however many are started.

Two `celery beat` processes started by mistake would otherwise send every periodic task twice
(celery #2856). RedBeat keeps the schedule's state in Redis (under `state.keys.redbeat_prefix()`) and sends
only while it holds its Redis lock: the active beat extends the lock on every tick (at least every
`MAX_LOOP_INTERVAL` s); another beat blocks at start until the lock is free, so it takes over within
BEAT_LOCK_TIMEOUT s after the active beat died. The schedule itself stays in beat_schedule.py (RedBeat
installs the app's `beat_schedule` as its static entries, dropping entries no longer there).
"""
from __future__ import annotations

from redbeat import RedBeatScheduler

from settings import load
from state import connect, redact

#: longest seconds between two ticks (each renews the lock; a standby beat retries this often)
MAX_LOOP_INTERVAL = 5


class Scheduler(RedBeatScheduler):
    """RedBeat's scheduler on our own Redis client (`state.connect`, the one place Redis clients are
    made, Sentinel included) rather than one it builds from the URL: `redbeat.schedulers.get_redis` uses
    an app's `redbeat_redis` when it has one, so it is set before RedBeat first asks for it."""

    def __init__(self, app, *args, **kwargs):
        if getattr(app, "redbeat_redis", None) is None:
            app.redbeat_redis = connect(load().redis_url)
        super().__init__(app, *args, **kwargs)

    @property
    def info(self) -> str:
        """The start banner's lines: REDIS_URL with its passwords masked by our own parser (RedBeat's, from
        kombu, cannot read a list of sentinels, `sentinel://h:1;sentinel://h:2`, and beat died at start)."""
        lines = [f"       . redis -> {redact(load().redis_url)}"]
        if self.lock_key:
            lines.append(f"       . lock -> `{self.lock_key}` ({self.lock_timeout}s)")
        return "\n".join(lines)
