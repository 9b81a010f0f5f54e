"""Requests and desired state: what was asked of each cluster, its tombstone once deleted, its errors and
crash-loop backoff (the `htdask:cluster:*`, `htdask:clusters`, `htdask:seq`, `htdask:deleted:*` keys)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from htdask.state import keys
from htdask.state.many import CLEAR_ERRORS, GENERATIONS, GET_MANY, chunks, pairs
from htdask.state.quota import QUOTA_LUA, QUOTA_RELEASE_LUA, OwnerMismatch, QuotaExceeded, quota_arg

log = logging.getLogger(__name__)

#: milliseconds a request waits for a replica to hold it under Sentinel
REPLICA_WAIT_MS = 1000
#: seconds requests stop waiting after a wait no replica answered (none is connected, e.g. after a failover
#: until the old master returns as a replica): nothing could be promoted over them meanwhile
NO_REPLICA_PAUSE = 10.0


# Set a cluster's error and its time by Redis' clock (the one clock, htdask.state.nodes), if the cluster exists.
_SET_ERROR = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'error', ARGV[1], 'error_at', string.format('%d.%06d', tonumber(t[1]), tonumber(t[2])))
return 1
"""

# Record a request as the cluster's desired state unless a newer one is recorded, or the cluster was deleted
# by a request at least as new (its tombstone, KEYS[5]) (atomic, one round trip).
# ARGV[8] is the request's sequence number, or '' to take a new one. ARGV[3] is the schedd; ARGV[9] says how:
# 'set' it, 'keep' the recorded one (ARGV[3] is the default for a new cluster), or 'check' that a recorded
# one is ARGV[3] (else nothing is written and the reply is {-1, 0, recorded schedd}). ARGV[10] is the quota
# argument (htdask/state/quota.py): the owner's limits are checked and its use counted here, in the same
# script; {-2, 0, schedd, 0, owner}: the limits were for another owner, {-3, 0, schedd, fits, note}: refused
# by a quota (nothing written in either case). Names from ARGV[11].
# Returns {seq, 1 if recorded now or before, the cluster's schedd, workers granted, quota note}.
_RECORD_REQUEST = QUOTA_LUA + """
local recorded = redis.call('HGET', KEYS[2], 'schedd')
if recorded and ARGV[9] == 'check' and recorded ~= ARGV[3] then return {-1, 0, recorded} end
if recorded and ARGV[9] == 'keep' then ARGV[3] = recorded end
local seq
if ARGV[8] == '' then seq = redis.call('INCR', KEYS[1]) else seq = tonumber(ARGV[8]) end
local tomb = tonumber(redis.call('GET', KEYS[5]) or '0')
if seq <= tomb then return {seq, 0, ARGV[3]} end
local stored = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if stored >= seq then
  if stored == seq then return {seq, 1, ARGV[3]} end
  return {seq, 0, ARGV[3]}
end
local qt = quota_check(KEYS, ARGV)
if qt.mismatch then return {-2, 0, ARGV[3], 0, qt.mismatch} end
if qt.refused then return {-3, 0, ARGV[3], qt.granted, qt.note} end
local granted = qt.granted
redis.call('HSETNX', KEYS[2], 'created_at', ARGV[4])
if redis.call('HEXISTS', KEYS[2], 'born_at') == 0 then  -- a lifetime starts here, by Redis' clock (limits)
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[2], 'born_at', string.format('%d.%06d', tonumber(t[1]), tonumber(t[2])))
end
redis.call('HSET', KEYS[2], 'desired', granted, 'schedd', ARGV[3], 'updated_at', ARGV[4], 'seq', seq, 'replaced', 0)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'owner', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'options', ARGV[6]) end
redis.call('HINCRBY', KEYS[2], 'generation', 1)
redis.call('SADD', KEYS[3], ARGV[1])
if ARGV[7] == '1' then
  -- named workers cut down by a quota: the names already wanted first, then the new ones, in order
  local keep, new = {}, {}
  for i = 11, #ARGV do
    if redis.call('SISMEMBER', KEYS[4], ARGV[i]) == 1 then keep[#keep + 1] = ARGV[i] else new[#new + 1] = ARGV[i] end
  end
  for _, name in ipairs(new) do keep[#keep + 1] = name end
  redis.call('DEL', KEYS[4])
  for i = 1, math.min(#keep, granted) do redis.call('SADD', KEYS[4], keep[i]) end
  granted = math.min(#keep, granted)
  redis.call('HSET', KEYS[2], 'desired', granted)
end
quota_write(KEYS, ARGV, qt, granted)
return {seq, 1, ARGV[3], granted, qt.note}
"""

