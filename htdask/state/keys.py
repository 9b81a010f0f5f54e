r"""Every Redis key this product uses, in one place, under one prefix.

Only this module builds key names; everything else asks it. The prefix is `htdask` (override with
`STATE_PREFIX`, e.g. to run two controllers on one Redis).

| key | type | what it holds |
|---|---|---|
| `htdask:clusters` | set | names of every cluster with recorded state |
| `htdask:seq` | string (int) | request sequence: every request gets the next number when enqueued, so a stale or re-delivered request never overrides a newer one |
| `htdask:cluster:<name>` | hash | `desired`, `owner`, `schedd`, `options` (JSON of the job options), `generation` (bumped by every request), `seq` (sequence number of the newest request applied), `replaced` (held jobs replaced since that request), `created_at`, `updated_at` (when the newest request was recorded: its enqueue), `error`, `error_at` (Redis' clock), `backoff_until`/`backoff_reason`/`crash_loop_until` (a crash loop delays submissions until `backoff_until` and is shown until `crash_loop_until`, tasks/ended.py), `handled_seq` (the newest request a reconcile round has acted on; its first `condor_submit` is the one timed as request-to-submit), the cluster's own limits `idle_timeout`/`max_lifetime` (seconds, absent: the site's default), `born_at` (Redis' clock at its first request: its lifetime starts there), `idle_state` (what the last limits pass read from its scheduler), `idle_token`/`idle_seen_at` (the scheduler's idle_since and the Redis time a pass first saw it idle with it), `culled`/`culled_detail`/`culled_at`/`culled_seq` (a limit deleted it: reason, why, when, the request number it was judged at; htdask/state/limits.py) |
| `htdask:deleted:<name>` | string (int, TTL `TOMBSTONE_TTL`, default 30 days) | the tombstone of a deleted cluster: the newest request number the cluster had when its delete applied (at least the delete's own). It survives the delete so that every later message is judged against it: a scale, reconcile or delete task (retried, re-delivered, an ETA retry) carrying a number ≤ the tombstone never re-creates the cluster; a request enqueued after the delete takes a larger number and creates it anew. The TTL far exceeds any task's life (retries with backoff, the broker's visibility timeout) |
| `htdask:names:<name>` | set | named-worker clusters (gateway): the worker names wanted; `desired` is its size |
| `htdask:submitted:<name>` | set | named-worker clusters: every name already submitted once; a name whose job ended is not submitted again (the gateway replaces workers under new names) |
| `htdask:counter:<name>` | string (int) | next worker index; reserved with one `INCRBY n` per submission, only by the holder of the cluster's lease (its token checked in the same script: a fencing token) |
| `htdask:submitting:<name>` | hash | submits in flight: lease token → `first+count` of the indexes reserved, written with the reservation and cleared once that condor_submit has exited; an entry left by a holder that died or stalled mid-submit stays (that submit may still commit), and while any entry is there the counter never restarts at 0 (htdask/state/counters.py) |
| `htdask:lock:<name>` | string (PX TTL `LOCK_TTL`) | redis-py `Lock` held as a lease (htdask/state/locks.py) while a reconcile or delete works on the cluster: a random token, renewed every TTL/3 by the holder's watchdog thread, so a holder that died anywhere frees it within `LOCK_TTL` seconds |
| `htdask:summary:<name>` | hash | written by the poller: a count per JobStatus (`idle`, `running`, `removed`, `completed`, `held`, `transferring_output`, `suspended`: htdask/domain/jobstatus.py), `owner` (the Unix user the jobs run as: their Owner), `unmatched` (JSON: LastRejMatchReason → idle jobs no slot matched), `scheduler` (JSON: the cluster's Dask scheduler at the last poll: `address`, `running`, `connected`, `not_connected` [[job id, worker name, since]], `error`), `ended` (JSON: how the jobs that left the queue ended, htdask/domain/jobend.py kind → jobs), `held_reasons` (JSON), `held_kept` (JSON: the hold reasons of those held by a person, HoldReasonCode 1 or HOLD_KEEP_CODES, left alone), `held_codes` (JSON: HoldReasonCode → jobs, `unknown` for none), `max_index`, `polled_at`; `completed`/`removed` include `ended_completed`/`ended_removed`, the jobs that left the queue since the cluster was first polled (from the history); `jobs_digest` fingerprints the job records, which are rewritten only when it changes |
| `htdask:jobs:<name>` | hash | written by the poller: job id `C.P` → JSON job record (name, index, status, since, hold reason, exit code) |
| `htdask:ended:<name>` | hash (TTL 1 day, refreshed) | written by the poller from `condor_history`: job id `C.P` → JSON record of a job that left the queue (name, index, JobStatus, exit code, exit signal, removal reason, `ended_at`); each job recorded once. Crash loops are judged from it (tasks/ended.py) |
| `htdask:holds:<name>` | hash | job name → times the held-job policy released it |
| `htdask:retiring:<name>` | hash | job id `C.P` → `<token> <deadline ms>`: running workers a scale-down is retiring through their Dask scheduler (htdask/state/retiring.py); a reconcile does not count them, the retirement removes them unless the deadline (Redis's clock) passed |
| `htdask:poll:<schedd>` | hash | poller status of one schedd: `polled_at`, `ok_at` (Redis' clock, `TIME`), `ok_at_local` (the same moment by the submit node's clock: the schedd's, for job ads' times and crash-loop backoff), `error`, `failures` (in a row), `failures_total` (never reset), `duration` (seconds of the last successful poll), `unparsed` (job ads of the last poll skipped: no integer ClusterId/ProcId/JobStatus), `degraded` (ads kept with bytes repaired or odd attributes ignored) |
| `htdask:metrics:<schedd>` | hash | bounded counters of the schedd's command durations and failures and of request-to-submit delays, written by the submit-node worker for the exporter (fields: `htdask/state/metrics.py`) |
| `htdask:polllock:<schedd>` | string (PX TTL `LOCK_TTL`) | lease (as for cluster locks) so two polls of one schedd never run at once |
| `htdask:pending:<schedd>` | set | clusters waiting for the schedd's next batched reconcile |
| `htdask:batchlock:<schedd>` | string (PX TTL `LOCK_TTL`) | lease (as for cluster locks) held by the one task running a round of the schedd's batched reconciles; its token is that task's Celery id (htdask/state/rounds.py) |
| `htdask:roundqueued:<schedd>` | string (PX TTL) | the Celery id of the `reconcile_pending` task that runs the schedd's next round: `r:<id>` from when a round takes its batch (TTL the lock timeout, 2 × `CONDOR_TIMEOUT` + 30 s), honoured only while the batch lock exists (a dead round's mark counts for nothing); `<id>` once the round ended and sent that task (TTL `LOCK_TTL`, the time it has to start). Requests arriving meanwhile leave their cluster to it (`handled_by`). The task clears it and takes the batch lock anew; a lost task lets it expire, and the next request or poll takes the lock |
| `htdask:roundwatch:<schedd>` | string (PX TTL: the batch lock's remaining life + 1 s) | set while a watch `reconcile_pending` task is due: armed by the first request that finds the batch lock held and no round queued, due when that lock would expire unrenewed, so a dead holder delays the waiting clusters by at most `LOCK_TTL` (htdask/state/locks.py) |
| `htdask:redbeat:*` | (celery-redbeat) | beat's schedule state and its single-instance lock `htdask:redbeat::lock` (tasks/beat.py) |
| `htdask:throttle:<schedd>` | string (PX TTL) | present while the schedd's minimum call interval has not passed |
| `htdask:consumers:<queue>` | sorted set (TTL) | the Celery workers consuming a schedd queue: worker hostname → time of its last heartbeat by Redis' clock (`TIME`, every `tasks.heartbeat.INTERVAL` s); a queue none beat for recently is consumed by nobody (`status`, `scale --wait`, `delete --force`) |
| `htdask:identity:<email>` | string (TTL) | cached e-mail → Unix user look-up |
| `htdask:quota:<owner>` | hash | use of one owner's quota (htdask/state/quota.py): cluster name → `<workers> <cores> <memory MiB> <gpus>` (its desired workers and each worker's request_cpus, request_memory, request_gpus), written only by the script that records a request and by the delete that forgets the cluster; the cluster's hash names its quota owner (`q_owner`) and per-worker use (`q_cost`), and a request cut down by a quota (QUOTA_MODE=grant) leaves `quota_note` there (a refused one writes nothing) |
| `htdask:quotaowners` | set | owners with an entry in `htdask:quota:<owner>` (status, the status page, metrics) |
| `htdask:culled` | hash | clusters the idle/lifetime limits deleted (htdask/state/limits.py): name → JSON `{reason, detail, at, schedd, owner, seq}` (`reason` `idle` or `lifetime`, `at` Redis' clock); entries older than a day are dropped when read |
| `htdask:culls` | hash | clusters deleted by a limit, ever: `<reason>\|<schedd>` (reason `idle`, `lifetime`) → count (`htdask_clusters_culled_total`) |
| `htdask:manager:<name>` | hash | clusters another entry point manages: `kind` (`gateway`, `operator`), `user` (the gateway user / the resource); the CLI refuses to scale them without `--force` |
"""
from __future__ import annotations

