"""A cluster's job options: the fields of `workers.jobspec.WorkerJobSpec` a request may set."""
from __future__ import annotations

import os

from workers import validation
from workers.jobspec import WorkerJobSpec, worker_submit_description


def job_options(options: dict) -> dict:
    """A cluster's job options with the site default scheduler address (DASK_SCHEDULER_ADDRESS)."""
    return {"scheduler_address": os.environ.get("DASK_SCHEDULER_ADDRESS", ""), **(options or {})}


def check_job_options(cluster: str, options: dict) -> None:
    """Reject options a worker job could not be described with, before anything is enqueued."""
    fields = set(WorkerJobSpec.__dataclass_fields__) - {"cluster", "owner"}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise validation.ValidationError("job option", unknown[0], f"is not one of {sorted(fields)}")
    opts = job_options(options)
    if not opts["scheduler_address"]:
        raise validation.ValidationError("scheduler address", "", "give --scheduler or set DASK_SCHEDULER_ADDRESS")
    worker_submit_description(WorkerJobSpec(cluster=cluster, owner="nobody", **opts), [(0, f"{cluster}-0")])
