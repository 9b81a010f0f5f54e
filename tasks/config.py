"""Settings of the Celery side, read from the environment (documented in the README).

Read once per process through `settings()`; tests that change the environment call
`settings.cache_clear()`.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from state.connection import settings_from_env
from workers.jobstatus import HOLD_CODE_USER_REQUEST


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw.strip() else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


@dataclass(frozen=True)
class Settings:
    redis_url: str
    #: queue of this submit node's worker, and the schedd of clusters that name none
    schedd_name: str
    #: schedd queues beat polls (comma-separated `SCHEDDS`; default: just SCHEDD_NAME)
    schedds: tuple[str, ...]
    #: Unix user the jobs of clusters without an owner run as (default: the worker's own user, never root)
    default_owner: str | None
    #: seconds between beat polls
    poll_interval: float
    #: largest worker count one cluster may ask for
    max_workers_per_cluster: int
    #: most idle (queued) jobs one cluster may have at once; 0 = no cap
    max_idle_per_cluster: int
    #: minimum seconds between two schedd calls to the same schedd (all workers together)
    schedd_min_interval: float
    #: seconds a condor_* command may run before it is killed
    condor_timeout: float
    #: seconds a lock (cluster, batch round, poll) outlives a holder that died: its holder renews it every
    #: LOCK_TTL/3 s while it works (state/locks.py), so this bounds the delay a killed holder causes
    lock_ttl: float
    #: times a held job is released before it is removed and replaced
    hold_release_limit: int
    #: held jobs of one cluster replaced since its last request before the controller stops replacing
    #: (and reports the hold reason as the cluster's error): a job that cannot start is not resubmitted forever
    hold_replace_limit: int
    #: hold reason codes never released (replaced at once): 34 = over memory is released with the same
    #: request and would fail again only if the job really needs more; sites tune this list
    hold_no_release_codes: tuple[int, ...]
    #: hold reason codes of holds a person made (1 = condor_hold, always; plus HOLD_KEEP_CODES): such a
    #: job is never released or replaced, only shown; the hold policy acts on holds the system caused
    hold_keep_codes: tuple[int, ...]
    #: attempts of a schedd query inside one poll before the poll is given up (summaries kept, stale)
    poll_query_attempts: int
    #: retries of a scale/reconcile task on schedd errors (exponential backoff, capped)
    task_max_retries: int
    retry_backoff_max: int
    #: seconds a cluster in error is left alone by the poller's drift reconciles (a new request always acts)
    error_retry_interval: float
    #: crash loops (tasks/ended.py): this many workers exiting on their own within the window (s) ...
    crash_loop_jobs: int
    crash_loop_window: float
    #: ... delay the next submission by base x 2^(exits beyond the limit) seconds after the last exit, capped
    crash_backoff_base: float
    crash_backoff_max: float
    #: seconds a scale-down waits for the Dask scheduler to retire running workers before removing their
    #: jobs anyway (0: no retirement)
    retire_timeout: float
    #: directory of the worker jobs' logs: <LOG_DIR>/<cluster>/<cluster>-<index>.out|.err, <cluster>.log
    log_dir: str
    #: hard time limit of every task; the broker's visibility timeout is far above it
    task_time_limit: int
    visibility_timeout: int

    @property
    def lock_timeout(self) -> float:
        """Seconds a delete waits for a cluster's lock, and a queued batched round may wait in the queue
        before the poll replaces it: the longest schedd calls a holder makes, with margin."""
        return self.condor_timeout * 2 + 30


def poll_queue(schedd: str) -> str:
    """The queue of a schedd's polls (`<schedd>.poll`): consumed by that schedd's worker next to its own
    queue (tasks/app.py), so polls never wait behind, nor bury in Flower, a burst of scale tasks."""
    return f"{schedd}.poll"


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    schedd = os.environ.get("SCHEDD_NAME", "local") or "local"
    schedds = tuple(s.strip() for s in os.environ.get("SCHEDDS", schedd).split(",") if s.strip())
    time_limit = _int("TASK_TIME_LIMIT", 300)
    return Settings(
        redis_url=settings_from_env()["url"],
        schedd_name=schedd,
        schedds=schedds or (schedd,),
        default_owner=os.environ.get("DEFAULT_OWNER") or None,
        poll_interval=_float("POLL_INTERVAL", 15.0),
        max_workers_per_cluster=_int("MAX_WORKERS_PER_CLUSTER", 1000),
        max_idle_per_cluster=_int("MAX_IDLE_PER_CLUSTER", 0),
        schedd_min_interval=_float("SCHEDD_MIN_INTERVAL", 0.1),
        condor_timeout=_float("CONDOR_TIMEOUT", 60.0),
        lock_ttl=_float("LOCK_TTL", 10.0),
        hold_release_limit=_int("HOLD_RELEASE_LIMIT", 2),
        hold_replace_limit=_int("HOLD_REPLACE_LIMIT", 10),
        hold_no_release_codes=tuple(int(c) for c in os.environ.get("HOLD_NO_RELEASE_CODES", "").split(",")
                                    if c.strip()),
        hold_keep_codes=tuple(sorted({HOLD_CODE_USER_REQUEST} | {
            int(c) for c in os.environ.get("HOLD_KEEP_CODES", "").split(",") if c.strip()})),
        poll_query_attempts=_int("POLL_QUERY_ATTEMPTS", 3),
        task_max_retries=_int("TASK_MAX_RETRIES", 6),
        retry_backoff_max=_int("RETRY_BACKOFF_MAX", 60),
        error_retry_interval=_float("ERROR_RETRY_INTERVAL", 300.0),
        crash_loop_jobs=_int("CRASH_LOOP_JOBS", 4),
        crash_loop_window=_float("CRASH_LOOP_WINDOW", 120.0),
        crash_backoff_base=_float("CRASH_BACKOFF_BASE", 10.0),
        crash_backoff_max=_float("CRASH_BACKOFF_MAX", 600.0),
        log_dir=os.environ.get("LOG_DIR", "").strip() or "/var/tmp/htdask-logs",
        retire_timeout=_float("RETIRE_TIMEOUT", 60.0),
        task_time_limit=time_limit,
        visibility_timeout=_int("VISIBILITY_TIMEOUT", max(3600, time_limit * 4)),
    )
