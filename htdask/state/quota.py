"""Quotas per owner in Redis: the use each owner's clusters make of its quota, kept and checked by the one
script that records a request (`htdask.state.requests._RECORD_REQUEST`), so that concurrent requests
from any number of CLIs, gateways, operators and submit nodes can never pass a limit together.

Keys (`htdask.state.keys`): `htdask:quota:<owner>` (hash: cluster → `<workers> <cores> <memory MiB>
<gpus>`: its desired workers and each worker's use), `htdask:quotaowners` (set of owners with such a
hash); the cluster's own hash keeps `q_owner`, `q_cost` (JSON [cores, memory MiB, gpus] per worker)
and `quota_note` (why its last request was cut down).

A request is recorded with a *quota argument* (`quota_arg`): the owner the limits are for, the limits
([clusters, workers, cores, memory MiB, gpus], 0 = unlimited), the per-worker use of its job options
(None: the cluster's recorded one) and the mode (`refuse` or `grant`). The script:

- finds the cluster's owner (the request's, else the recorded one, else DEFAULT_OWNER or `-`); if the
  limits were computed for another owner it writes nothing and names the owner (the caller recomputes);
- when a limit is set, sums the use of the owner's other clusters (dropping entries whose cluster is gone;
  without limits the request is only counted: its cost is O(1), not O(the owner's clusters));
- allows, per resource, what fits under the limit, and never less than the cluster already has: a scale
  down always passes and a lowered quota stops growth but kills nothing;
- a new cluster past the clusters limit is refused in either mode; workers past a limit are refused
  (`refuse`, nothing written) or cut down to what fits (`grant`, with `quota_note`).

Deleting a cluster (`_DELETE_CLUSTER`) removes its entry; a delete's desired 0 releases its workers at once.
"""
from __future__ import annotations

import json

from htdask.domain.validation import ValidationError
from htdask.settings.quota import RESOURCES
from htdask.state import keys

#: Lua functions of the record script (inlined into it): `quota_check(KEYS, ARGV)` and
#: `quota_write(KEYS, ARGV, qt, granted)` (ARGV[1] cluster, ARGV[2] count, ARGV[5] owner, ARGV[6] options,
#: ARGV[10] the quota argument's JSON; KEYS[2] the cluster's hash).
QUOTA_LUA = r"""
local function quota_check(KEYS, ARGV)
  local q = cjson.decode(ARGV[10])
  local owner = ARGV[5]
  if owner == '' then owner = redis.call('HGET', KEYS[2], 'owner') or q.default end
  if type(q.owner) == 'string' and q.owner ~= owner then return {mismatch = owner} end
  local cost = q.cost
  if ARGV[6] == '' or type(cost) ~= 'table' then
    local rec = redis.call('HGET', KEYS[2], 'q_cost')
    if rec then cost = cjson.decode(rec) elseif type(cost) ~= 'table' then cost = {0, 0, 0} end
  end
  local n = tonumber(ARGV[2])
  local lim = q.limits
  local out = {owner = owner, cost = cost, granted = n, note = '', q = q}
  if lim[1] <= 0 and lim[2] <= 0 and lim[3] <= 0 and lim[4] <= 0 and lim[5] <= 0 then
    return out  -- counted, not checked: the owner's other clusters need not be summed (O(1) per request)
  end
  local entries = redis.call('HGETALL', q.prefix .. owner)
  local used, mine, member = {0, 0, 0, 0, 0}, {0, 0, 0, 0}, false
  for i = 1, #entries, 2 do
    local v = {}
    for x in string.gmatch(entries[i + 1], '%d+') do v[#v + 1] = tonumber(x) end
    if entries[i] == ARGV[1] then
      member, mine = true, v
    elseif redis.call('EXISTS', q.clusters .. entries[i]) == 0 then
      redis.call('HDEL', q.prefix .. owner, entries[i])
    else
      used[1] = used[1] + 1
      used[2] = used[2] + v[1]
      for r = 2, 4 do used[r + 1] = used[r + 1] + v[1] * v[r] end
    end
  end
  if not member and lim[1] > 0 and used[1] >= lim[1] then
    out.granted, out.refused = 0, true
    out.note = string.format('clusters quota of owner %s is %d: it has %d', owner, lim[1], used[1])
    return out
  end
  local per = {1, cost[1], cost[2], cost[3]}
  local what = {'workers', 'cores', 'memory', 'gpus'}
  for r = 1, 4 do
    local limit = lim[r + 1]
    if limit > 0 and per[r] > 0 then
      local old = mine[1]
      if r > 1 then old = mine[1] * mine[r] end
      local room = math.max(limit - used[r + 1], old)
      local fits = math.max(math.floor(room / per[r]), 0)
      if fits < out.granted then
        out.granted = fits
        local unit = ''
        if r == 3 then unit = ' MiB' end
        out.note = string.format('%s quota of owner %s is %d%s: %d%s in use by its other clusters, %d%s per '
          .. 'worker; %d of the %d workers asked fit', what[r], owner, limit, unit, used[r + 1], unit,
          per[r], unit, fits, n)
      end
    end
  end
  if out.granted < n and q.mode ~= 'grant' then out.refused = true end
  return out
end

local function quota_write(KEYS, ARGV, qt, granted)
  local q = qt.q
  local prev = redis.call('HGET', KEYS[2], 'q_owner')
  if prev and prev ~= qt.owner then
    redis.call('HDEL', q.prefix .. prev, ARGV[1])
    if redis.call('HLEN', q.prefix .. prev) == 0 then redis.call('SREM', q.owners, prev) end
  end
  redis.call('HSET', KEYS[2], 'q_owner', qt.owner, 'q_cost', cjson.encode(qt.cost))
  redis.call('HSET', q.prefix .. qt.owner, ARGV[1],
             string.format('%d %d %d %d', granted, qt.cost[1], qt.cost[2], qt.cost[3]))
  redis.call('SADD', q.owners, qt.owner)
  if qt.note ~= '' then redis.call('HSET', KEYS[2], 'quota_note', qt.note)
  else redis.call('HDEL', KEYS[2], 'quota_note') end
end
"""

