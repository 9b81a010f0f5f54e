"""A cluster's job options as a worker job's inputs (`htdask.domain.joboptions.job_spec_inputs`) with this
process's site defaults, their check where requests enter, and the submit description they make."""
from __future__ import annotations

import functools
import json

from tasks import worker_logs
from tasks.config import settings
from htdask.domain import spool, validation
from htdask.domain.joboptions import job_spec_inputs
from htdask.domain.jobspec import WorkerJobSpec, worker_submit_description
from htdask.domain.submitdesc import SubmitDescription


def job_options(options: dict | None, log_dir: str | None = None) -> dict:
    """The `WorkerJobSpec` inputs of a cluster's job options over the site's defaults: DASK_SCHEDULER_ADDRESS
    and `log_dir` (None: none)."""
    return job_spec_inputs(options, scheduler_address=settings().dask_scheduler_address, log_dir=log_dir)


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


def describe(cluster: str, owner: str, options: dict, items, site, *, create: bool) -> SubmitDescription:
    """The submit description of `items` ((index, name) pairs) of `cluster`, exactly as the reconciler
    submits it (job options over the site defaults, the log directory under LOG_DIR unless given).

    `create`: make the log directory (the owner's) and put the worker start script into SPOOL_DIR, as
    a submission needs; False (`htdask scale --dry-run`) touches nothing."""
    # the log directory under LOG_DIR is a site default: the gateway gives its own (its staging directory)
    options = job_options(options, log_dir=worker_logs.cluster_dir(site.log_dir, cluster))
    if create:
        worker_logs.ensure_dir(options["log_dir"], owner)
        spool.install_start_script(site.spool_dir)
    spec = WorkerJobSpec(cluster=cluster, owner=owner, **options)
    return worker_submit_description(spec, items)
