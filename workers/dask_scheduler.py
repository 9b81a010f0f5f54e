"""Which workers are connected to each Dask scheduler: one bounded `identity` call per scheduler.

The poller asks every scheduler of a cluster with running jobs, at most once per poll, all at once
(asyncio), each call bounded by `timeout` and the whole by `total` seconds, so a scheduler that is gone
(nothing listens: refused at once) or hangs (accepts and never answers) never holds up a poll. The
call is distributed's own rpc to the scheduler's `identity` handler (what `Client.scheduler_info()`
uses); only plain `tcp://` addresses are asked (other schemes need credentials the controller does
not hold: they are reported as not asked).
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


@dataclass
class SchedulerView:
    """What one scheduler said: the names of its connected workers, or why it could not be asked."""

    address: str
    names: frozenset[str] | None = None  # None: unknown (see error)
    error: str | None = None  # 'unreachable: ...', 'no answer within 1s', 'not asked: tls:// needs credentials'


async def _identity(address: str, timeout: float) -> SchedulerView:
    from distributed.core import rpc
    parts = urlsplit(address)
    try:  # a plain TCP connect first: a refused one answers at once (distributed's connect retries until timeout)
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), timeout)
        writer.close()
    except asyncio.TimeoutError:
        return SchedulerView(address, error=f"no answer within {timeout:g}s")
    except (OSError, ValueError) as exc:
        errno = getattr(exc, "errno", None)
        return SchedulerView(address, error=f"unreachable: {os.strerror(errno).lower() if errno else exc}")
    try:
        async with rpc(address, timeout=timeout, connection_args={}) as scheduler:
            info = await asyncio.wait_for(scheduler.identity(n_workers=-1), timeout)
    except asyncio.TimeoutError:
        return SchedulerView(address, error=f"no answer within {timeout:g}s")
    except Exception as exc:  # refused (OSError, CommClosedError), a handler error
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return SchedulerView(address, error=f"unreachable: {text[:200]}")
    workers = info.get("workers") if isinstance(info, dict) else None
    if not isinstance(workers, dict):
        return SchedulerView(address, error="identity answer without workers")
    return SchedulerView(address, frozenset(str(w.get("name")) for w in workers.values()
                                            if isinstance(w, dict) and w.get("name") is not None))


async def _all(addresses: list[str], timeout: float, total: float) -> dict[str, SchedulerView]:
    tasks = {a: asyncio.ensure_future(_identity(a, timeout)) for a in addresses}
    await asyncio.wait(tasks.values(), timeout=total)
    out = {}
    for address, task in tasks.items():
        if task.done():
            out[address] = task.result()
        else:
            task.cancel()
            out[address] = SchedulerView(address, error=f"no answer within {total:g}s")
    return out


def connected_workers(addresses, timeout: float = 1.0, total: float = 2.0) -> dict[str, SchedulerView]:
    """{address: SchedulerView} for these scheduler addresses; never longer than about `total` seconds."""
    asked = sorted({a for a in addresses if a.startswith("tcp://")})
    out = {a: SchedulerView(a, error=f"not asked: {a.split('://')[0]}:// needs credentials")
           for a in set(addresses) - set(asked)}
    if asked:
        try:
            out.update(asyncio.run(_all(asked, timeout, total)))
        except RuntimeError as exc:  # called inside a running event loop: skip, the next poll asks again
            log.warning("schedulers not asked for their workers: %s", exc)
    return out
