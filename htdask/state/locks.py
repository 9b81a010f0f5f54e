"""Locks as leases: a short TTL, renewed by one watchdog thread per process while the holder works.

A lock's value is an opaque token (random, or the holder's Celery task id; never a host name or pid):
liveness is the lease itself. While a
process holds a lock, `LeaseKeeper` re-extends it to the full TTL every TTL/3 (redis-py's own
`Lock.reacquire` script, all held locks in one pipeline, off the caller's path). A holder that dies — SIGKILL,
OOM, a lost host, another PID namespace — stops renewing, and its lock frees itself within the TTL, on any
host. This is Redisson's "lock watchdog" and etcd/Kubernetes' Lease, on redis-py's `Lock`.

Batched rounds (the batch lock, queued and watch marks) are in `htdask.state.rounds`.
"""
from __future__ import annotations

import logging
import os
import threading
import uuid

import redis
from redis.exceptions import LockError, RedisError

from htdask.state import keys

log = logging.getLogger(__name__)

#: seconds a lock outlives a holder that stopped renewing it (the default of LOCK_TTL, htdask/settings/model.py)
DEFAULT_LEASE_TTL = 10.0


def new_token() -> str:
    """A lock token: random, naming no host or process (a lease needs neither)."""
    return uuid.uuid4().hex


class LeaseKeeper:
    """Renews every lock this process holds, every `ttl / 3` seconds, in one round trip, from a daemon thread.

    `keep` starts renewing a taken lock, `drop` stops (before or after releasing it). A lock whose renewal
    fails (expired: Redis was away for a whole TTL) is dropped with a warning; its holder finds out when it
    releases it. Fork-safe: a forked child (Celery's prefork pool) starts its own thread on first use.
    """

    def __init__(self, client: redis.Redis, ttl: float):
        self.r, self.ttl = client, ttl
        self._held: dict[int, object] = {}
        self._mutex = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def keep(self, *locks) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's thread, mutex and locks are not ours
            self._mutex, self._held, self._thread = threading.Lock(), {}, None
        with self._mutex:
            for lock in locks:
                self._held[id(lock)] = lock
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                self._pid, self._wake = os.getpid(), threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._wake,), name="lease-keeper",
                                                daemon=True)
                self._thread.start()

    def drop(self, *locks) -> None:
        with self._mutex:
            for lock in locks:
                self._held.pop(id(lock), None)

    def held(self) -> int:
        return len(self._held)

    def _run(self, wake: threading.Event) -> None:
        while not wake.wait(self.ttl / 3):
            if self._pid != os.getpid():
                return
            try:
                self.renew()
            except RedisError as err:  # Redis away: try again next period; the TTL covers two misses
                log.warning("could not renew %d lock leases: %s", len(self._held), err)

    def renew(self) -> None:
        """Extend every held lock to the full TTL now (one round trip)."""
        with self._mutex:
            held = [(lock, lock.local.token) for lock in self._held.values() if lock.local.token is not None]
        if not held:
            return
        pipe = self.r.pipeline(transaction=False)
        for lock, token in held:
            lock.lua_reacquire(keys=[lock.name], args=[token, int(self.ttl * 1000)], client=pipe)
        for (lock, _), renewed in zip(held, pipe.execute()):
            if not renewed and id(lock) in self._held:  # (not released meanwhile)
                log.warning("lock %s expired before its holder released it", lock.name)
                self.drop(lock)


# Many locks in one command (a round's clusters): KEYS the lock keys; ARGV[1] the token, ARGV[1 + i] key i's TTL
# (ms). Per key two numbers: 1 if taken (SET NX PX, as redis-py's Lock.acquire), else 0 and its PTTL (ms).
_TRY_LOCKS = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[i + 1]) then
    out[2 * i - 1], out[2 * i] = 1, 0
  else
    out[2 * i - 1], out[2 * i] = 0, redis.call('PTTL', key)
  end
end
return out
"""
# Release many locks (redis-py's Lock.release check, per key): KEYS the lock keys, ARGV[i] key i's token. Per key
# 1 if released, 0 if it was no longer ours (expired, maybe taken by another holder).
_RELEASE_LOCKS = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then redis.call('DEL', key); out[i] = 1 else out[i] = 0 end
end
return out
"""


class LockStore:
    """The lock and batched-round part of `state.Store` (needs `self.r`, `self.leases`, `self.metrics`)."""

    SCRIPTS: dict = {"_try_locks": _TRY_LOCKS, "_release_locks": _RELEASE_LOCKS}

    # ---- single locks ---------------------------------------------------------------------------
    def _lock(self, key: str):
        return self.r.lock(key, timeout=self.leases.ttl, thread_local=False)

    def cluster_lock(self, name: str):
        """The lease a reconcile or delete holds on one cluster (not yet taken)."""
        return self._lock(keys.lock(name))

    def batch_lock(self, schedd: str):
        """The lease held by the one task running a batched round on the schedd (not yet taken)."""
        return self._lock(keys.batch_lock(schedd))

    def poll_lock(self, schedd: str):
        """The lease held by the one poll of the schedd running (not yet taken)."""
        return self._lock(keys.poll_lock(schedd))

    def acquire(self, lock, blocking: bool = False, blocking_timeout: float | None = None) -> bool:
        """Take `lock` (redis-py `Lock.acquire`) and keep renewing it until `release`."""
        if not lock.acquire(blocking=blocking, blocking_timeout=blocking_timeout, token=new_token()):
            return False
        self.leases.keep(lock)
        return True

    def release(self, lock) -> bool:
        """Stop renewing and release `lock`; False (and a warning) when it had expired."""
        self.leases.drop(lock)
        if lock.local.token is None:
            return False
        try:
            lock.release()
            return True
        except LockError:
            log.warning("lock %s expired before release", lock.name)
            return False

    # ---- many locks in one round trip -----------------------------------------------------------
    def try_locks(self, locks: list) -> tuple[list, dict[str, float]]:
        """Take many redis-py locks (non-blocking) in one round trip, and keep renewing those taken.

        Returns the locks taken and, for the others, the seconds until each expires unless its holder
        renews it (at most the lease TTL; 0 if it just expired). A lock is taken exactly as
        `Lock.acquire(blocking=False)` takes it (SET NX PX of a new token) and carries the token
        afterwards, so it interoperates with locks taken one at a time; release with `release_locks`.
        """
        if not locks:
            return [], {}
        encoded = self.r.get_encoder().encode(new_token())
        out = self._try_locks(keys=[lock.name for lock in locks],
                              args=[encoded, *(int(lock.timeout * 1000) for lock in locks)])
        taken, holders = [], {}
        for i, lock in enumerate(locks):
            if out[2 * i]:
                lock.local.token = encoded
                taken.append(lock)
            else:
                holders[lock.name] = max(0, out[2 * i + 1]) / 1000.0
        self.leases.keep(*taken)
        return taken, holders

    def release_locks(self, locks: list) -> list:
        """Stop renewing and release locks in one round trip (one script: redis-py's release check per lock);
        returns those that had expired and are no longer ours."""
        self.leases.drop(*locks)
        pipe = self.r.pipeline(transaction=False)
        if locks:
            self._release_locks(keys=[lock.name for lock in locks], args=[lock.local.token for lock in locks],
                                client=pipe)
        for lock in locks:
            lock.local.token = None
        self.metrics.drain_into(pipe)  # the round's schedd calls, timed while the locks were held
        out = pipe.execute()
        released = out[0] if locks else []
        return [lock for lock, ok in zip(locks, released) if not int(ok)]
