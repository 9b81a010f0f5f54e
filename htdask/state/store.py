"""Cluster state in Redis: one `Store` made of one part per concern.

The store is the only code that reads or writes our keys (their layout is documented in `htdask.state.keys`,
the only module that builds key names). Values are plain strings and JSON so that any Redis client
(Flower, redis-cli) can read them. The parts:

- `htdask.state.requests`: requests and desired state, tombstones, errors, crash-loop backoff;
- `htdask.state.counters`: worker-name counters (fenced by the lease token), submits in flight, submitted names,
  held-job releases;
- `htdask.state.locks`: locks as leases renewed by a watchdog;
- `htdask.state.rounds`: batched rounds (pending sets, the batch lock, queued and watch marks);
- `htdask.state.summaries`: poll results, job records, ended jobs;
- `htdask.state.nodes`: schedd throttle, queue consumers, identity cache;
- `htdask.state.retiring`: running workers being retired before their jobs are removed;
- `htdask.state.quota`: each owner's use of its quota (kept by the record script).
- `htdask.state.limits`: idle and lifetime limits, what schedulers said, clusters a limit deleted.
"""
from __future__ import annotations

import logging

import redis
from redis.sentinel import SentinelConnectionPool

from htdask.settings import Settings, load
from htdask.state import keys
from htdask.state.connection import connect
from htdask.state.counters import CounterStore
from htdask.state.limits import LimitStore
from htdask.state.locks import LeaseKeeper, LockStore, new_token
from htdask.state.metrics import RECORDER, Recorder
from htdask.state.nodes import NodeStore
from htdask.state.quota import QuotaStore
from htdask.state.requests import _RECORD_REQUEST, ClusterRecord, Recorded, RequestStore, ScheddMismatch, _reply
from htdask.state.retiring import RetiringStore
from htdask.state.rounds import _ENQUEUE, _JOIN, RoundStore, holder_task
from htdask.state.summaries import SummaryStore

log = logging.getLogger(__name__)

__all__ = ["ClusterRecord", "Store", "redis_url"]


def redis_url() -> str:
    """REDIS_URL of this process's settings."""
    return load().redis_url


# One script, not a pipeline of two: redis-py sends SCRIPT EXISTS before every pipeline that holds scripts.
_RECORD_AND_JOIN = f"""
local function record(KEYS, ARGV)
{_RECORD_REQUEST}
end
local function join(KEYS, ARGV)
{_JOIN}
end
local rest = {{}}
for i = 4, #ARGV do rest[#rest + 1] = ARGV[i] end
return {{record({{KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}}, rest),
        join({{KEYS[6], KEYS[7], KEYS[8], KEYS[9]}}, {{ARGV[1], ARGV[2], ARGV[3]}})}}
"""

# A request where it enters (tasks.api): recorded (_RECORD_REQUEST, KEYS[1..5], ARGV[5..]) and, when recorded
# on the schedd whose round keys are given (KEYS[6..9], ARGV[1..3]: _ENQUEUE's), joined to that schedd's
# pending set, in one script call. ARGV[4] is that schedd. Returns {record's reply, _ENQUEUE's reply or false}.
_RECORD_AND_ENQUEUE = f"""
local function record(KEYS, ARGV)
{_RECORD_REQUEST}
end
local function enqueue(KEYS, ARGV)
{_ENQUEUE}
end
local rest = {{}}
for i = 5, #ARGV do rest[#rest + 1] = ARGV[i] end
local rec = record({{KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}}, rest)
if rec[2] ~= 1 or rec[3] ~= ARGV[4] then return {{rec, false}} end
return {{rec, enqueue({{KEYS[6], KEYS[7], KEYS[8], KEYS[9]}}, {{ARGV[1], ARGV[2], ARGV[3]}})}}
"""

# A scale task joins the round for a request the enqueue recorded: KEYS[1] the cluster's hash, KEYS[2] its
# tombstone, KEYS[3..6] the join's (_JOIN); ARGV[1] the request's seq, ARGV[2..4] the join's. Writes no
# desired state: returns {-1} (nothing done) when neither the request nor a newer one nor a delete at least as
# new is recorded (the enqueue's write was lost: the caller records it with _RECORD_AND_JOIN); else joins,
# returning {1 if the request is the recorded one (0: superseded), join's reply}.
_JOIN_RECORDED = f"""
local function join(KEYS, ARGV)
{_JOIN}
end
local seq = tonumber(ARGV[1])
local stored = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local tomb = tonumber(redis.call('GET', KEYS[2]) or '0')
if seq > stored and seq > tomb then return {{-1}} end
local current = 0
if stored == seq then current = 1 end
return {{current, join({{KEYS[3], KEYS[4], KEYS[5], KEYS[6]}}, {{ARGV[2], ARGV[3], ARGV[4]}})}}
"""


