"""Idle and lifetime limits (htdask.domain.limits): each cluster's own limits and the start of its lifetime,
what the limits pass read from its scheduler, and the clusters a limit deleted (fields of
`htdask:cluster:<name>`, the `htdask:culled` and `htdask:culls` hashes; htdask.state.keys).

Every time here is Redis' clock (`TIME` inside the scripts), never a host's: a cluster's lifetime starts at
its first request (`born_at`), and its idle time at the first pass that saw its scheduler idle with the
same `idle_since` (`idle_seen_at`), so hosts whose clocks disagree never shorten a limit.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from htdask.state import keys

#: seconds a deleted cluster's cull record is shown (`status`, the status page) after the cull
CULLED_KEEP = 86400.0

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# A request's limits: KEYS[1] the cluster's hash; ARGV[1] idle_timeout, ARGV[2] max_lifetime ('' keeps the
# recorded one). The lifetime starts at the first call (born_at, Redis' clock). 0 when the cluster has no record.
_SET_LIMITS = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'born_at', string.format('%.6f', now))
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'idle_timeout', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'max_lifetime', ARGV[2]) end
return 1
"""

# What a pass read from a cluster's scheduler: KEYS[1] the cluster's hash; ARGV[1] 'idle' with ARGV[2] the
# scheduler's idle_since (a token: the same value means no activity since), or anything else with ARGV[3] the
# state to show. Returns {seconds idle by Redis' clock as a string ('-1': not idle), age of the cluster ('-1':
# no record)}.
_OBSERVE = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'-1', '-1'} end
redis.call('HSETNX', KEYS[1], 'born_at', string.format('%.6f', now))
local age = now - tonumber(redis.call('HGET', KEYS[1], 'born_at'))
if ARGV[1] ~= 'idle' then
  redis.call('HDEL', KEYS[1], 'idle_token', 'idle_seen_at')
  redis.call('HSET', KEYS[1], 'idle_state', ARGV[3])
  return {'-1', string.format('%.3f', age)}
end
local seen = tonumber(redis.call('HGET', KEYS[1], 'idle_seen_at') or '')
if seen == nil or redis.call('HGET', KEYS[1], 'idle_token') ~= ARGV[2] then
  seen = now
  redis.call('HSET', KEYS[1], 'idle_token', ARGV[2], 'idle_seen_at', string.format('%.6f', now))
end
redis.call('HSET', KEYS[1], 'idle_state', ARGV[3])
return {string.format('%.3f', now - seen), string.format('%.3f', age)}
"""

# Mark a cluster deleted by a limit, once: KEYS[1] its hash, KEYS[2] the culled hash, KEYS[3] the counters;
# ARGV[1] name, ARGV[2] reason, ARGV[3] detail, ARGV[4] the request number it was judged at, or '' (a Dask
# Gateway's cluster, judged by the gateway: it may have no record yet), ARGV[5] its schedd when it has no record.
# The counter's field is `<reason>|<schedd>`. 0 (nothing done) when it is marked
# already, or (with a number) has no record or a newer request arrived meanwhile (judged again next pass).
_CULL = _NOW + """
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists and redis.call('HEXISTS', KEYS[1], 'culled') == 1 then return 0 end
if ARGV[4] ~= '' then
  if not exists then return 0 end
  if tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') ~= tonumber(ARGV[4]) then return 0 end
end
local h = {ARGV[5], false}
if exists then
  redis.call('HSET', KEYS[1], 'culled', ARGV[2], 'culled_detail', ARGV[3], 'culled_at', string.format('%.6f', now),
             'culled_seq', ARGV[4])
  h = redis.call('HMGET', KEYS[1], 'schedd', 'owner')
end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({reason = ARGV[2], detail = ARGV[3], at = now,
  schedd = h[1] or '', owner = h[2] or '', seq = tonumber(ARGV[4]) or 0}))
redis.call('HINCRBY', KEYS[3], ARGV[2] .. '|' .. (h[1] or ARGV[5]), 1)
return 1
"""


@dataclass(frozen=True)
class Observed:
    """What `observe` returns: seconds the scheduler has been seen idle (None: not idle) and the cluster's age
    (None: no record), both by Redis' clock."""

    idle_for: float | None
    age: float | None


