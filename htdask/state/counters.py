"""Worker names and the held-job policy's counts: the per-cluster index counter (one INCRBY per
submission), submits in flight, names submitted, and releases of held jobs.

Fencing: indexes are reserved only by the holder of the cluster's lease, checked in the same script
(the lease's token is the fencing token), so a holder that lost its lease (stalled past LOCK_TTL: a GC
pause, SIGSTOP, swap) reserves nothing. The reservation is recorded as a submit in flight until the
condor_submit that uses it has exited (`submit_done`); the counter of a cluster without jobs restarts at
0 only when no submit of it is in flight. A holder that died or stalled in condor_submit leaves its entry:
that submit may still commit, so its names are never handed out again (a worker name is never on two
live jobs).
"""
from __future__ import annotations

from htdask.state import keys

# KEYS: counter, the cluster's lock, its submits in flight; ARGV: n, floor, the lock's token, '1' when the
# cluster has no job in the queue. Unless the lock holds our token (-1): restart an empty cluster's counter
# at 0 when no submit of it is in flight, raise it to `floor`, reserve n indexes, record them as in flight
# under our token. Returns the counter after the reservation. One round trip, atomic.
_RESERVE = """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return -1 end
if ARGV[4] == '1' and redis.call('HLEN', KEYS[3]) == 0 then redis.call('SET', KEYS[1], 0) end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[2])
if cur < floor then redis.call('SET', KEYS[1], floor) end
local last = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[3], string.format('%d+%d', last - tonumber(ARGV[1]), tonumber(ARGV[1])))
return last
"""


class LeaseLost(Exception):
    """The cluster's lease is no longer ours (it expired while we were stalled): act on nothing."""

    def __init__(self, cluster: str):
        super().__init__(f"cluster {cluster}: lease lost (expired while this holder was stalled); "
                         f"its current holder reconciles it")
        self.cluster = cluster



class CounterStore:
    """The counters part of `state.Store` (needs `self.r`)."""

    SCRIPTS = {"_reserve": _RESERVE}

    def reserve_indexes(self, name: str, n: int, token, floor: int = 0, empty: bool = False) -> int:
        """Reserve n consecutive worker indexes with one INCRBY for a submit in flight; returns the first.

        `token` is the token of the cluster's lease (`cluster_lock(name).local.token`): LeaseLost, and
        nothing changed, when the lease is no longer ours. `floor` (the highest index seen in the queue +
        1) is applied first, so a counter lost with Redis's data never hands out a name that a live job
        still carries. `empty` (no job of the cluster in the queue): start again at index 0, unless a
        submit of the cluster is in flight (it may still commit). Call `submit_done` once the submit ends.
        """
        last = int(self._reserve(keys=[keys.counter(name), keys.lock(name), keys.submitting(name)],
                                 args=[n, floor, token, "1" if empty else "0"]))
        if last < 0:
            raise LeaseLost(name)
        return last - n

    def submit_done(self, done: list[tuple[str, object, list[str] | None]]) -> None:
        """Submits that ended (their condor_submit exited, or never ran), one round trip: for each
        (cluster, lease token, names submitted of a named-worker cluster or None), its entry in flight is
        cleared and the names recorded as submitted."""
        if not done:
            return
        pipe = self.r.pipeline(transaction=False)
        for name, token, names in done:
            pipe.hdel(keys.submitting(name), token)
            if names:
                pipe.sadd(keys.submitted(name), *names)
        pipe.execute()

    def submits_in_flight(self, name: str) -> dict[str, str]:
        """The cluster's submits in flight: lease token -> 'first+count' of the indexes reserved."""
        return self.r.hgetall(keys.submitting(name))

    def lease_held(self, name: str, token) -> bool:
        """Whether the cluster's lease still holds `token` (checked right before acting on the schedd)."""
        value = self.r.get(keys.lock(name))
        return value is not None and self.r.get_encoder().encode(value) == token

    def leases_held(self, pairs: list[tuple[str, object]]) -> list[bool]:
        """`lease_held` of many (cluster, token) pairs in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for name, _ in pairs:
            pipe.get(keys.lock(name))
        enc = self.r.get_encoder()
        return [v is not None and enc.encode(v) == t for v, (_, t) in zip(pipe.execute(), pairs)]

    def submitted_names(self, name: str) -> set[str]:
        return self.r.smembers(keys.submitted(name))

    def mark_submitted(self, name: str, worker_names: list[str]) -> None:
        if worker_names:
            self.r.sadd(keys.submitted(name), *worker_names)

    def counter(self, name: str) -> int:
        return int(self.r.get(keys.counter(name)) or 0)

    def reset_counter(self, name: str) -> None:
        self.r.set(keys.counter(name), 0)

    def count_release(self, name: str, job_name: str) -> int:
        return int(self.r.hincrby(keys.holds(name), job_name, 1))

    def releases(self, name: str, job_name: str) -> int:
        return int(self.r.hget(keys.holds(name), job_name) or 0)

    def forget_releases(self, name: str, job_names: list[str]) -> None:
        if job_names:
            self.r.hdel(keys.holds(name), *job_names)
