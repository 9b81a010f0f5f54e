"""The hand-over of a schedd's batch lock between reconcile rounds, traceable to Celery task ids.

The batch lock's token is `<host>:<pid>:<task id>` (`holder_token(task_id)`): the task whose round the
lock stands for. A round swaps the token to name the task that will run the *next* round at the moment
it takes its batch of pending clusters, atomically. So a request that finds the lock busy reads, in
the token, exactly the task that will reconcile its cluster: the current round's task if it joined
before the batch was taken, else the next round's (`tasks.reconcile_pending`, sent with that id).
"""
from __future__ import annotations

from state import keys

# KEYS: batch lock, pending set. ARGV: our token, the next round's token, batch size.
# Returns {1 if the lock was ours and now names the next round (else 0), the clusters popped}.
_START_ROUND = """
local swapped = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  swapped = 1
end
return {swapped, redis.call('SPOP', KEYS[2], tonumber(ARGV[3]))}
"""

# KEYS: batch lock, pending set. ARGV: our token. 1 = released (nothing pending), 0 = kept (clusters are
# pending: hand it over), -1 = not ours any more (expired).
_RELEASE_UNLESS_PENDING = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

RELEASED, KEPT, LOST = 1, 0, -1


def holder_task(token: str | None) -> str | None:
    """The Celery task id a batch lock's token names, or None (a token without one)."""
    if not token:
        return None
    parts = token.split(":", 2)
    return parts[2] if len(parts) == 3 and "-" in parts[2] else None


def start_round(store, schedd: str, lock, next_token: str, count: int) -> list[str]:
    """Pop up to `count` pending clusters of the schedd and, in the same atomic step, make the held
    batch `lock` name the next round (`next_token`); the lock keeps its token if it was lost."""
    script = store.r.register_script(_START_ROUND)
    swapped, batch = script(keys=[keys.batch_lock(schedd), keys.pending(schedd)],
                            args=[lock.local.token, next_token, count])
    if swapped:
        lock.local.token = store.r.get_encoder().encode(next_token)
    return list(batch or [])


def release_unless_pending(store, schedd: str, lock) -> int:
    """Release the held batch `lock` unless clusters are pending (atomic: a cluster that joins at the same
    time either finds the lock free or is left to our hand-over); RELEASED, KEPT or LOST."""
    script = store.r.register_script(_RELEASE_UNLESS_PENDING)
    out = int(script(keys=[keys.batch_lock(schedd), keys.pending(schedd)], args=[lock.local.token]))
    if out != KEPT:
        lock.local.token = None
    return out
