"""Batched rounds: the schedd's pending set, its batch lock (a lease, `htdask.state.locks`) and two marks.

- `htdask:batchlock:<schedd>`: held while a round runs; its token is the Celery task id of the round.
- `htdask:roundqueued:<schedd>`: the id of the `reconcile_pending` task that runs the next round. A request
  finding it returns at once: its cluster is left to that task (`handled_by`, so Flower traces every
  request to the round that handled it), and requests gather behind it. Two phases, each backed by
  something that ends when its owner dies:
  - `r:<id>`, set when a round takes its batch (atomically with the SPOP): honoured only while the batch
    lock exists, i.e. while the round's lease is renewed. A round that died (SIGKILL, OOM, a lost host)
    leaves a mark that nothing honours once its lease has expired: the next request or poll takes the
    lock itself (nothing waits for a task that will never be sent);
  - `<id>`, set when the round ends with clusters pending and sends that task: honoured for a short TTL
    (`LOCK_TTL`), the time the task has to start. A task lost with a dead worker (prefetched, it comes
    back only after the visibility timeout) stops holding anyone up when the mark expires.
- `htdask:roundwatch:<schedd>`: armed (once) by a request or task that finds the lock held, or a sent task's
  mark: a watch task due when the lock would expire unrenewed (or the mark expire), so a holder or a sent
  task that died anywhere delays the clusters waiting on it by at most the lease TTL (a live holder ends its
  round and hands the clusters on itself; a watch that finds the lock free runs a round, empty or not).

No token passes between tasks: each round's task takes the lease anew.
"""
from __future__ import annotations

from htdask.state import keys
from htdask.state.locks import new_token

RELEASED, KEPT, LOST = 1, 0, -1

