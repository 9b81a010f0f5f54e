"""Which workers are connected to each Dask scheduler (one bounded `identity` call per scheduler), and whether
it is idle (`check_idle`, for the idle limit: tasks/limits.py).

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


async def _unreachable(address: str, timeout: float) -> str | None:
    """Why a scheduler's address takes no TCP connection within `timeout` seconds, else None: a plain connect
    first, as a refused one answers at once (distributed's connect retries until its timeout)."""
    parts = urlsplit(address)
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), timeout)
        writer.close()
    except asyncio.TimeoutError:
        return f"no answer within {timeout:g}s"
    except (OSError, ValueError) as exc:
        errno = getattr(exc, "errno", None)
        return f"unreachable: {os.strerror(errno).lower() if errno else exc}"
    return None


async def _identity(address: str, timeout: float) -> SchedulerView:
    from distributed.core import rpc
    if (why := await _unreachable(address, timeout)) is not None:
        return SchedulerView(address, error=why)
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


async def _ask_all(asks: dict, total: float, unanswered) -> dict:
    """Every scheduler asked at once: `asks` address -> coroutine; what each answered within `total` seconds,
    else `unanswered(address, reason)` (its call cancelled)."""
    tasks = {a: asyncio.ensure_future(coro) for a, coro in asks.items()}
    await asyncio.wait(tasks.values(), timeout=total)
    out = {}
    for address, task in tasks.items():
        if task.done():
            out[address] = task.result()
        else:
            task.cancel()
            out[address] = unanswered(address, f"no answer within {total:g}s")
    return out


async def _all(addresses: list[str], timeout: float, total: float) -> dict[str, SchedulerView]:
    return await _ask_all({a: _identity(a, timeout) for a in addresses}, total,
                          lambda a, why: SchedulerView(a, error=why))


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


@dataclass
class Idleness:
    """What one scheduler said about its work (distributed's `Scheduler.check_idle`, the handler
    dask-kubernetes' idle check and /api/v1/check_idle call): idle since `idle_since` (the scheduler's own
    clock; None: tasks are processing, queued or unrunnable), or why it could not be asked (`error`)."""

    address: str
    idle_since: float | None = None
    error: str | None = None

    @property
    def idle(self) -> bool:
        return self.error is None and self.idle_since is not None


async def _check_idle(address: str, timeout: float, connection_args: dict) -> Idleness:
    from distributed.core import rpc
    if (why := await _unreachable(address, timeout)) is not None:
        return Idleness(address, error=why)
    try:
        async with rpc(address, timeout=timeout, connection_args=connection_args) as scheduler:
            since = await asyncio.wait_for(scheduler.check_idle(), timeout)
    except asyncio.TimeoutError:
        return Idleness(address, error=f"no answer within {timeout:g}s")
    except Exception as exc:  # refused, closed, TLS refused, a scheduler without the handler
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Idleness(address, error=f"unreachable: {text[:200]}")
    if since is not None and not isinstance(since, (int, float)):
        return Idleness(address, error=f"check_idle answered {type(since).__name__}")
    return Idleness(address, None if since is None else float(since))


async def _idle_all(targets: dict, timeout: float, total: float) -> dict[str, Idleness]:
    return await _ask_all({a: _check_idle(a, timeout, args) for a, args in targets.items()}, total,
                          lambda a, why: Idleness(a, error=why))


def tls_connection_args(cert: str, key: str, ca: str | None = None) -> dict:
    """distributed's client connection arguments for a `tls://` scheduler, from PEM files (the cluster's
    workers' own: `tls_cert`, `tls_key`, `tls_ca` of its job options; CA: the certificate, self-signed, as
    dask-gateway makes them). Raises OSError when a file cannot be read."""
    from distributed.security import Security
    for path in (cert, key, ca):
        if path:
            with open(path, "rb"):
                pass
    return Security(tls_ca_file=ca or cert, tls_client_cert=cert, tls_client_key=key,
                    require_encryption=True).get_connection_args("client")


def _targets(addresses) -> tuple[dict, dict[str, Idleness]]:
    """(address -> connection args to ask with, address -> why it is not asked): `addresses` is an iterable of
    addresses (plain `tcp://` ones are asked) or a mapping address -> connection args (None: tcp:// only)."""
    given = dict(addresses) if isinstance(addresses, dict) else {a: None for a in addresses}
    targets, skipped = {}, {}
    for address, args in given.items():
        if args is not None or address.startswith("tcp://"):
            targets[address] = args or {}
        else:
            skipped[address] = Idleness(address, error=f"not asked: {address.split('://')[0]}:// needs credentials")
    return targets, skipped


def idleness(addresses, timeout: float = 1.0, total: float = 2.0) -> dict[str, Idleness]:
    """{address: Idleness} for these schedulers, asked all at once, never longer than about `total` seconds.
    `addresses`: addresses, or a mapping address -> distributed's connection arguments (`tls_connection_args`;
    None: none). Without arguments only plain `tcp://` addresses are asked; the others are reported as not
    asked (credentials needed)."""
    targets, out = _targets(addresses)
    if targets:
        try:
            out.update(asyncio.run(_idle_all(targets, timeout, total)))
        except RuntimeError as exc:  # inside a running event loop: use `idleness_async`
            out.update({a: Idleness(a, error=f"not asked: {exc}") for a in targets})
    return out


async def idleness_async(addresses, timeout: float = 1.0, total: float = 2.0) -> dict[str, Idleness]:
    """`idleness` from inside an event loop (the gateway's)."""
    targets, out = _targets(addresses)
    if targets:
        out.update(await _idle_all(targets, timeout, total))
    return out