class LimitStore:
    """The limits part of `state.Store` (needs `self.r`)."""

    SCRIPTS = {"_set_limits": _SET_LIMITS, "_observe": _OBSERVE, "_cull": _CULL}

    def set_limits(self, name: str, limits: dict | None = None) -> bool:
        """Record a request's own limits (kind -> seconds; absent kinds keep the recorded ones) and start the
        cluster's lifetime at its first request; False when the cluster has no record."""
        limits = limits or {}
        return bool(self._set_limits(keys=[keys.cluster(name)], args=[
            "" if limits.get(k) is None else repr(float(limits[k])) for k in ("idle_timeout", "max_lifetime")]))

    def observe(self, name: str, idle_since: float | None, state: str) -> Observed:
        """Record what the cluster's scheduler said: idle since `idle_since` (its own clock; None: not idle, or
        not known) and the words `state` shows; returns how long it has been seen idle and the cluster's age."""
        idle, age = self._observe(keys=[keys.cluster(name)], args=[
            "idle" if idle_since is not None else "not", repr(idle_since), state])
        return Observed(None if float(idle) < 0 else float(idle), None if float(age) < 0 else float(age))

    def cull(self, name: str, reason: str, detail: str, seq: int | None, schedd: str = "") -> bool:
        """Mark the cluster deleted by a limit (`reason` idle|lifetime, `detail` the words shown) and count it,
        once; False when it is marked already, or (`seq` given) gone or a request newer than `seq` arrived.
        `seq` None: a gateway's cluster, judged by the gateway, which may have no record yet (`schedd`: its
        schedd then; else the record's)."""
        return bool(self._cull(keys=[keys.cluster(name), keys.culled(), keys.culls()],
                               args=[name, reason, detail, "" if seq is None else int(seq), schedd]))

    def uncull(self, name: str) -> None:
        """Forget a cluster's cull mark (a request newer than its delete kept it: it is judged again)."""
        self.r.hdel(keys.cluster(name), "culled", "culled_detail", "culled_at", "culled_seq")

    def cull_counts(self) -> dict[tuple[str, str], int]:
        """Clusters deleted by a limit, ever: (schedd, reason) -> count."""
        out = {}
        for field, n in self.r.hgetall(keys.culls()).items():
            reason, _, schedd = field.partition("|")
            out[(schedd, reason)] = out.get((schedd, reason), 0) + int(n)
        return out

    def culled(self, now: float, prune: bool = False) -> dict[str, dict]:
        """Clusters a limit deleted within CULLED_KEEP seconds of `now` (Redis' clock): name -> its record
        (reason, detail, at, schedd, owner, seq); `prune`: drop older ones (the limits pass does; readers such
        as the exporter only read)."""
        out, old = {}, []
        for name, raw in self.r.hgetall(keys.culled()).items():
            try:
                doc = json.loads(raw)
                fresh = now - float(doc["at"]) <= CULLED_KEEP
            except (ValueError, TypeError, KeyError):
                fresh = False
            if fresh:
                out[name] = doc
            else:
                old.append(name)
        if old and prune:
            self.r.hdel(keys.culled(), *old)
        return out

    def observe_many(self, seen: list[tuple[str, float | None, str]]) -> list[Observed]:
        """`observe` for several clusters ((name, idle_since, state) each) in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for name, idle_since, state in seen:
            self._observe(keys=[keys.cluster(name)], args=[
                "idle" if idle_since is not None else "not", repr(idle_since), state], client=pipe)
        return [Observed(None if float(i) < 0 else float(i), None if float(a) < 0 else float(a))
                for i, a in pipe.execute()]

    def limit_fields(self, names: list[str]) -> dict[str, dict]:
        """The limit fields of several clusters' records in one round trip: name -> {idle_timeout,
        max_lifetime, born_at, idle_state, culled, culled_detail, culled_seq} (absent ones None)."""
        fields = ("idle_timeout", "max_lifetime", "born_at", "idle_state", "culled", "culled_detail", "culled_seq")
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.hmget(keys.cluster(name), *fields)
        return {name: dict(zip(fields, values)) for name, values in zip(names, pipe.execute())}