class Store(RequestStore, CounterStore, LockStore, RoundStore, SummaryStore, NodeStore, RetiringStore, QuotaStore,
            LimitStore):
    """Operations on our Redis keys. One instance per process is enough (redis-py pools connections).

    `settings` (default: this process's) give REDIS_URL when no client is given, TOMBSTONE_TTL, and LOCK_TTL:
    how long a lock outlives a holder that died (htdask.state.locks); `recorder` buffers this process's schedd
    measurements, written with the store's next pipeline (htdask.state.metrics).
    """

    SCRIPTS = {"_record_and_join": _RECORD_AND_JOIN, "_join_recorded": _JOIN_RECORDED,
               "_record_and_enqueue": _RECORD_AND_ENQUEUE}

    def __init__(self, client: redis.Redis | None = None, recorder: Recorder | None = None,
                 settings: Settings | None = None):
        self.settings = settings or load()
        self.r = client or connect(self.settings.redis_url)
        self.metrics = recorder or RECORDER
        self.leases = LeaseKeeper(self.r, self.settings.lock_ttl)
        for part in type(self).__mro__:
            for attr, script in vars(part).get("SCRIPTS", {}).items():
                setattr(self, attr, self.r.register_script(script))
        # Under Sentinel a replica may be promoted after the master dies: a request waits until a replica
        # holds it before its caller is told it was taken (WAIT on the connection that wrote it).
        self.replicated = isinstance(self.r.connection_pool, SentinelConnectionPool)
        self._no_replica_until = 0.0

    def record_and_join(self, name: str, desired: int, *, schedd: str, lock, task_id: str | None = None,
                        owner: str | None = None, options: dict | None = None, names: list[str] | None = None,
                        seq: int | None = None) -> tuple[bool, tuple[bool, float | None, str | None]]:
        """A scale task's two writes in one script call: `record_request` (same arguments) and then
        `join_pending(schedd, name, lock, task_id)`. Returns (recorded, join_pending's reply)."""
        token = task_id or new_token()
        record = self._record_call(name, desired, schedd, owner, options, names, seq)
        join = self._join_call(schedd, name, lock, token)
        recorded, joined = self._record_and_join(keys=record["keys"] + join["keys"],
                                                 args=join["args"] + record["args"])
        return bool(recorded[1]), self._taken(lock, token, joined)

    def join_recorded(self, name: str, seq: int, *, schedd: str, lock, task_id: str | None = None):
        """A scale task's one write: join the schedd's round for request `seq`, which its enqueue recorded
        (`record_scale_request`); the desired state is not written again. Returns None, and does nothing,
        when the record is missing (neither this request, nor a newer one, nor a delete at least as new is
        recorded: the enqueue's write was lost, e.g. with a master that failed over before a replica held
        it; the caller then records the request from its message with `record_and_join`); else (whether
        request `seq` is the recorded one (False: superseded), join_pending's reply)."""
        token = task_id or new_token()
        join = self._join_call(schedd, name, lock, token)
        out = self._join_recorded(keys=[keys.cluster(name), keys.tombstone(name), *join["keys"]],
                                  args=[int(seq), *join["args"]])
        if int(out[0]) < 0:
            return None
        return bool(int(out[0])), self._taken(lock, token, out[1])

    def record_and_enqueue(self, name: str, desired: int, *, schedd: str, keep_schedd: bool, task_id: str,
                           owner: str | None = None, options: dict | None = None, names: list[str] | None = None,
                           quota=None):
        """A new request where it enters, in one script call: `record_scale_request` (same arguments, the
        owner's quota checked and counted there too) and, when the cluster's schedd is `schedd`, its join to
        that schedd's pending set on behalf of its task `task_id` (about to be sent): the task is named as the
        queued round when none runs or is queued.

        Returns (Recorded(seq, the cluster's schedd, workers granted, quota note), joined): `joined` is None
        when the task must join itself (the cluster runs on another schedd; under Sentinel, no replica
        confirmed the write, which a failover could lose), else (named: the task runs the round; seconds
        after which the caller sends the watch task this call armed, or None; the id of the task handling
        the cluster, None if unknown). Raises ScheddMismatch or QuotaExceeded (nothing written) like
        `record_scale_request`.
        """
        ttl_ms = int(self.settings.lock_ttl * 1000)

        def attempt(quota_arg):
            record = self._record_call(name, desired, schedd, owner, options, names, None,
                                       "keep" if keep_schedd else "check", quota_arg)
            call = {"keys": record["keys"] + self._round_keys(schedd),
                    "args": [name, task_id, ttl_ms, schedd, *record["args"]]}
            (rec, joined), confirmed = self._replicated(name, self._record_and_enqueue, call)
            return _reply(name, desired, rec), (joined, confirmed)
        (seq, _, where, granted, note), (joined, confirmed) = self._as_owner(name, owner, quota, attempt)
        if seq < 0:
            raise ScheddMismatch(name, schedd, where)
        recorded = Recorded(seq, where, granted, note)
        if not joined or not confirmed:
            return recorded, None
        named, watch_ms, handler = joined
        return recorded, (bool(named), int(watch_ms) / 1000.0 if int(watch_ms) >= 0 else None,
                          holder_task(handler))
