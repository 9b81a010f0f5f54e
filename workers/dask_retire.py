"""Ask a Dask scheduler to retire workers before their jobs are removed (`Scheduler.retire_workers`).

A scale-down that `condor_rm`s running workers without telling their scheduler loses the results held
in their memory. Retiring first moves those results to the workers that stay, then closes the retired
workers (their jobs then end by themselves); the controller removes whatever job is left afterwards.
The scheduler is reached with distributed's own rpc (plain `tcp://`; other schemes need credentials the
controller does not hold, so their workers are removed without retirement, with a log line).
"""
from __future__ import annotations

import asyncio
import logging
import socket
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


class RetireFailed(Exception):
    """The scheduler could not be asked (unreachable, timeout, error); str() is one line."""


def reachable(address: str, timeout: float = 1.0) -> bool:
    """True when something listens at a tcp:// address (a quick probe: a scheduler that is gone costs no wait)."""
    parts = urlsplit(address)
    if parts.scheme != "tcp" or not parts.hostname or not parts.port:
        return False
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            return True
    except OSError:
        return False


async def _retire(address: str, names: list[str], timeout: float) -> dict:
    from distributed.core import rpc
    async with rpc(address, timeout=timeout) as scheduler:
        return await asyncio.wait_for(scheduler.retire_workers(names=names, close_workers=True, remove=True),
                                      timeout)


def retire(address: str, names: list[str], timeout: float) -> list[str]:
    """Retire the named workers (their data moved to the others, then closed); returns the names retired.

    Raises RetireFailed when the scheduler cannot be reached or does not finish within `timeout` seconds.
    """
    if not reachable(address):
        raise RetireFailed(f"scheduler {address} is not reachable over tcp")
    try:
        result = asyncio.run(_retire(address, list(names), timeout))
    except asyncio.TimeoutError:
        raise RetireFailed(f"scheduler {address} did not retire {len(names)} workers within {timeout:g}s") from None
    except Exception as exc:  # distributed's CommClosedError, OSError, a handler error
        raise RetireFailed(f"scheduler {address}: retire_workers failed: {exc}") from None
    return sorted(info.get("name") for info in (result or {}).values() if isinstance(info, dict))
