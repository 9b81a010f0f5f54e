"""Scheduler preload, loaded after `dask_gateway.scheduler_preload`: report retired workers at once, and say
why when the cluster stops itself for being idle.

Upstream's gateway service tells the gateway about a worker that closed *as asked* (a retired one)
only with its next periodic heartbeat. Our workers are HTCondor jobs: a retired worker's job ends by
itself, and until the gateway drops that worker's name from the cluster's wanted names, the
controller could take the ended job for a lost one and submit it again. This preload makes the
scheduler send the heartbeat right after any worker leaves, so the gateway learns within a fraction
of a second. It is self-contained (imports nothing of ours) so that it can be given to
`dask scheduler --preload` as a file path on any host.

Idle timeout: upstream's gateway service reads the scheduler's idleness itself (no task processing for
`--dg-idle-timeout` seconds, by the scheduler's own clock) and asks the gateway to stop the cluster. Before
it does, this preload sends one more heartbeat carrying `STOP_KEY` ({"reason": "idle", "idle_timeout": s}),
so the gateway records why (htdask/gateway/limits.py) before its normal stop deletes the cluster's jobs.
"""
from __future__ import annotations

import asyncio
import logging

from distributed.diagnostics.plugin import SchedulerPlugin

logger = logging.getLogger("distributed.scheduler.htdask_gateway_hooks")

#: seconds after a worker left before the heartbeat is sent (lets several removals share one)
DELAYS = (0.2, 1.5)


class PromptClosedReport(SchedulerPlugin):
    name = "htdask-prompt-closed-report"

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def remove_worker(self, scheduler, worker, **kwargs):
        service = scheduler.services.get("gateway")
        if service is None:
            return
        loop = asyncio.get_event_loop()
        for delay in DELAYS:  # the second one covers a heartbeat that was in flight
            loop.call_later(delay, lambda: asyncio.ensure_future(_interrupt(service)))


async def _interrupt(service) -> None:
    try:
        await service.waiter.interrupt()
    except Exception:  # never disturb the scheduler
        logger.debug("could not interrupt the gateway heartbeat", exc_info=True)


#: the heartbeat key that tells the gateway why the cluster stops itself (htdask/gateway/limits.py)
STOP_KEY = "htdask_stop"


def report_idle_stop(service) -> None:
    """Make the gateway service's idle shutdown send a heartbeat with STOP_KEY first."""
    gateway = service.gateway
    heartbeat, shutdown = gateway.heartbeat, gateway.shutdown
    stop: dict = {}

    async def heartbeat_with_reason(msg):
        await heartbeat({**msg, STOP_KEY: dict(stop)} if stop else msg)

    async def shutdown_with_reason():
        stop.update(reason="idle", idle_timeout=service.idle_timeout)
        try:
            await service.heartbeat()
        except Exception:  # the stop matters more than its reason
            logger.warning("could not tell the gateway why the cluster stops", exc_info=True)
        await shutdown()

    gateway.heartbeat, gateway.shutdown = heartbeat_with_reason, shutdown_with_reason


def dask_setup(scheduler):
    scheduler.add_plugin(PromptClosedReport(scheduler))
    service = scheduler.services.get("gateway")
    if service is not None:
        report_idle_stop(service)
    logger.info("gateway hooks: retired workers are reported to the gateway at once; an idle stop says so")
