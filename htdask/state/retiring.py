"""Jobs whose workers a scale-down is retiring through their Dask scheduler (tasks/removal.py).

Retirement runs off the round's path, so the jobs stay in the queue for up to RETIRE_TIMEOUT while the
cluster is reconciled again. Each is marked here (`retiring:<name>`: job id → "<token> <deadline ms>",
deadline on Redis's clock): a reconcile does not count a marked job among the cluster's workers (it is
leaving), and the retirement removes the jobs it marked, unless their deadline has passed (its process
died, or it was late): then the marks are dead, the jobs count again, and the next reconcile decides anew.
"""
from __future__ import annotations

from htdask.state import keys

# KEYS[1] the hash; ARGV[1] token, ARGV[2] lifetime ms, ARGV[3..] job ids. Deadline on Redis's clock.
_MARK = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
local value = ARGV[1] .. ' ' .. deadline
for i = 3, #ARGV, 1000 do
  local args = {}
  for j = i, math.min(i + 999, #ARGV) do args[#args + 1] = ARGV[j]; args[#args + 1] = value end
  redis.call('HSET', KEYS[1], unpack(args))
end
return deadline
"""

# Take back the marks of one retirement (token ARGV[1]) that are still live; returns their job ids.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local mine, dead = {}, {}
for i = 1, #all, 2 do
  local token, deadline = string.match(all[i + 1], '^(%S+) (%d+)$')
  if token == ARGV[1] then
    if tonumber(deadline) > now then mine[#mine + 1] = all[i] end
    dead[#dead + 1] = all[i]
  end
end
for i = 1, #dead, 1000 do redis.call('HDEL', KEYS[1], unpack(dead, i, math.min(i + 999, #dead))) end
return mine
"""


class RetiringStore:
    """The retiring part of `state.Store` (needs `self.r`)."""

    SCRIPTS = {"_mark_retiring": _MARK, "_claim_retiring": _CLAIM}

    def mark_retiring(self, name: str, token: str, job_ids: list[str], lifetime: float) -> None:
        """Mark the cluster's jobs `job_ids` as being retired by `token` for `lifetime` seconds."""
        if job_ids:
            self._mark_retiring(keys=[keys.retiring(name)], args=[token, int(lifetime * 1000), *job_ids])

    def retiring(self, names: list[str]) -> dict[str, set[str]]:
        """Job ids with a live retiring mark, per cluster (one round trip); clusters without any left out."""
        if not names:
            return {}
        pipe = self.r.pipeline(transaction=False)
        pipe.time()  # the deadlines are on Redis's clock
        for n in names:
            pipe.hgetall(keys.retiring(n))
        (sec, usec), *marks = pipe.execute()
        now = sec * 1000 + usec // 1000
        out = {}
        for n, fields in zip(names, marks):
            ids = {job_id for job_id, value in fields.items() if _deadline(value) > now}
            if ids:
                out[n] = ids
        return out

    def claim_retiring(self, name: str, token: str) -> list[str]:
        """Drop the marks of retirement `token`; returns the job ids whose mark was still live (to remove)."""
        return list(self._claim_retiring(keys=[keys.retiring(name)], args=[token]))


def _deadline(value) -> int:
    """The deadline (ms, Redis's clock) of a mark "<token> <deadline ms>"; 0 for an unreadable one."""
    value = value.decode() if isinstance(value, bytes) else str(value)
    _, _, deadline = value.rpartition(" ")
    return int(deadline) if deadline.isdigit() else 0
