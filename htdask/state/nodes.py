"""Per-node and per-schedd coordination: the one clock (Redis `TIME`), the schedd call throttle, queue
consumers' heartbeats and the e-mail → Unix user cache.

Hosts' clocks may disagree (a submit node 30 s behind the CLI's host): every timestamp that another process
compares with its own "now" (heartbeats, poll times, errors, `--wait`'s start) is Redis' `TIME`, read by
`now()` or taken inside a script, never a host's `time.time()`."""
from __future__ import annotations

import time

from htdask.state import keys


# Workers of KEYS[1] that beat within the last ARGV[1] seconds of Redis' TIME.
_CONSUMERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
"""


class NodeStore:
    """The clock/throttle/consumers/identity part of `state.Store` (needs `self.r`)."""

    SCRIPTS: dict = {"_consumers": _CONSUMERS}

    # ---- the one clock --------------------------------------------------------------------------
    def now(self) -> float:
        """Redis' clock (`TIME`), epoch seconds: the clock every process compares shared timestamps with."""
        sec, usec = self.r.time()
        return sec + usec / 1e6

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
        """Announce that `worker` consumes `queues` now, by Redis' clock (`TIME`, then one pipeline); old
        entries age out after `ttl` seconds."""
        if not queues:
            return
        now = self.now()  # not a script: a worker's background writes stay out of others' EVALSHA counts
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
        """Workers that announced consuming `queue` within the last `max_age` seconds of Redis' clock."""
        return self._consumers(keys=[keys.consumers(queue)], args=[max_age])

    # ---- identity cache (owners issue) ----------------------------------------------------------
    def cached_identity(self, email: str) -> str | None:
        return self.r.get(keys.identity(email))

    def cache_identity(self, email: str, user: str, ttl: int) -> None:
        self.r.set(keys.identity(email), user, ex=ttl)

