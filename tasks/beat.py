"""Beat runs celery-redbeat's scheduler: one active beat, however many are started.

Two `celery beat` processes started by mistake would otherwise send every periodic task twice
(celery #2856). RedBeat keeps the schedule's state in Redis (under `state.keys.redbeat_prefix()`) and sends
only while it holds its Redis lock: the active beat extends the lock on every tick (at least every
`MAX_LOOP_INTERVAL` s); another beat blocks at start until the lock is free, so it takes over within
`LOCK_TIMEOUT` s after the active beat died. The schedule itself stays in beat_schedule.py (RedBeat
installs the app's `beat_schedule` as its static entries, dropping entries no longer there).
"""
from __future__ import annotations

from state import connect, keys

#: seconds a dead beat's lock outlives it (ticks renew it far more often)
LOCK_TIMEOUT = 30
#: longest seconds between two ticks (each renews the lock; a standby beat retries this often)
MAX_LOOP_INTERVAL = 5


def configure(app, redis_url: str) -> None:
    """Make `app`'s beat use RedBeat on `redis_url`, with our key prefix and lock timing.

    RedBeat is given our own client (`state.connect`, the one place Redis clients are made; it connects
    lazily) rather than building one from the URL itself.
    """
    app.redbeat_redis = connect(redis_url)  # redbeat.schedulers.get_redis uses an app's client if it has one
    app.conf.update(
        beat_scheduler="redbeat.RedBeatScheduler",
        beat_max_loop_interval=MAX_LOOP_INTERVAL,
        redbeat_redis_url=redis_url,
        redbeat_key_prefix=keys.redbeat_prefix(),
        redbeat_lock_timeout=LOCK_TIMEOUT,
    )
