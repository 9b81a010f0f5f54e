"""A cluster's job options as a worker job's inputs (`htdask.domain.joboptions.job_spec_inputs`) with this
process's site defaults, and their check where requests enter."""
from __future__ import annotations

import functools
import json

from tasks.config import settings
from htdask.domain import validation
from htdask.domain.joboptions import job_spec_inputs
from htdask.domain.jobspec import WorkerJobSpec, worker_submit_description


def job_options(options: dict | None) -> dict:
    """The `WorkerJobSpec` inputs of a cluster's job options with the site's DASK_SCHEDULER_ADDRESS."""
    return job_spec_inputs(options, scheduler_address=settings().dask_scheduler_address)


def check_job_options(options: dict | None) -> None:
    """Reject options a worker job could not be described with, before anything is enqueued."""
    _check_options(json.dumps(options or {}, sort_keys=True), settings().dask_scheduler_address)


@functools.lru_cache(maxsize=256)
def _check_options(options_json: str, default_address: str) -> None:
    """Render one job with these options (cached: clusters share a few option sets)."""
    opts = job_spec_inputs(json.loads(options_json), scheduler_address=default_address)
    if not opts["scheduler_address"]:
        raise validation.ValidationError("scheduler address", "", "give --scheduler or set DASK_SCHEDULER_ADDRESS")
    worker_submit_description(WorkerJobSpec(cluster="check", owner="nobody", **opts), [(0, "check-0")])