#: the delete script's part: forget the cluster's entry (KEYS[1] its hash, ARGV[4] the quota prefix,
#: ARGV[5] the owners set)
QUOTA_RELEASE_LUA = r"""
local q_owner = redis.call('HGET', KEYS[1], 'q_owner')
if q_owner and ARGV[4] then
  redis.call('HDEL', ARGV[4] .. q_owner, ARGV[3])
  if redis.call('HLEN', ARGV[4] .. q_owner) == 0 then redis.call('SREM', ARGV[5], q_owner) end
end
"""


class QuotaExceeded(ValidationError):
    """A request that would pass an owner's quota, refused (QUOTA_MODE=refuse): nothing was recorded.
    str() is one line naming the cluster and the limit."""

    def __init__(self, cluster: str, note: str, granted: int):
        self.cluster, self.note, self.granted = cluster, note, granted
        ValueError.__init__(self, f"cluster {cluster}: refused: {note}")
        self.field, self.value, self.reason = "quota", cluster, note


class OwnerMismatch(Exception):
    """The quota argument was computed for another owner than the cluster's (`owner`); nothing written."""

    def __init__(self, owner: str):
        super().__init__(owner)
        self.owner = owner


def quota_arg(owner: str | None, limits: dict[str, int] | None, cost: tuple[int, int, int] | None,
              mode: str = "refuse", default: str = "-") -> str:
    """The record script's quota argument (JSON). `owner` None with `limits` None: count only (no check,
    for any owner: deletes and requests already checked at enqueue); `cost` None: the cluster's recorded
    per-worker use (cores, memory MiB, gpus)."""
    return json.dumps({
        "owner": owner, "default": default, "mode": mode,
        "limits": [int((limits or {}).get(r, 0)) for r in RESOURCES],
        "cost": list(cost) if cost is not None else None,
        "prefix": keys.quota_prefix(), "owners": keys.quota_owners(), "clusters": keys.cluster(""),
    })


class QuotaStore:
    """The quota part of `state.Store` (needs `self.r`): what each owner's clusters use."""

    def quota_use(self, owners: list[str] | None = None) -> dict[str, dict]:
        """{owner: {"clusters": n, "workers": n, "cores": n, "memory": MiB, "gpus": n, "members": {cluster:
        workers}}} over the owners (default: every owner with a recorded cluster); one or two round trips."""
        if owners is None:
            owners = sorted(self.r.smembers(keys.quota_owners()))
        pipe = self.r.pipeline(transaction=False)
        for owner in owners:
            pipe.hgetall(keys.quota(owner))
        out = {}
        for owner, entries in zip(owners, pipe.execute()):
            use = {r: 0 for r in RESOURCES}
            members = {}
            for cluster, value in (entries or {}).items():
                try:
                    w, c, m, g = (int(x) for x in value.split())
                except ValueError:
                    continue
                members[cluster] = w
                use["clusters"] += 1
                use["workers"] += w
                use["cores"] += w * c
                use["memory"] += w * m
                use["gpus"] += w * g
            out[owner] = {**use, "members": members}
        return out
