"""A cluster's worker job options: the one mapping from a dask-gateway cluster config to them
(`worker_job_options`), and the one assembly of a worker job's inputs from them and the site's defaults
(`job_spec_inputs`, with `check_option_names`).

Both entry points that run Dask Gateway clusters call it: the gateway backend
(`htdask.gateway.backend.HTCondorBackend.job_options`, with its `ClusterConfig` as a mapping) and the
DaskCluster operator (`htdask.k8s_operator.handlers.worker_options`, with the resource's ``spec.config``).
The result is a dict of `htdask.domain.jobspec.WorkerJobSpec` fields; `tasks.api` validates it before
anything is enqueued.

Config keys read (dask-gateway's names): ``worker_threads`` -> ``nthreads``; ``worker_memory_limit``
(else ``worker_memory``, bytes) -> ``memory_limit``; ``worker_memory`` -> ``request_memory`` when a
limit is given apart (Kubernetes' request and limit; else the job requests its ``memory_limit``);
``worker_cores`` -> ``request_cpus`` (rounded up, at least 1); ``image`` -> ``docker_image`` in the
docker universe; ``docker_network`` -> ``docker_network``; ``apptainer_image`` -> universe ``container``
with ``container_image``; ``worker_gpus`` / ``worker_gpu_capability`` / ``worker_gpu_memory`` ->
``request_gpus`` / ``gpu_capability`` / ``gpu_memory``; ``worker_extra_submit`` -> ``extra_submit``;
``worker_job_options`` -> any further fields, applied last.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence


def worker_job_options(config: Mapping[str, Any], *, scheduler_address: str, api_url: str | None = None,
                       environment: Mapping[str, str] | None = None,
                       credentials: Mapping[str, str] | None = None,
                       worker_command: Sequence[str] | None = None, universe: str | None = None,
                       worker_port_range: str = "", nanny_port_range: str = "",
                       extra_submit: Mapping[str, str] | None = None) -> dict:
    """`WorkerJobSpec` fields for the workers of a cluster with this config.

    `credentials`: paths on the execute hosts (``tls_cert``, ``tls_key``, ``api_token``, optionally
    ``log_dir``); `extra_submit`: submit commands the entry point adds to the config's own.
    """
    opts: dict[str, Any] = {"scheduler_address": scheduler_address}
    if api_url:
        opts["api_url"] = api_url
    if worker_command:
        opts["worker_command"] = list(worker_command)
    if config.get("worker_threads"):
        opts["nthreads"] = int(config["worker_threads"])
    memory_limit = config.get("worker_memory_limit") or config.get("worker_memory")
    if memory_limit:
        opts["memory_limit"] = int(memory_limit)
    if config.get("worker_cores"):
        opts["request_cpus"] = max(1, math.ceil(float(config["worker_cores"])))
    if config.get("worker_memory_limit") and config.get("worker_memory"):  # request apart from the limit
        opts["request_memory"] = int(config["worker_memory"])
    if environment is not None:
        opts["environment"] = dict(environment)
    if universe:
        opts["universe"] = universe
        if universe == "docker" and config.get("image"):
            opts["docker_image"] = config["image"]
    if config.get("docker_network"):
        opts["docker_network"] = str(config["docker_network"]).lower()
    if config.get("apptainer_image"):
        opts["universe"] = "container"
        opts["container_image"] = config["apptainer_image"]
    if config.get("worker_gpus"):
        opts["request_gpus"] = int(config["worker_gpus"])
        if config.get("worker_gpu_capability"):
            opts["gpu_capability"] = float(config["worker_gpu_capability"])
        if config.get("worker_gpu_memory"):
            opts["gpu_memory"] = int(config["worker_gpu_memory"])
    if worker_port_range:
        opts["worker_port_range"] = worker_port_range
    if nanny_port_range:
        opts["nanny_port_range"] = nanny_port_range
    opts.update(credentials or {})
    extra = {**(config.get("worker_extra_submit") or {}), **(extra_submit or {})}
    if extra:
        opts["extra_submit"] = extra
    opts.update(config.get("worker_job_options") or {})
    return opts


def option_fields() -> frozenset[str]:
    """The `WorkerJobSpec` fields a request's job options may set (all but the cluster and the owner)."""
    from htdask.domain.jobspec import WorkerJobSpec
    return frozenset(WorkerJobSpec.__dataclass_fields__) - {"cluster", "owner"}


def check_option_names(options: Mapping[str, Any]) -> None:
    """Raise ValidationError for a job option that is no `WorkerJobSpec` field."""
    from htdask.domain.validation import ValidationError
    unknown = sorted(set(options) - option_fields())
    if unknown:
        raise ValidationError("job option", unknown[0], f"is not one of {sorted(option_fields())}")


def job_spec_inputs(options: Mapping[str, Any] | None, *, scheduler_address: str) -> dict:
    """The one assembly of a worker job's inputs: the `WorkerJobSpec` keyword arguments (all but `cluster`
    and `owner`) for a cluster's job options (a request's, or the recorded ones; None: none) over the
    site's defaults (`scheduler_address`: DASK_SCHEDULER_ADDRESS, '' when unset).

    Used where a request enters (`tasks.options.check_job_options`, which renders one job with them: the
    CLI's, the gateway's and the operator's requests alike) and by the reconciler and the retirement
    (`tasks.options.job_options`). Raises ValidationError for an unknown option.
    """
    options = dict(options or {})
    check_option_names(options)
    return {"scheduler_address": scheduler_address, **options}