# Forget a deleted cluster unless a request newer than the delete (ARGV[1]) is recorded; leave its tombstone:
# the newest request number it had (at least the delete's), so no older message re-creates it. KEYS[1] is the
# cluster's hash, KEYS[2] its tombstone, KEYS[3] the set of clusters, KEYS[4..] its other keys; ARGV[4], ARGV[5]:
# the quota keys (its owner's entry is removed); returns 1 if forgotten, 0 if a newer request keeps it.
_DELETE_CLUSTER = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local seq = tonumber(ARGV[1])
if seq == nil then seq = stored end
if stored > seq then return 0 end
local tomb = math.max(stored, seq, tonumber(redis.call('GET', KEYS[2]) or '0'))
redis.call('SET', KEYS[2], string.format('%d', tomb), 'EX', ARGV[2])
""" + QUOTA_RELEASE_LUA + """
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[3])
return 1
"""

class Recorded(NamedTuple):
    """What recording a request did: its number, the cluster's schedd, the workers granted (the count
    asked for unless a quota cut it down, QUOTA_MODE=grant) and the quota's note then ("" if none)."""
    seq: int
    schedd: str
    granted: int
    note: str


def _reply(name: str, desired: int, reply) -> tuple[int, bool, str, int, str]:
    """The record script's reply as (seq, applied, schedd, granted, note); its quota refusals raised."""
    seq, applied, where = int(reply[0]), bool(int(reply[1])), reply[2]
    granted = int(reply[3]) if len(reply) > 3 else int(desired)
    note = reply[4] if len(reply) > 4 else ""
    if seq == -2:
        raise OwnerMismatch(note)
    if seq == -3:
        raise QuotaExceeded(name, note, granted)
    return seq, applied, where, granted, note


class ScheddMismatch(Exception):
    """A request named a schedd other than the one its cluster runs on (`recorded`); nothing was written."""

    def __init__(self, cluster: str, asked: str, recorded: str):
        super().__init__(f"cluster {cluster!r} runs on schedd {recorded!r}; delete it before moving it")
        self.cluster, self.asked, self.recorded = cluster, asked, recorded


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
    crash_loop_until: float | None = None  # the crash loop lasts until then unless more workers exit
    handled_seq: int = 0
    quota_note: str | None = None  # why its last request was cut down by its owner's quota (QUOTA_MODE=grant)


