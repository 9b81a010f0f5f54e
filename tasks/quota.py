"""Quotas per owner for the entry points: the quota argument a request is recorded with (this process's
QUOTA_* settings and quota file, `htdask.settings.quota`), each worker's use of a cluster's job options,
and use against quota per owner for `htdask status`, the status page and the metrics.

The check itself is in the script that records the request (`htdask.state.quota`), atomic across every
process that enqueues.
"""
from __future__ import annotations

import functools
import json
import logging

from htdask.domain import validation
from htdask.domain.joboptions import job_spec_inputs
from htdask.domain.jobspec import WorkerJobSpec, worker_submit_description
from htdask.settings.quota import RESOURCES
from htdask.state.quota import quota_arg
from tasks.config import settings

log = logging.getLogger(__name__)

#: a scheduler address for rendering a description only to read its resources
_ANY_ADDRESS = "tcp://127.0.0.1:8786"


def worker_cost(options: dict | None) -> tuple[int, int, int]:
    """(request_cpus, request_memory in MiB, request_gpus) of one worker job with these options over the
    site's defaults, read from its rendered submit description; ValidationError for bad options."""
    return _cost(json.dumps(options or {}, sort_keys=True, default=str))


@functools.lru_cache(maxsize=256)
def _cost(options_json: str) -> tuple[int, int, int]:
    # the cluster's own scheduler address wins over the site's; either only fills in the description
    opts = job_spec_inputs(json.loads(options_json),
                           scheduler_address=settings().dask_scheduler_address or _ANY_ADDRESS)
    d = worker_submit_description(WorkerJobSpec(cluster="quota", owner="nobody", **opts), [(0, "quota-0")])
    return int(d["request_cpus"]), int(d["request_memory"]), int(d.get("request_gpus") or 0)


def limits_for(owner: str) -> dict[str, int]:
    """`owner`'s limits by this process's settings (0 = unlimited); ValidationError naming the quota file
    when it became unreadable or malformed since the process started (the request is refused)."""
    try:
        return settings().quota.limits_for(owner)
    except ValueError as e:
        raise validation.ValidationError("QUOTA_FILE", settings().quota.quota_file, str(e)) from None


def quota_for(options: dict | None):
    """The record script's quota argument for a request with these job options (None: the cluster's
    recorded ones, or the site's defaults for a new cluster): a function of the owner, as
    `Store.record_scale_request` takes it."""
    s = settings()
    cost = worker_cost(options)
    default = s.default_owner or "-"
    if not s.quota.enabled:
        return lambda owner: quota_arg(None, None, cost, default=default)  # counted, nothing to check
    return lambda owner: quota_arg(owner, limits_for(owner), cost, s.quota.quota_mode, default)


def usage_rows(store) -> list[dict]:
    """One row per owner with a recorded cluster: {"owner", "clusters", "workers", "cores", "memory" (MiB),
    "gpus", "limits": {resource: limit, 0 = unlimited}, "over": [resources at or over their limit]}."""
    rows = []
    for owner, use in store.quota_use().items():
        try:
            limits = limits_for(owner)
        except validation.ValidationError as e:
            log.warning("quota of owner %s unknown: %s", owner, e)
            limits = {r: 0 for r in RESOURCES}
        rows.append({"owner": owner, **{r: use[r] for r in RESOURCES}, "limits": limits,
                     "over": [r for r in RESOURCES if limits[r] and use[r] >= limits[r]]})
    return rows


def format_usage(rows: list[dict]) -> str:
    """`htdask status`'s quota table: use/limit per owner (`-` = unlimited)."""
    if not rows:
        return ""
    head = ["OWNER", "CLUSTERS", "WORKERS", "CORES", "MEMORY(MiB)", "GPUS"]
    table = [head] + [[row["owner"]] + [f"{row[r]}/{row['limits'][r] or '-'}" for r in RESOURCES] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table)
