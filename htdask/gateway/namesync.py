"""Debounced "these are the workers this cluster wants" requests, one per burst.

The gateway starts (and stops) workers one by one, from up to `parallelism` reconciler coroutines at
once. Each call asks for a sync of its cluster and waits for it; the first ask of a burst waits
`window` seconds, then ONE request carries the cluster's full set of wanted names (computed at that
moment, so it includes every worker asked for meanwhile). Syncs of one cluster never overlap, so
requests reach the queue in order (each takes a newer sequence number).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


class NameSync:
    """Coalesces sync requests of one cluster; `send` does the actual request."""

    def __init__(self, cluster: str, send: Callable[[], Awaitable[None]], window: float):
        self.cluster = cluster
        self._send = send
        self.window = window
        self._next: asyncio.Future | None = None  # the sync that new asks join
        self._lock = asyncio.Lock()  # one send at a time
        self.sends = 0

    async def sync(self) -> None:
        """Return once a request sent after this call started has been enqueued (or raise its error)."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            asyncio.ensure_future(self._run(self._next))
        await asyncio.shield(self._next)

    async def _run(self, fut: asyncio.Future) -> None:
        try:
            await asyncio.sleep(self.window)
            async with self._lock:
                if self._next is fut:
                    self._next = None  # asks from now on join the next sync
                await self._send()
                self.sends += 1
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            if self._next is fut:
                self._next = None
            if not fut.done():
                fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if not fut.done():
                fut.set_result(None)

    async def drain(self) -> None:
        """Wait for the sync in progress and any pending one (before the cluster is deleted)."""
        while self._next is not None:
            try:
                await asyncio.shield(self._next)
            except Exception:  # the waiter that asked for it reports the error
                pass
        async with self._lock:
            pass