class RequestStore:
    """The requests part of `state.Store` (needs `self.r`, `self.metrics`, `self.replicated`, `self.settings`)."""

    SCRIPTS = {"_record_request": _RECORD_REQUEST, "_delete_cluster": _DELETE_CLUSTER,
               "_set_error": _SET_ERROR, "_get_many": GET_MANY,
               "_generations": GENERATIONS, "_clear_errors": CLEAR_ERRORS}

    def next_seq(self) -> int:
        """A request number, taken when a request is enqueued; newer requests get larger numbers."""
        return int(self.r.incr(keys.seq()))

    def record_new_request(self, name: str, desired: int, *, schedd: str, owner: str | None = None,
                           options: dict | None = None, names: list[str] | None = None) -> int:
        """Number a new request and record it as the cluster's desired state, atomically; returns its seq.

        Same fields as `record_request`; used where requests enter (tasks.api), so the task that
        follows finds its request already recorded. A cluster recorded on another schedd raises
        ScheddMismatch, and nothing is written. Its owner's quota use is counted, not checked (deletes).
        """
        return self.record_scale_request(name, desired, schedd=schedd, owner=owner, options=options,
                                         names=names, keep_schedd=False).seq

    def record_scale_request(self, name: str, desired: int, *, schedd: str, keep_schedd: bool,
                             owner: str | None = None, options: dict | None = None,
                             names: list[str] | None = None, quota=None) -> "Recorded":
        """Number and record a new request in one round trip, choosing its schedd there too: returns
        Recorded(seq, the cluster's schedd, workers granted, quota note).

        `keep_schedd`: a cluster already recorded keeps its schedd (`schedd` is the new cluster's); else a
        recorded cluster must run on `schedd` (ScheddMismatch, nothing written, if not).
        `quota`: owner -> that owner's quota argument (`htdask.state.quota.quota_arg`), checked in the same
        script (QuotaExceeded, nothing written, when refused); None: counted only.
        """
        wait = self.replicated and time.monotonic() >= self._no_replica_until

        def record(quota_arg):
            return self._record(name, desired, schedd, owner, options, names, None, wait=wait,
                                mode="keep" if keep_schedd else "check", quota=quota_arg)
        (seq, _, where, granted, note), _ = self._as_owner(name, owner, quota, lambda q: (record(q), None))
        if seq < 0:
            raise ScheddMismatch(name, schedd, where)
        return Recorded(seq, where, granted, note)

    def _as_owner(self, name: str, owner: str | None, quota, attempt):
        """`attempt(quota argument)` with the quota of the cluster's owner: `owner`, else guessed (the
        default owner) and, when the script says the cluster's recorded owner is another, tried again with
        that one's. `quota`: owner -> quota argument, or None (counted only). Returns what `attempt` did."""
        guess = owner or self.default_quota_owner()
        for _ in range(3):  # the owner may differ from the guess (a request without one keeps the recorded)
            try:
                return attempt(quota(guess) if quota else None)
            except OwnerMismatch as e:
                guess = e.owner
        raise RuntimeError(f"cluster {name}: its owner changed during three requests in a row")

    def default_quota_owner(self) -> str:
        """The quota owner of clusters without one: DEFAULT_OWNER, else `-` (the worker's own user)."""
        return self.settings.default_owner or "-"

    def record_request(self, name: str, desired: int, *, schedd: str, owner: str | None = None,
                       options: dict | None = None, names: list[str] | None = None,
                       seq: int | None = None) -> bool:
        """Record the newest desired state of a cluster; False when a newer request is already there.

        Recording the same request twice (at enqueue and in the task) writes it once.

        A re-delivered or retried task carries its original `seq`, so it can never move a cluster
        back to an older request's count. Without `seq` the request counts as the newest.
        """
        return self._record(name, desired, schedd, owner, options, names, seq)[1]

    def _record_call(self, name, desired, schedd, owner, options, names, seq, mode="set", quota=None) -> dict:
        """The keys and args of one call of the record script (for a pipeline of several calls).
        `quota`: the quota argument (None: the owner's use is counted, not checked)."""
        if quota is None:
            quota = quota_arg(None, None, None, default=self.default_quota_owner())
        args = [name, desired, schedd, time.time(), owner or "",
                json.dumps(options, sort_keys=True) if options is not None else "",
                "1" if names is not None else "0", "" if seq is None else int(seq), mode, quota, *(names or [])]
        return {"keys": [keys.seq(), keys.cluster(name), keys.clusters(), keys.names(name), keys.tombstone(name)],
                "args": args}

    def _record(self, name, desired, schedd, owner, options, names, seq, wait=False,
                mode="set", quota=None) -> tuple[int, bool, str, int, str]:
        """(seq, applied, schedd, workers granted, quota note); raises QuotaExceeded / OwnerMismatch."""
        call = self._record_call(name, desired, schedd, owner, options, names, seq, mode, quota)
        if not wait:
            return _reply(name, desired, self._record_request(**call))
        reply, _ = self._replicated(name, self._record_request, call)
        return _reply(name, desired, reply)

    def _replicated(self, name: str, script, call: dict):
        """(`script`'s reply to `call` (a recording script), whether the write is confirmed). Under Sentinel
        (unless no replica answered lately) it runs on one connection with `WAIT 1`, so that a replica holds
        the write, and is confirmed when one did; without Sentinel it always is."""
        if not (self.replicated and time.monotonic() >= self._no_replica_until):
            return script(**call), not self.replicated
        pipe = self.r.pipeline(transaction=False)  # one connection: WAIT covers this write
        script(**call, client=pipe)
        pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS)
        reply, replicas = pipe.execute()
        if not int(replicas):
            self._no_replica_until = time.monotonic() + NO_REPLICA_PAUSE
            log.warning("cluster %s: request recorded, but no replica confirmed it within %d ms (a failover "
                        "now could lose it); not waiting for replicas for %.0f s", name, REPLICA_WAIT_MS,
                        NO_REPLICA_PAUSE)
        return reply, bool(int(replicas))

    def get(self, name: str) -> ClusterRecord | None:
        return self.get_many([name])[name]

    def get_many(self, names: list[str]) -> dict[str, ClusterRecord | None]:
        """Several clusters' records ({name: record, or None if not recorded}) in one round trip (one script
        call per MANY_CHUNK clusters)."""
        pipe = self.r.pipeline(transaction=False)
        for part in chunks(names):
            self._get_many(keys=[k for name in part for k in (keys.cluster(name), keys.names(name))], client=pipe)
        out = [x for reply in pipe.execute() for x in reply]
        return {name: _record(name, pairs(out[2 * i]), set(out[2 * i + 1])) for i, name in enumerate(names)}

    def generations(self, names: list[str]) -> dict[str, int]:
        """{name: its record's generation (0: not recorded)}, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for part in chunks(names):
            self._generations(keys=[keys.cluster(name) for name in part], client=pipe)
        return {name: int(g) for name, g in zip(names, (g for reply in pipe.execute() for g in reply))}

    def clear_errors(self, names: list[str], handled: dict[str, int] | None = None) -> None:
        """Clear the errors of `names`, and record `handled` ({cluster: seq}: the newest request a round
        acted on) of clusters that still exist; one round trip, which also writes buffered measurements."""
        handled = handled or {}
        clear = set(names)
        every = list(dict.fromkeys([*names, *handled]))
        pipe = self.r.pipeline(transaction=False)
        for part in chunks(every):
            self._clear_errors(keys=[keys.cluster(name) for name in part],
                               args=[x for name in part for x in ("1" if name in clear else "0",
                                                                   int(handled[name]) if name in handled else "")],
                               client=pipe)
        self.metrics.drain_into(pipe)
        pipe.execute()

    def cluster_names(self) -> list[str]:
        return sorted(self.r.smembers(keys.clusters()))


    def set_error(self, name: str, message: str) -> None:
        """Record the cluster's error, `error_at` by Redis' clock (compared with `--wait`'s start)."""
        self._set_error(keys=[keys.cluster(name)], args=[message])

    def delete_cluster(self, name: str, seq: int | None = None) -> bool:
        """Forget a deleted cluster (after its jobs are gone) and leave its tombstone, atomically.

        `seq` is the delete request's number (None: the cluster's newest). False, and nothing
        changed, when a request newer than the delete is recorded (that request keeps the cluster).
        The tombstone (htdask.state.keys) makes every message numbered at or below it a no-op.
        """
        others = [k for k in keys.per_cluster(name) if k != keys.cluster(name)]
        return bool(self._delete_cluster(
            keys=[keys.cluster(name), keys.tombstone(name), keys.clusters(), *others],
            args=["" if seq is None else int(seq), self.settings.tombstone_ttl, name, keys.quota_prefix(),
                  keys.quota_owners()]))

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

    def set_backoff(self, name: str, until: float | None, reason: str = "", lasts_until: float | None = None) -> None:
        """A crash loop delays the cluster's submissions until `until` and lasts until `lasts_until`
        (epoch s; None: no crash loop any more)."""
        if until is None:
            self.r.hdel(keys.cluster(name), "backoff_until", "backoff_reason", "crash_loop_until")
        elif self.r.exists(keys.cluster(name)):
            self.r.hset(keys.cluster(name), mapping={"backoff_until": until, "backoff_reason": reason,
                                                     "crash_loop_until": lasts_until or until})

    def backoff(self, name: str) -> tuple[float, str] | None:
        until, reason = self.r.hmget(keys.cluster(name), "backoff_until", "backoff_reason")
        return (float(until), reason or "") if until else None


    def count_replaced(self, name: str, n: int) -> int:
        """Held jobs replaced since the cluster's last request (reset by `record_request`)."""
        return int(self.r.hincrby(keys.cluster(name), "replaced", n))


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
        crash_loop_until=float(h["crash_loop_until"]) if h.get("crash_loop_until") else None,
        handled_seq=int(h.get("handled_seq") or 0), quota_note=h.get("quota_note") or None)
