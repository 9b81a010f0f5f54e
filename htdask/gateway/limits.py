"""Idle and lifetime limits of Dask Gateway clusters (issue 27 item 2), the gateway's part.

- **Idle**: dask-gateway's own `idle_timeout` (HTCondorClusterConfig; default IDLE_TIMEOUT, at most
  IDLE_TIMEOUT_MAX): the scheduler's gateway service reads its idleness and stops the cluster through the
  gateway API; our scheduler preload (htdask/gateway/scheduler_hooks.py) first sends a heartbeat saying so,
  and `on_heartbeat` records why.
- **Lifetime**: `max_lifetime` (HTCondorClusterConfig; default MAX_LIFETIME, at most MAX_LIFETIME_MAX),
  checked at each heartbeat of a running cluster against its start (`cluster.start_time`, the gateway's own
  clock, compared with the same clock): past it, the cluster is stopped through dask-gateway's normal stop
  (`backend.stop_cluster`, whose `do_stop_cluster` deletes its jobs through the controller).

Either way the reason is recorded where `htdask status`, the status page and
`htdask_clusters_culled_total{schedd, reason}` read it (`Store.cull`), as for CLI and operator clusters, whose limits
the controller's pass enforces (tasks/limits.py; it leaves gateway clusters to the gateway).
"""
from __future__ import annotations

import asyncio
import logging
import time

from htdask.domain import limits
from htdask.gateway.scheduler_hooks import STOP_KEY

log = logging.getLogger(__name__)


class GatewayLimits:
    """The limits of one gateway's clusters; `backend` is the HTCondorBackend (its store and stop_cluster)."""

    def __init__(self, backend):
        self.backend = backend
        self.stopping: set[str] = set()

    async def on_heartbeat(self, cluster, msg: dict) -> None:
        """A running cluster's heartbeat (`msg` without STOP_KEY afterwards): record an idle stop the
        scheduler announces, stop the cluster once its maximum lifetime passed."""
        stop = msg.pop(STOP_KEY, None)
        if cluster is None or cluster.name in self.stopping:
            return
        if isinstance(stop, dict) and stop.get("reason") == "idle":
            timeout = float(stop.get("idle_timeout") or cluster.config.get("idle_timeout") or 0)
            detail = f"idle for {limits.text(timeout)} (idle timeout {limits.text(timeout)})"
            self.stopping.add(cluster.name)
            await self._record(cluster.name, "idle", detail)
            return  # the scheduler's own stop request follows
        lifetime = float(cluster.config.get("max_lifetime") or 0)
        age = time.time() - cluster.start_time / 1000 if cluster.start_time else 0.0
        if lifetime and age >= lifetime:
            self.stopping.add(cluster.name)
            await self._record(cluster.name, "lifetime",
                               f"{limits.text(round(age))} old (maximum lifetime {limits.text(lifetime)})")
            asyncio.ensure_future(self._stop(cluster.name))

    async def _record(self, name: str, reason: str, detail: str) -> None:
        log.warning("cluster %s: %s: stopping it", name, detail)
        try:
            await asyncio.to_thread(self.backend.store.cull, name, reason, detail, None, self.backend.schedd)
        except Exception as exc:  # the stop matters more than its record
            log.error("cluster %s: could not record why it stops (%s): %s", name, detail, exc)

    async def _stop(self, name: str) -> None:
        try:
            await self.backend.stop_cluster(name)
        except Exception as exc:
            log.error("cluster %s: stop after its maximum lifetime failed: %s", name, exc)
            self.stopping.discard(name)

    def forget(self, name: str) -> None:
        self.stopping.discard(name)


def options_fields():
    """dask-gateway option fields for a site's `cluster_options`: `idle_timeout` and `max_lifetime` as
    durations (`30m`, `2h`, seconds; empty: the site's default). Map them with `options_config`."""
    from dask_gateway_server.options import String
    return [String("idle_timeout", default="", label="Idle timeout (e.g. 30m; empty: the site's default)"),
            String("max_lifetime", default="", label="Maximum lifetime (e.g. 8h; empty: the site's default)")]


def options_config(options) -> dict[str, float]:
    """The HTCondorClusterConfig values of the chosen `idle_timeout`/`max_lifetime` options, in seconds (those
    left empty are absent); a bad duration raises ValidationError (the client sees its one line). The site's
    maxima are checked by HTCondorClusterConfig."""
    return limits.requested({k: options.get(k) or None for k in limits.KINDS}, {})


def cluster_options():
    """The shipped gateway's `cluster_options`: the limits alone (a site that defines its own options adds
    `options_fields()` to them and `options_config(options)` to its handler's result)."""
    from dask_gateway_server.options import Options
    return Options(*options_fields(), handler=lambda options, user: options_config(options))
