"""Worker names and the held-job policy's counts: the per-cluster index counter (one INCRBY per
submission), names submitted, and releases of held jobs."""
from __future__ import annotations

from state import keys

# Raise the counter to `floor` when it is lower, then reserve n indexes: one round trip, atomic.
_RESERVE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[2])
if cur < floor then redis.call('SET', KEYS[1], floor) end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""



class CounterStore:
    """The counters part of `state.Store` (needs `self.r`)."""

    SCRIPTS = {"_reserve": _RESERVE}

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

    def count_release(self, name: str, job_name: str) -> int:
        return int(self.r.hincrby(keys.holds(name), job_name, 1))

    def releases(self, name: str, job_name: str) -> int:
        return int(self.r.hget(keys.holds(name), job_name) or 0)

    def forget_releases(self, name: str, job_names: list[str]) -> None:
        if job_names:
            self.r.hdel(keys.holds(name), *job_names)
