"""Cluster state in Redis: desired counts, name counters, locks, poll summaries.

The store is the only code that reads or writes our keys (their layout is documented in `state.keys`).
Values are plain strings and JSON so that any Redis client (Flower, redis-cli) can read them.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

import redis
from redis.sentinel import SentinelConnectionPool

from settings import Settings, load
from state import keys
from state.metrics import RECORDER, Recorder
from state.connection import connect

log = logging.getLogger(__name__)

#: milliseconds a request waits for a replica to hold it under Sentinel
REPLICA_WAIT_MS = 1000
#: seconds requests stop waiting after a wait no replica answered (none is connected, e.g. after a failover
#: until the old master returns as a replica): nothing could be promoted over them meanwhile
NO_REPLICA_PAUSE = 10.0

# Raise the counter to `floor` when it is lower, then reserve n indexes: one round trip, atomic.
_RESERVE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[2])
if cur < floor then redis.call('SET', KEYS[1], floor) end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""

# Record a request as the cluster's desired state unless a newer one is recorded, or the cluster was deleted
# by a request at least as new (its tombstone, KEYS[5]) (atomic, one round trip).
# ARGV[8] is the request's sequence number, or '' to take a new one. Returns {seq, 1 if recorded now or before}.
_RECORD_REQUEST = """
local seq
if ARGV[8] == '' then seq = redis.call('INCR', KEYS[1]) else seq = tonumber(ARGV[8]) end
local tomb = tonumber(redis.call('GET', KEYS[5]) or '0')
if seq <= tomb then return {seq, 0} end
local stored = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if stored >= seq then
  if stored == seq then return {seq, 1} end
  return {seq, 0}
end
redis.call('HSETNX', KEYS[2], 'created_at', ARGV[4])
redis.call('HSET', KEYS[2], 'desired', ARGV[2], 'schedd', ARGV[3], 'updated_at', ARGV[4], 'seq', seq, 'replaced', 0)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'owner', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'options', ARGV[6]) end
redis.call('HINCRBY', KEYS[2], 'generation', 1)
redis.call('SADD', KEYS[3], ARGV[1])
if ARGV[7] == '1' then
  redis.call('DEL', KEYS[4])
  for i = 9, #ARGV do redis.call('SADD', KEYS[4], ARGV[i]) end
end
return {seq, 1}
"""

# Forget a deleted cluster unless a request newer than the delete (ARGV[1]) is recorded; leave its tombstone:
# the newest request number it had (at least the delete's), so no older message re-creates it. KEYS[1] is the
# cluster's hash, KEYS[2] its tombstone, KEYS[3] the set of clusters, KEYS[4..] its other keys; returns 1 if
# forgotten, 0 if a newer request keeps it.
_DELETE_CLUSTER = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local seq = tonumber(ARGV[1])
if seq == nil then seq = stored end
if stored > seq then return 0 end
local tomb = math.max(stored, seq, tonumber(redis.call('GET', KEYS[2]) or '0'))
redis.call('SET', KEYS[2], string.format('%d', tomb), 'EX', ARGV[2])
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[3])
return 1
"""

# Set hash fields only if the hash exists (never re-create a deleted cluster's record).
_HSET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 0
"""

# Delete a lock only if it still holds the token we saw (breaking a dead holder's lock).
_BREAK_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def redis_url() -> str:
    """REDIS_URL of this process's settings."""
    return load().redis_url


def holder_token(task_id: str | None = None) -> str:
    """A lock/inflight token naming this process, so a dead holder on this host can be recognised,
    and, for a batch lock, the Celery task whose round it is (`state.rounds.holder_task`)."""
    return f"{socket.gethostname()}:{os.getpid()}:{task_id or uuid.uuid4().hex}"


def holder_is_dead(token: str | None) -> bool:
    """True when the token names a process on this host that no longer exists."""
    if not token:
        return False
    parts = token.split(":")
    if len(parts) < 2 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed process nobody reaped yet (a zombie) is dead too
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


