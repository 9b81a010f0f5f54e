"""The settings model: every setting of htdask, with its environment variable, type, default, unit and
meaning, validated once when a process starts (settings.load()).

Sections (nested models): `identity` (owner look-up), `gateway` (the Dask Gateway server) and `operator`
(the Kubernetes operator). The top level holds what the Celery side (workers, beat), the CLI, the state
store and the submit-node code share.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from htdask.settings.base import (Codes, Count, Flag, Names, NonNegativeSeconds, PositiveSeconds, Seconds, Section,
                           WholeSeconds, setting)
from htdask.settings.quota import QuotaSettings
from htdask.settings.sections import GatewaySettings, IdentitySettings, OperatorSettings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_IMAGE = "ghcr.io/dask/dask:latest"
#: the broker's visibility timeout is at least this many task time limits (README; see the rule below)
VISIBILITY_FACTOR = 4


class Settings(Section):
    """All settings. Attributes keep the names the code used before; `env` of each field is its variable."""

    # --- where things are ---------------------------------------------------------------------------------
    redis_url: str = setting(
        DEFAULT_REDIS_URL, env="REDIS_URL",
        meaning="broker, result backend and state store: `redis://[:password@]host:port/db`, or Redis Sentinel "
                "as `sentinel://[:password@]host:26379;sentinel://host2:26379/db` (see \"Redis that fails over\")")
    redis_sentinel_master: str | None = setting(env="REDIS_SENTINEL_MASTER", shown_default="`mymaster`",
                                                meaning="with a `sentinel://` REDIS_URL: the name of the master "
                                                        "the sentinels monitor")
    redis_password: str | None = setting(env="REDIS_PASSWORD",
                                         meaning="the Redis server's (master's) password when REDIS_URL carries none")
    redis_sentinel_password: str | None = setting(env="REDIS_SENTINEL_PASSWORD",
                                                  meaning="the sentinels' own `requirepass`, when they have one")
    redis_allow_eviction: Flag = setting(
        False, env="REDIS_ALLOW_EVICTION",
        meaning="1: run on a Redis whose `maxmemory-policy` is not `noeviction` (it may evict tombstones, locks, "
                "heartbeats), with a warning in every process's log and on the status page; 0: refuse to start")
    state_prefix: str = setting("htdask", env="STATE_PREFIX", min_length=1,
                                meaning="prefix of every Redis key (two controllers may share one Redis)")
    schedd_name: str = setting("local", env="SCHEDD_NAME", min_length=1,
                               meaning="queue this submit node's worker consumes; the schedd of clusters that "
                                       "name none")
    schedds: Names = setting((), env="SCHEDDS", shown_default="`SCHEDD_NAME`",
                             meaning="comma-separated schedd queues beat polls")
    condor_backend: Literal["cli", "bindings"] = setting("cli", env="CONDOR_BACKEND",
                                                         meaning="`cli` (condor_* programs) or `bindings` "
                                                                 "(htcondor2)")
    condor_bin_dir: str | None = setting(env="CONDOR_BIN_DIR", shown_default="`PATH`",
                                         meaning="where the condor_* programs are")
    log_dir: str = setting("/var/tmp/htdask-logs", env="LOG_DIR",
                           meaning="directory of the worker jobs' output, error and event logs (one subdirectory "
                                   "per cluster)")

    spool_dir: str = setting("/var/tmp/htdask-spool", env="SPOOL_DIR",
                             meaning="submit-node directory of what jobs get by HTCondor's file transfer: one "
                                     "subdirectory per cluster only its jobs' owner (and root) can read (TLS "
                                     "files, the gateway API token), and the worker start script")

    # --- whose jobs -----------------------------------------------------------------------------------------
    default_owner: str | None = setting(env="DEFAULT_OWNER", shown_default="the worker's own user",
                                        meaning="Unix user jobs of clusters without an owner run as (never root)")
    min_submit_uid: int = setting(1000, env="MIN_SUBMIT_UID",
                                  meaning="lowest uid jobs may run as (root is refused whatever the value)")
    deny_users: Names = setting((), env="DENY_USERS",
                                meaning="comma-separated users never submitted as (root and nobody always)")

    # --- worker jobs ----------------------------------------------------------------------------------------
    dask_scheduler_address: str = setting("", env="DASK_SCHEDULER_ADDRESS",
                                          meaning="scheduler address of clusters scaled without `--scheduler`")
    dask_worker_command: str | None = setting(
        env="DASK_WORKER_COMMAND", shown_default="`python -m distributed.cli.dask_worker`",
        meaning="the worker command (shell words)")
    dask_worker_image: str = setting(DEFAULT_IMAGE, env="DASK_WORKER_IMAGE",
                                     meaning="image of docker-universe workers")
    worker_python: str | None = setting(
        env="WORKER_PYTHON", shown_default="the submit node's interpreter (`htdask/domain/pyenv.py`)",
        meaning="interpreter vanilla-universe workers run on the execute hosts (a path they have, e.g. on "
                "CVMFS); ignored with DASK_WORKER_COMMAND or a packed environment")
    worker_packed_env: str | None = setting(
        env="WORKER_PACKED_ENV",
        meaning="a packed Python environment (`.tar.gz` of conda-pack / venv-pack, on the submit node) shipped "
                "to every vanilla-universe worker by file transfer and run from there")
    allowed_image_prefixes: Names = setting(
        (), env="ALLOWED_IMAGE_PREFIXES", shown_default="none: no Apptainer image allowed",
        meaning="comma-separated prefixes an Apptainer image (`container_image`) must start with, e.g. "
                "`/cvmfs/unpacked.cern.ch/`")
    apptainer_attribute: bool = setting(
        False, env="APPTAINER_AS_ATTRIBUTE",
        meaning="give Apptainer images as `+SingularityImage` in the vanilla universe (as OSG sites do) "
                "instead of the container universe's `container_image`")
    max_workers_per_cluster: int = setting(1000, env="MAX_WORKERS_PER_CLUSTER", ge=0, le=10**9,
                                           meaning="largest worker count a cluster may ask for")
    max_idle_per_cluster: Count = setting(0, env="MAX_IDLE_PER_CLUSTER",
                                          meaning="most idle (queued) jobs per cluster; the rest is submitted as "
                                                  "they start; 0 = no cap")
    idle_timeout: NonNegativeSeconds = setting(
        0.0, env="IDLE_TIMEOUT",
        meaning="site default idle timeout: a cluster whose Dask scheduler had no task processing for this long "
                "is deleted (`scale --idle-timeout`, gateway option `idle_timeout`, DaskCluster "
                "`config.idle_timeout` override it); 0 = none")
    idle_timeout_max: NonNegativeSeconds = setting(
        0.0, env="IDLE_TIMEOUT_MAX",
        meaning="largest idle timeout a cluster may ask for (a larger one, or none, is refused where the request "
                "enters); 0 = no maximum")
    max_lifetime: NonNegativeSeconds = setting(
        0.0, env="MAX_LIFETIME",
        meaning="site default maximum lifetime: a cluster this long after its first request is deleted "
                "(`scale --max-lifetime`, gateway option `max_lifetime`, DaskCluster `config.max_lifetime` "
                "override it); 0 = none")
    max_lifetime_max: NonNegativeSeconds = setting(
        0.0, env="MAX_LIFETIME_MAX",
        meaning="largest maximum lifetime a cluster may ask for (a larger one, or none, is refused where the "
                "request enters); 0 = no maximum")

    # --- timing ---------------------------------------------------------------------------------------------
    poll_interval: PositiveSeconds = setting(15.0, env="POLL_INTERVAL", meaning="time between beat polls")
    schedd_min_interval: NonNegativeSeconds = setting(
        0.1, env="SCHEDD_MIN_INTERVAL", meaning="least time between two calls to one schedd (all workers together)")
    condor_timeout: PositiveSeconds = setting(60.0, env="CONDOR_TIMEOUT", le=7 * 86400,
                                              meaning="time before a condor_* command is killed")
    lock_ttl: Seconds = setting(10.0, env="LOCK_TTL", ge=1, le=3600,
                                meaning="time a cluster/batch/poll lock outlives a holder that died (its holder "
                                        "renews it every `LOCK_TTL`/3 s while it works, htdask/state/locks.py)")
    beat_lock_timeout: WholeSeconds = setting(
        30, env="BEAT_LOCK_TIMEOUT", ge=10, le=3600,
        meaning="time a dead beat's lock outlives it: a standby beat takes over within it (celery-redbeat's "
                "lock; the active beat renews it at least every 5 s)")
    poll_query_attempts: int = setting(3, env="POLL_QUERY_ATTEMPTS", ge=1,
                                       meaning="condor_q attempts within one poll (backoff 0.5 s, 1 s, …)")
    task_max_retries: Count = setting(6, env="TASK_MAX_RETRIES",
                                      meaning="retries of a task on schedd/Redis errors")
    retry_backoff_max: WholeSeconds = setting(60, env="RETRY_BACKOFF_MAX", ge=1,
                                              meaning="cap of a task's exponential retry backoff")
    task_time_limit: WholeSeconds = setting(300, env="TASK_TIME_LIMIT", ge=1,
                                            meaning="hard time limit of every task (soft limit 30 s earlier)")
    visibility_timeout: WholeSeconds | None = setting(
        env="VISIBILITY_TIMEOUT", gt=0, shown_default="`3600` (at least 4 × `TASK_TIME_LIMIT`)",
        meaning="broker visibility timeout; must be ≥ 4 × `TASK_TIME_LIMIT` so a running task is never "
                "delivered twice")
    error_retry_interval: NonNegativeSeconds = setting(
        300.0, env="ERROR_RETRY_INTERVAL",
        meaning="time the poller leaves a cluster in error alone (a new request always acts)")
    retire_timeout: NonNegativeSeconds = setting(
        60.0, env="RETIRE_TIMEOUT",
        meaning="time a scale-down waits for the Dask scheduler to retire running workers (0: no retirement)")
    tombstone_ttl: WholeSeconds = setting(30 * 86400, env="TOMBSTONE_TTL", gt=0,
                                          meaning="how long a deleted cluster's tombstone lives (30 days)")

    # --- held jobs and crash loops --------------------------------------------------------------------------
    hold_release_limit: Count = setting(2, env="HOLD_RELEASE_LIMIT",
                                        meaning="times a held job is released before it is removed and replaced")
    hold_replace_limit: Count = setting(10, env="HOLD_REPLACE_LIMIT",
                                        meaning="held jobs replaced per cluster and request before the controller "
                                                "stops and reports the hold reason")
    hold_no_release_codes: Codes = setting(
        (), env="HOLD_NO_RELEASE_CODES", meaning="comma-separated HoldReasonCodes replaced at once, never released")
    hold_keep_codes: Codes = setting(
        (), env="HOLD_KEEP_CODES", shown_default="`1` only",
        meaning="HoldReasonCodes (besides 1, `condor_hold`) of holds a person made: never released or replaced")
    crash_loop_jobs: int = setting(4, env="CRASH_LOOP_JOBS", ge=1,
                                   meaning="workers exiting on their own within `CRASH_LOOP_WINDOW` that make a "
                                           "crash loop")
    crash_loop_window: PositiveSeconds = setting(120.0, env="CRASH_LOOP_WINDOW",
                                                 meaning="window of a crash loop")
    crash_backoff_base: NonNegativeSeconds = setting(
        10.0, env="CRASH_BACKOFF_BASE", meaning="first delay of the next submission in a crash loop (doubling)")
    crash_backoff_max: NonNegativeSeconds = setting(600.0, env="CRASH_BACKOFF_MAX",
                                                    meaning="cap of the crash-loop delay")

    @property
    def limit_defaults(self) -> dict[str, float]:
        """The site's idle and lifetime limits of clusters that give none (htdask.domain.limits)."""
        return {"idle_timeout": self.idle_timeout, "max_lifetime": self.max_lifetime}

    @property
    def limit_maxima(self) -> dict[str, float]:
        """The largest idle and lifetime limits a cluster may ask for (0: no maximum)."""
        return {"idle_timeout": self.idle_timeout_max, "max_lifetime": self.max_lifetime_max}

    # --- sections -------------------------------------------------------------------------------------------
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    quota: QuotaSettings = Field(default_factory=QuotaSettings)

    @field_validator("redis_url", "log_dir", "spool_dir", "dask_worker_image", mode="before")
    @classmethod
    def _stripped(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _derived_and_cross_field(self) -> "Settings":
        # Derived defaults (the model is frozen: set through __dict__, once, while validating).
        if not self.schedds:
            self.__dict__["schedds"] = (self.schedd_name,)
        # (HoldReasonCode 1, condor_hold, is always kept besides these: htdask.domain.jobstatus.kept_hold)
        self.__dict__["hold_keep_codes"] = tuple(sorted(set(self.hold_keep_codes)))
        self.__dict__["min_submit_uid"] = max(self.min_submit_uid, 1)  # root never, whatever the setting
        limit = self.task_time_limit
        if self.visibility_timeout is None:
            self.__dict__["visibility_timeout"] = max(3600, limit * VISIBILITY_FACTOR)
        elif self.visibility_timeout < limit * VISIBILITY_FACTOR:
            # Redis re-delivers an unacknowledged task after the visibility timeout: below a few task
            # limits a task still running (or retrying) would run twice (Celery's Redis transport docs).
            raise ValueError(f"VISIBILITY_TIMEOUT={self.visibility_timeout} must be at least "
                             f"{VISIBILITY_FACTOR} × TASK_TIME_LIMIT ({limit * VISIBILITY_FACTOR}) s")
        if self.condor_timeout >= limit:
            # A task holds a cluster's lock around a condor_* call: the call must end (or be killed) before
            # the task's hard limit kills the task, or the lock outlives its holder until it expires.
            raise ValueError(f"CONDOR_TIMEOUT={self.condor_timeout:g} must be below TASK_TIME_LIMIT={limit} s")
        if self.lock_timeout > self.visibility_timeout:
            raise ValueError(f"CONDOR_TIMEOUT={self.condor_timeout:g}: the lock timeout "
                             f"({self.lock_timeout:g} s = 2 × CONDOR_TIMEOUT + 30) must not exceed "
                             f"VISIBILITY_TIMEOUT={self.visibility_timeout} s")
        if self.crash_backoff_max < self.crash_backoff_base:
            raise ValueError(f"CRASH_BACKOFF_MAX={self.crash_backoff_max:g} must be at least "
                             f"CRASH_BACKOFF_BASE={self.crash_backoff_base:g}")
        for kind, default, maximum in (("IDLE_TIMEOUT", self.idle_timeout, self.idle_timeout_max),
                                       ("MAX_LIFETIME", self.max_lifetime, self.max_lifetime_max)):
            if maximum and not 0 < default <= maximum:
                raise ValueError(f"{kind}={default:g} must be above 0 and at most {kind}_MAX={maximum:g}")
        if "resync_seconds" not in self.operator.model_fields_set:
            self.operator.__dict__["resync_seconds"] = self.poll_interval
        self.operator.__dict__["max_workers"] = self.max_workers_per_cluster
        self.operator.__dict__["limit_maxima"] = self.limit_maxima
        return self

    @property
    def lock_timeout(self) -> float:
        """Seconds a delete waits for a cluster's lock, and a queued batched round may wait in the queue
        before the poll replaces it: the longest schedd calls a holder makes, with margin
        (2 × CONDOR_TIMEOUT + 30 s). Locks themselves are leases of `lock_ttl` (htdask/state/locks.py)."""
        return self.condor_timeout * 2 + 30