# The watch: armed once, for as long as `key` would live unrenewed (plus a margin): the held lock KEYS[2], or a
# sent task's queued mark KEYS[3] (a task prefetched by a worker that died comes back only after the visibility
# timeout: the watch stands in for it once its mark has expired).
_ARM_WATCH = """
local function arm(key)
  local ttl = redis.call('PTTL', key)
  if ttl > 0 and redis.call('SET', KEYS[4], '1', 'NX', 'PX', ttl + 1000) then return ttl end
  return -1
end
-- for a request left to a running round (the lock) or to a sent task (`queued`, its mark)
local function arm_for(queued)
  if redis.call('EXISTS', KEYS[2]) == 1 then return arm(KEYS[2]) end
  if queued then return arm(KEYS[3]) end
  return -1
end
"""
# The queued mark (KEYS[3]) as it counts: a round's `r:` mark only while the batch lock KEYS[2] exists (its
# round is alive), else it is void and deleted.
_QUEUED = """
local function queued_mark()
  local queued = redis.call('GET', KEYS[3])
  if queued and string.sub(queued, 1, 2) == 'r:' and redis.call('EXISTS', KEYS[2]) == 0 then
    redis.call('DEL', KEYS[3])
    return false
  end
  return queued
end
"""
# KEYS: pending set, batch lock, queued mark, watch mark; ARGV: cluster, token, TTL (ms).
# Join the pending set; take the lock unless it is held or a round is queued. Returns {1 if taken, ms after
# which the watch this call armed is due (else -1), the token of the task handling the cluster}.
_JOIN = _ARM_WATCH + _QUEUED + """
redis.call('SADD', KEYS[1], ARGV[1])
local queued = queued_mark()
if queued == ARGV[2] then  -- the task its request's enqueue named as the queued round (_ENQUEUE)
  redis.call('DEL', KEYS[3])
  queued = false
end
if not queued and redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {1, -1, ''} end
return {0, arm_for(queued), queued or redis.call('GET', KEYS[2]) or ''}
"""
# KEYS as _JOIN's; ARGV: cluster, the id of the scale task about to be sent for it, the queued mark's TTL (ms).
# A request joins the pending set where it enters (tasks.api): when no round runs or is queued, its own task
# is named as the queued round (the mark's `<id>` phase: honoured for the TTL, the time the task has to start;
# that task then takes the lock with _TAKE). Returns {1 if named, ms after which the watch this call armed is
# due (else -1), the id of the task handling the cluster ('' unknown)}.
_ENQUEUE = _ARM_WATCH + _QUEUED + """
redis.call('SADD', KEYS[1], ARGV[1])
local queued = queued_mark()
local held = redis.call('EXISTS', KEYS[2]) == 1
if not queued and not held then
  redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
  return {1, -1, ARGV[2]}
end
return {0, arm_for(queued), queued or redis.call('GET', KEYS[2]) or ''}
"""
# A round's task starts: KEYS as above plus KEYS[5], the mark it clears (the queued mark if it names the
# task, ARGV[4]; the watch mark when ARGV[4] is ''). Same reply as _JOIN; a busy lock re-arms the watch
# while clusters are pending.
_TAKE = _ARM_WATCH + """
if ARGV[4] == '' or redis.call('GET', KEYS[5]) == ARGV[4] then redis.call('DEL', KEYS[5]) end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {1, -1, ''} end
if redis.call('SCARD', KEYS[1]) == 0 then return {0, -1, ''} end
return {0, arm(KEYS[2]), redis.call('GET', KEYS[2]) or ''}
"""
# KEYS: pending set, batch lock, queued mark; ARGV: our token, the next round's task id, count, mark TTL
# (ms). Pop the batch and, if the lock is still ours, name the next round's task in the queued mark (its
# `r:` phase: honoured while our lease lives).
_START = """
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('SET', KEYS[3], 'r:' .. ARGV[2], 'PX', ARGV[4]) end
return redis.call('SPOP', KEYS[1], tonumber(ARGV[3]))
"""
# KEYS: pending set, batch lock, queued mark; ARGV: our token, the next round's task id, the queued mark's
# TTL (ms). Release the lock; when clusters are pending, the queued mark names that task for the TTL (KEPT:
# the caller sends it), else our mark is cleared. A lost lock clears our mark too.
_FINISH = """
local ours = redis.call('GET', KEYS[3]) == 'r:' .. ARGV[2]
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  if ours then redis.call('DEL', KEYS[3]) end
  return -1
end
redis.call('DEL', KEYS[2])
if redis.call('SCARD', KEYS[1]) > 0 then
  redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
  return 0
end
if ours then redis.call('DEL', KEYS[3]) end
return 1
"""
# KEYS: pending set, batch lock, queued mark; ARGV: task id, TTL (ms). Name a task as the queued round
# unless one is queued (a dead round's mark does not count). 1 if named.
_QUEUE = _QUEUED + """
if queued_mark() then return 0 end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
return 1
"""


def holder_task(token: str | None) -> str | None:
    """The Celery task id a batch lock's token or queued mark names, or None (a token without one)."""
    if token and token.startswith("r:"):
        token = token[2:]
    return token if token and "-" in token else None