from collections.abc import Callable

from htdask.settings import load


def prefix() -> str:
    """STATE_PREFIX of this process's settings (read when a key is first built, not at import)."""
    return load().state_prefix


def tombstone_ttl() -> int:
    """Seconds a deleted cluster's tombstone lives (TOMBSTONE_TTL); far above any task's retries and
    the broker's visibility timeout, so no message older than a delete outlives it."""
    return load().tombstone_ttl


def clusters() -> str:
    return f"{prefix()}:clusters"


def seq() -> str:
    return f"{prefix()}:seq"


def culled() -> str:
    return f"{prefix()}:culled"


def culls() -> str:
    return f"{prefix()}:culls"


def redbeat_prefix() -> str:
    """The key prefix of celery-redbeat's keys (its schedule entries and its lock)."""
    return f"{prefix()}:redbeat:"


def _keyed(kind: str, of: str) -> Callable[[str], str]:
    """The builder of `<prefix>:<kind>:<of>` keys (`of`: what the key is per, a cluster name or a schedd)."""
    def key(value: str) -> str:
        return f"{prefix()}:{kind}:{value}"
    key.__doc__ = f"`<prefix>:{kind}:<{of}>` (see the table above)."
    return key


# Per cluster (the argument is the cluster name).
cluster = _keyed("cluster", "name")
tombstone = _keyed("deleted", "name")
names = _keyed("names", "name")
submitted = _keyed("submitted", "name")
counter = _keyed("counter", "name")
submitting = _keyed("submitting", "name")
lock = _keyed("lock", "name")
summary = _keyed("summary", "name")
jobs = _keyed("jobs", "name")
ended = _keyed("ended", "name")
holds = _keyed("holds", "name")
retiring = _keyed("retiring", "name")
manager = _keyed("manager", "name")

# Per schedd (the argument is the schedd's queue name).
poll = _keyed("poll", "schedd")
metrics = _keyed("metrics", "schedd")
poll_lock = _keyed("polllock", "schedd")
pending = _keyed("pending", "schedd")
batch_lock = _keyed("batchlock", "schedd")
round_queued = _keyed("roundqueued", "schedd")
round_watch = _keyed("roundwatch", "schedd")
throttle = _keyed("throttle", "schedd")
consumers = _keyed("consumers", "queue")


def quota_prefix() -> str:
    """The prefix of `<prefix>:quota:<owner>` (the record script builds the owner's key from it)."""
    return f"{prefix()}:quota:"


def quota(owner: str) -> str:
    return f"{quota_prefix()}{owner}"


def quota_owners() -> str:
    return f"{prefix()}:quotaowners"


def identity(email: str) -> str:
    return f"{prefix()}:identity:{email.lower()}"


def per_cluster(name: str) -> list[str]:
    """Every key that belongs to one cluster (deleted together when the cluster is deleted)."""
    return [cluster(name), names(name), submitted(name), counter(name), submitting(name), summary(name),
            jobs(name), holds(name), ended(name), manager(name), retiring(name)]