@dataclass
class ClusterRecord:
    """What was asked of a cluster: the desired count (or names), its owner, schedd and job options."""
    name: str
    desired: int
    owner: str | None
    schedd: str
    generation: int
    seq: int = 0
    replaced: int = 0
    options: dict = field(default_factory=dict)
    names: set[str] | None = None
    error: str | None = None
    error_at: float | None = None
    created_at: float | None = None
    updated_at: float | None = None
    backoff_until: float | None = None  # a crash loop delays submissions until then (tasks/ended.py)
    backoff_reason: str | None = None
    handled_seq: int = 0


class Store:
    """Operations on our Redis keys. One instance per process is enough (redis-py pools connections)."""

    def __init__(self, client: redis.Redis | None = None, recorder: Recorder | None = None,
                 settings: Settings | None = None):
        """`settings` (TOMBSTONE_TTL, REDIS_URL when no client is given) default to this process's."""
        self.settings = settings or load()
        self.r = client or connect(self.settings.redis_url)
        #: schedd measurements of this process, written with the store's next pipeline (state.metrics)
        self.metrics = recorder or RECORDER
        self._hset_if_exists = self.r.register_script(_HSET_IF_EXISTS)
        self._reserve = self.r.register_script(_RESERVE)
        self._break = self.r.register_script(_BREAK_LOCK)
        self._record_request = self.r.register_script(_RECORD_REQUEST)
        self._delete_cluster = self.r.register_script(_DELETE_CLUSTER)
        # Under Sentinel a replica may be promoted after the master dies: a request waits until a replica
        # holds it before its caller is told it was taken (WAIT on the connection that wrote it).
        self.replicated = isinstance(self.r.connection_pool, SentinelConnectionPool)
        self._no_replica_until = 0.0

    # ---- requests -------------------------------------------------------------------------------
    def next_seq(self) -> int:
        """A request number, taken when a request is enqueued; newer requests get larger numbers."""
        return int(self.r.incr(keys.seq()))

    def record_new_request(self, name: str, desired: int, *, schedd: str, owner: str | None = None,
                           options: dict | None = None, names: list[str] | None = None) -> int:
        """Number a new request and record it as the cluster's desired state, atomically; returns its seq.

        Same fields as `record_request`; used where requests enter (tasks.api), so the task that
        follows finds its request already recorded.
        """
        wait = self.replicated and time.monotonic() >= self._no_replica_until
        return self._record(name, desired, schedd, owner, options, names, None, wait=wait)[0]

    def record_request(self, name: str, desired: int, *, schedd: str, owner: str | None = None,
                       options: dict | None = None, names: list[str] | None = None,
                       seq: int | None = None) -> bool:
        """Record the newest desired state of a cluster; False when a newer request is already there.

        Recording the same request twice (at enqueue and in the task) writes it once.

        A re-delivered or retried task carries its original `seq`, so it can never move a cluster
        back to an older request's count. Without `seq` the request counts as the newest.
        """
        return self._record(name, desired, schedd, owner, options, names, seq)[1]

    def _record(self, name, desired, schedd, owner, options, names, seq, wait=False) -> tuple[int, bool]:
        args = [name, desired, schedd, time.time(), owner or "",
                json.dumps(options, sort_keys=True) if options is not None else "",
                "1" if names is not None else "0", "" if seq is None else int(seq), *(names or [])]
        record_keys = [keys.seq(), keys.cluster(name), keys.clusters(), keys.names(name), keys.tombstone(name)]
        if not wait:
            got, applied = self._record_request(keys=record_keys, args=args)
            return int(got), bool(applied)
        pipe = self.r.pipeline(transaction=False)  # one connection: WAIT covers this write
        self._record_request(keys=record_keys, args=args, client=pipe)
        pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS)
        (got, applied), replicas = pipe.execute()
        if not int(replicas):
            self._no_replica_until = time.monotonic() + NO_REPLICA_PAUSE
            log.warning("cluster %s: request %s recorded, but no replica confirmed it within %d ms (a failover "
                        "now could lose it); not waiting for replicas for %.0f s", name, got, REPLICA_WAIT_MS,
                        NO_REPLICA_PAUSE)
        return int(got), bool(applied)

    def get(self, name: str) -> ClusterRecord | None:
        return self.get_many([name])[name]

    def get_many(self, names: list[str]) -> dict[str, ClusterRecord | None]:
        """Several clusters' records in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(keys.cluster(name))
            pipe.smembers(keys.names(name))
        out = pipe.execute()
        return {name: _record(name, out[2 * i], out[2 * i + 1]) for i, name in enumerate(names)}

    def generations(self, names: list[str]) -> dict[str, int]:
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.hget(keys.cluster(name), "generation")
        return {name: int(g or 0) for name, g in zip(names, pipe.execute())}

    def clear_errors(self, names: list[str], handled: dict[str, int] | None = None) -> None:
        """Clear the errors of `names`, and record `handled` ({cluster: seq}: the newest request a round
        acted on) of clusters that still exist; one round trip, which also writes buffered measurements."""
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.hdel(keys.cluster(name), "error", "error_at")
        for name, seq in (handled or {}).items():
            self._hset_if_exists(keys=[keys.cluster(name)], args=["handled_seq", int(seq)], client=pipe)
        self.metrics.drain_into(pipe)
        pipe.execute()

    def cluster_names(self) -> list[str]:
        return sorted(self.r.smembers(keys.clusters()))


    def set_error(self, name: str, message: str) -> None:
        if self.r.exists(keys.cluster(name)):
            self.r.hset(keys.cluster(name), mapping={"error": message, "error_at": time.time()})

    def delete_cluster(self, name: str, seq: int | None = None) -> bool:
        """Forget a deleted cluster (after its jobs are gone) and leave its tombstone, atomically.

        `seq` is the delete request's number (None: the cluster's newest). False, and nothing
        changed, when a request newer than the delete is recorded (that request keeps the cluster).
        The tombstone (state.keys) makes every message numbered at or below it a no-op.
        """
        others = [k for k in keys.per_cluster(name) if k != keys.cluster(name)]
        return bool(self._delete_cluster(
            keys=[keys.cluster(name), keys.tombstone(name), keys.clusters(), *others],
            args=["" if seq is None else int(seq), self.settings.tombstone_ttl, name]))

    def tombstone(self, name: str) -> int:
        """The request number a deleted cluster's tombstone holds (0: none)."""
        return int(self.r.get(keys.tombstone(name)) or 0)

    def delete(self, name: str) -> None:
        """Forget the keys of a cluster nobody requested (summaries of foreign jobs); no tombstone."""
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(*keys.per_cluster(name))
        pipe.srem(keys.clusters(), name)
        self.metrics.drain_into(pipe)
        pipe.execute()

    # ---- locks ----------------------------------------------------------------------------------
    def cluster_lock(self, name: str, timeout: float):
        return self.r.lock(keys.lock(name), timeout=timeout, thread_local=False)

    def batch_lock(self, schedd: str, timeout: float):
        return self.r.lock(keys.batch_lock(schedd), timeout=timeout, thread_local=False)

    def add_pending(self, schedd: str, *names: str) -> None:
        if names:
            self.r.sadd(keys.pending(schedd), *names)

    def join_pending(self, schedd: str, name: str, runner, token: str) -> tuple[bool, str | None]:
        """Add a cluster to the schedd's pending set and try to take the batch lock `runner`, in one
        round trip; returns (taken, the holder's token)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.sadd(keys.pending(schedd), name)
        taken, holders = self._try_locks(pipe, [runner], token)
        return bool(taken), holders.get(runner.name)

    def try_locks(self, locks: list, token: str) -> tuple[list, dict[str, str | None]]:
        """Try to take many redis-py locks (non-blocking) in one round trip.

        Returns the locks taken and, for the others, their holders' tokens. A lock is taken exactly as
        `Lock.acquire(blocking=False, token=token)` takes it (SET NX PX of the token), and carries the
        token afterwards, so it is released with `Lock.release` or `release_locks` and interoperates
        with locks taken one at a time.
        """
        return self._try_locks(self.r.pipeline(transaction=False), locks, token)

    def _try_locks(self, pipe, locks: list, token: str) -> tuple[list, dict[str, str | None]]:
        encoded = self.r.get_encoder().encode(token)
        for lock in locks:
            pipe.set(lock.name, encoded, nx=True, px=int(lock.timeout * 1000))
            pipe.get(lock.name)
        out = pipe.execute()[-2 * len(locks):]
        taken, holders = [], {}
        for i, lock in enumerate(locks):
            if out[2 * i]:
                lock.local.token = encoded
                taken.append(lock)
            else:
                holders[lock.name] = out[2 * i + 1]
        return taken, holders

    def adopt_lock(self, lock, token: str) -> bool:
        """Make `lock` hold `token`, a lock handed over by another process; True if it is still held
        with that token (False: it expired, and may be someone else's now)."""
        lock.local.token = self.r.get_encoder().encode(token)
        if lock.owned():
            return True
        lock.local.token = None
        return False

    def release_locks(self, locks: list) -> list:
        """Release locks taken by `try_locks` in one round trip (redis-py's own release script);
        returns those that had expired and are no longer ours."""
        pipe = self.r.pipeline(transaction=False)
        for lock in locks:
            lock.lua_release(keys=[lock.name], args=[lock.local.token], client=pipe)
            lock.local.token = None
        self.metrics.drain_into(pipe)  # the round's schedd calls, timed while the locks were held
        return [lock for lock, released in zip(locks, pipe.execute()[:len(locks)]) if not released]

    def pop_pending(self, schedd: str, count: int) -> list[str]:
        return self.r.spop(keys.pending(schedd), count) or []

    def has_pending(self, schedd: str) -> bool:
        return bool(self.r.scard(keys.pending(schedd)))

    def batch_state(self, schedd: str) -> tuple[int, bool]:
        """(clusters pending on the schedd, whether a round runs or is handed over: the batch lock is held)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.scard(keys.pending(schedd))
        pipe.exists(keys.batch_lock(schedd))
        pending, held = pipe.execute()
        return int(pending), bool(held)

    def batches_done(self, schedd: str) -> bool:
        """True when no cluster waits on the schedd and no round runs or is handed over."""
        return self.batch_state(schedd) == (0, False)

    def poll_lock(self, schedd: str, timeout: float):
        return self.r.lock(keys.poll_lock(schedd), timeout=timeout, thread_local=False)

    def break_dead_lock(self, lock_name: str, token: str | None = None) -> bool:
        """Delete a lock whose holder is a dead process on this host; True if it was broken.

        `token` is the holder's token when the caller has just read it (read here otherwise).
        """
        token = token if token is not None else self.r.get(lock_name)
        if token and holder_is_dead(token):
            broken = bool(self._break(keys=[lock_name], args=[token]))
            if broken:
                log.warning("broke lock %s left by dead process %s", lock_name, token)
            return broken
        return False

    # ---- names ----------------------------------------------------------------------------------
    def reserve_indexes(self, name: str, n: int, floor: int = 0) -> int:
        """Reserve n consecutive worker indexes with one INCRBY; returns the first one.

        `floor` (the highest index seen in the queue + 1) is applied first, so a counter lost with
        Redis's data never hands out a name that a live job still carries.
        """
        last = int(self._reserve(keys=[keys.counter(name)], args=[n, floor]))
        return last - n

    def submitted_names(self, name: str) -> set[str]:
        return self.r.smembers(keys.submitted(name))

    def mark_submitted(self, name: str, worker_names: list[str]) -> None:
        if worker_names:
            self.r.sadd(keys.submitted(name), *worker_names)

    def counter(self, name: str) -> int:
        return int(self.r.get(keys.counter(name)) or 0)

    def reset_counter(self, name: str) -> None:
        self.r.set(keys.counter(name), 0)

    def mark_inflight(self, name: str, token: str, ttl: float) -> None:
        self.r.set(keys.inflight(name), token, px=int(ttl * 1000))

    def clear_inflight(self, name: str) -> None:
        self.r.delete(keys.inflight(name))

    def inflight(self, name: str) -> str | None:
        return self.r.get(keys.inflight(name))

    # ---- poll results ---------------------------------------------------------------------------
    def write_poll(self, schedd: str, summaries: dict[str, dict], jobs: dict[str, dict[str, str]],
                   polled_at: float, unparsed: int = 0, degraded: int = 0, duration: float | None = None) -> None:
        """Write every cluster's summary, the job records of the clusters in `jobs` (the others are
        unchanged), the poll status (with the counts of odd ads skipped / degraded; `duration`: seconds
        the poll took) and the buffered measurements, in one pipeline."""
        pipe = self.r.pipeline(transaction=True)
        for name, summary in summaries.items():
            pipe.delete(keys.summary(name))
            pipe.hset(keys.summary(name), mapping={k: _encode(v) for k, v in summary.items()})
        for name, records in jobs.items():
            pipe.delete(keys.jobs(name))
            if records:
                pipe.hset(keys.jobs(name), mapping=records)
        pipe.hset(keys.poll(schedd), mapping={"polled_at": polled_at, "ok_at": polled_at, "failures": 0,
                                              "error": "", "unparsed": unparsed, "degraded": degraded})
        if duration is not None:
            pipe.hset(keys.poll(schedd), "duration", round(duration, 6))
        self.metrics.drain_into(pipe)
        pipe.execute()

    def poll_failed(self, schedd: str, error: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(keys.poll(schedd), mapping={"error": error, "polled_at": time.time()})
        pipe.hincrby(keys.poll(schedd), "failures", 1)
        pipe.hincrby(keys.poll(schedd), "failures_total", 1)
        self.metrics.drain_into(pipe)
        pipe.execute()

    def poll_status(self, schedd: str) -> dict:
        return self.r.hgetall(keys.poll(schedd))

    def summary(self, name: str) -> dict:
        return {k: _decode(v) for k, v in self.r.hgetall(keys.summary(name)).items()}

    def summaries(self, names: list[str]) -> dict[str, dict]:
        pipe = self.r.pipeline(transaction=False)
        for n in names:
            pipe.hgetall(keys.summary(n))
        return {n: {k: _decode(v) for k, v in h.items()} for n, h in zip(names, pipe.execute())}

    def job_ids_many(self, names: list[str]) -> dict[str, list[str]]:
        """The job ids of several clusters' records, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for n in names:
            pipe.hkeys(keys.jobs(n))
        return dict(zip(names, pipe.execute()))

    def job_records(self, name: str) -> dict[str, dict]:
        return {jid: json.loads(v) for jid, v in self.r.hgetall(keys.jobs(name)).items()}

    def summarized_clusters(self) -> list[str]:
        """Clusters that have a summary, including ones found in the queue but not requested by us."""
        prefix = keys.summary("")
        return sorted(k[len(prefix):] for k in self.r.scan_iter(match=prefix + "*", count=1000))

    # ---- ended jobs and crash loops -------------------------------------------------------------
    ENDED_TTL = 86400

    def add_ended(self, records: dict[str, dict[str, str]]) -> dict[str, list[dict]]:
        """Record ended jobs ({cluster: {job id: JSON}}) once each; returns the newly recorded ones."""
        pipe = self.r.pipeline(transaction=False)
        order = []
        for name, recs in records.items():
            for jid, rec in recs.items():
                pipe.hsetnx(keys.ended(name), jid, rec)
                order.append((name, rec))
            pipe.expire(keys.ended(name), self.ENDED_TTL)
        out: dict[str, list[dict]] = {}
        results = iter(pipe.execute())
        i = 0
        for name, recs in records.items():
            for _ in recs:
                if next(results):
                    out.setdefault(name, []).append(json.loads(order[i][1]))
                i += 1
            next(results)  # the EXPIRE
        return out

    def ended_records(self, name: str) -> list[dict]:
        return [json.loads(v) for v in self.r.hvals(keys.ended(name))]

    def set_backoff(self, name: str, until: float | None, reason: str = "") -> None:
        """A crash loop delays the cluster's submissions until `until` (None: no more)."""
        if until is None:
            self.r.hdel(keys.cluster(name), "backoff_until", "backoff_reason")
        elif self.r.exists(keys.cluster(name)):
            self.r.hset(keys.cluster(name), mapping={"backoff_until": until, "backoff_reason": reason})

    def backoff(self, name: str) -> tuple[float, str] | None:
        until, reason = self.r.hmget(keys.cluster(name), "backoff_until", "backoff_reason")
        return (float(until), reason or "") if until else None

    # ---- held-job policy ------------------------------------------------------------------------
    def count_release(self, name: str, job_name: str) -> int:
        return int(self.r.hincrby(keys.holds(name), job_name, 1))

    def releases(self, name: str, job_name: str) -> int:
        return int(self.r.hget(keys.holds(name), job_name) or 0)

    def count_replaced(self, name: str, n: int) -> int:
        """Held jobs replaced since the cluster's last request (reset by `record_request`)."""
        return int(self.r.hincrby(keys.cluster(name), "replaced", n))

    def forget_releases(self, name: str, job_names: list[str]) -> None:
        if job_names:
            self.r.hdel(keys.holds(name), *job_names)

    # ---- throttle -------------------------------------------------------------------------------
    def throttle_wait(self, schedd: str, interval: float, max_wait: float = 60.0) -> float:
        """Block until this schedd's minimum call interval has passed; returns seconds waited.

        The slot is a key with a PX TTL: whoever sets it (NX) may call now; everyone else waits
        out its remaining TTL. Works across processes and hosts.
        """
        if interval <= 0:
            return 0.0
        key, waited, ms = keys.throttle(schedd), 0.0, max(1, int(interval * 1000))
        while not self.r.set(key, "1", px=ms, nx=True):
            ttl = self.r.pttl(key)
            pause = max(ttl, 1) / 1000.0 if ttl and ttl > 0 else 0.001
            if waited + pause > max_wait:
                break
            time.sleep(pause)
            waited += pause
        return waited

    # ---- queue consumers (worker heartbeats) ---------------------------------------------------
    def beat_consumer(self, queues: list[str], worker: str, ttl: float) -> None:
        """Announce that `worker` consumes `queues` now (one round trip); old entries age out after `ttl`."""
        now = time.time()
        pipe = self.r.pipeline(transaction=False)
        for q in queues:
            pipe.zadd(keys.consumers(q), {worker: now})
            pipe.zremrangebyscore(keys.consumers(q), "-inf", now - ttl)
            pipe.expire(keys.consumers(q), int(ttl) + 1)
        pipe.execute()

    def drop_consumer(self, queues: list[str], worker: str) -> None:
        pipe = self.r.pipeline(transaction=False)
        for q in queues:
            pipe.zrem(keys.consumers(q), worker)
        pipe.execute()

    def consumers(self, queue: str, max_age: float) -> list[str]:
        """Workers that announced consuming `queue` within the last `max_age` seconds."""
        return self.r.zrangebyscore(keys.consumers(queue), time.time() - max_age, "+inf")

    # ---- identity cache (owners issue) ----------------------------------------------------------
    def cached_identity(self, email: str) -> str | None:
        return self.r.get(keys.identity(email))

    def cache_identity(self, email: str, user: str, ttl: int) -> None:
        self.r.set(keys.identity(email), user, ex=ttl)


def _record(name: str, h: dict, names: set) -> ClusterRecord | None:
    if not h:
        return None
    return ClusterRecord(
        name=name, desired=int(h.get("desired", 0)), owner=h.get("owner") or None,
        schedd=h.get("schedd", "local"), generation=int(h.get("generation", 0)),
        seq=int(h.get("seq", 0)), replaced=int(h.get("replaced", 0)),
        options=json.loads(h["options"]) if h.get("options") else {},
        names=set(names) if names else None, error=h.get("error") or None,
        error_at=float(h["error_at"]) if h.get("error_at") else None,
        created_at=float(h["created_at"]) if h.get("created_at") else None,
        updated_at=float(h["updated_at"]) if h.get("updated_at") else None,
        backoff_until=float(h["backoff_until"]) if h.get("backoff_until") else None,
        backoff_reason=h.get("backoff_reason") or None,
        handled_seq=int(h.get("handled_seq") or 0))


def _encode(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    return value


def _decode(value: str):
    if value == "":
        return None
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value
