"""Per-node and per-schedd coordination: the schedd call throttle, queue consumers' heartbeats and the
e-mail → Unix user cache."""
from __future__ import annotations

import time

from state import keys


class NodeStore:
    """The throttle/consumers/identity part of `state.Store` (needs `self.r`)."""

    SCRIPTS: dict = {}

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
        """Announce that `worker` consumes `queues` now (one round trip); old entries age out after `ttl`."""
        now = time.time()
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
        """Workers that announced consuming `queue` within the last `max_age` seconds."""
        return self.r.zrangebyscore(keys.consumers(queue), time.time() - max_age, "+inf")

    # ---- identity cache (owners issue) ----------------------------------------------------------
    def cached_identity(self, email: str) -> str | None:
        return self.r.get(keys.identity(email))

    def cache_identity(self, email: str, user: str, ttl: int) -> None:
        self.r.set(keys.identity(email), user, ex=ttl)