class RoundStore:
    """The batched-round part of `state.Store` (needs `self.r`, `self.leases`)."""

    SCRIPTS = {"_join_round": _JOIN, "_take_round": _TAKE, "_start_round": _START, "_finish_round": _FINISH,
               "_queue_round": _QUEUE}

    def _round_keys(self, schedd: str) -> list[str]:
        return [keys.pending(schedd), keys.batch_lock(schedd), keys.round_queued(schedd), keys.round_watch(schedd)]

    def _taken(self, lock, token: str, out) -> tuple[bool, float | None, str | None]:
        taken, watch_ms, holder = out
        if taken:
            lock.local.token = self.r.get_encoder().encode(token)
            self.leases.keep(lock)
        return bool(taken), (int(watch_ms) / 1000.0 if int(watch_ms) >= 0 else None), holder_task(holder)

    def join_pending(self, schedd: str, name: str, lock, task_id: str | None = None):
        """Add a cluster to the schedd's pending set and take the batch lock `lock` (token: `task_id`)
        unless it is held or a round is queued, in one round trip. Returns (taken: then renewed until
        released; watch: None, or the seconds after which the caller sends the watch task this call armed;
        the id of the task that will handle the cluster, when not taken and known)."""
        token = task_id or new_token()
        return self._taken(lock, token, self._join_round(**self._join_call(schedd, name, lock, token)))

    def _join_call(self, schedd: str, name: str, lock, token: str) -> dict:
        """The keys and args of one call of the join script (for a pipeline of several calls)."""
        return {"keys": self._round_keys(schedd), "args": [name, token, int(lock.timeout * 1000)]}

    def start_queued_round(self, schedd: str, lock, task_id: str):
        """The queued task `task_id` starts: clear its mark and take the lock. Same reply as `join_pending`."""
        return self._take(schedd, lock, task_id, keys.round_queued(schedd), task_id)

    def watch_round(self, schedd: str, lock, task_id: str | None = None):
        """The watch task starts: clear the watch mark and take the lock if free; else, while clusters are
        pending, arm the watch again. Same reply as `join_pending`."""
        return self._take(schedd, lock, task_id or new_token(), keys.round_watch(schedd), "")

    def _take(self, schedd, lock, token, mark, mark_value):
        return self._taken(lock, token, self._take_round(keys=[*self._round_keys(schedd), mark],
                                                         args=["", token, int(lock.timeout * 1000), mark_value]))

    def start_round(self, schedd: str, lock, next_id: str, count: int, queued_ttl: float) -> list[str]:
        """Pop up to `count` pending clusters and, atomically, name task `next_id` as the next round's (the
        queued mark's `r:` phase, for at most `queued_ttl` s, honoured while `lock` lives) if `lock` is
        still ours."""
        return list(self._start_round(keys=self._round_keys(schedd)[:3],
                                      args=[lock.local.token, next_id, count, int(queued_ttl * 1000)]) or [])

    def finish_round(self, schedd: str, lock, next_id: str, queued_ttl: float) -> int:
        """Release the held batch `lock` (and stop renewing it), atomically with the check for pending
        clusters: KEPT (pending: the caller sends task `next_id`, named in the queued mark for `queued_ttl`
        s, the time it has to start), RELEASED or LOST (it had expired)."""
        self.leases.drop(lock)
        out = int(self._finish_round(keys=self._round_keys(schedd)[:3],
                                     args=[lock.local.token, next_id, int(queued_ttl * 1000)]))
        lock.local.token = None
        return out

    def queue_round(self, schedd: str, task_id: str, ttl: float) -> bool:
        """Name `task_id` as the queued round (for `ttl` s, the time it has to start); False when one is
        queued already (a dead round's mark does not count)."""
        return bool(self._queue_round(keys=self._round_keys(schedd)[:3], args=[task_id, int(ttl * 1000)]))

    def add_pending(self, schedd: str, *names: str) -> None:
        if names:
            self.r.sadd(keys.pending(schedd), *names)

    def pop_pending(self, schedd: str, count: int) -> list[str]:
        return self.r.spop(keys.pending(schedd), count) or []

    def has_pending(self, schedd: str) -> bool:
        return bool(self.r.scard(keys.pending(schedd)))

    def batch_state(self, schedd: str) -> tuple[int, bool]:
        """(clusters pending on the schedd, whether a round runs or is queued). A dead round's `r:` mark
        (its lock gone) counts as neither."""
        pipe = self.r.pipeline(transaction=False)
        pipe.scard(keys.pending(schedd))
        pipe.exists(keys.batch_lock(schedd))
        pipe.get(keys.round_queued(schedd))
        pending, held, queued = pipe.execute()
        return int(pending), bool(held) or bool(queued and not queued.startswith("r:"))

    def batches_done(self, schedd: str) -> bool:
        """True when no cluster waits on the schedd and no round runs or is queued."""
        return self.batch_state(schedd) == (0, False)
