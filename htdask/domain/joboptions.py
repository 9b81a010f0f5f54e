"""Worker job options (`htdask.domain.jobspec.WorkerJobSpec` fields but the cluster and the owner): THE
module that makes them. Nothing else in the product writes an option by name (tests/test_joboptions.py).

- What each entry point gives, mapped to options: `flag_job_options` (`htdask scale`'s flags),
  `worker_job_options` (a dask-gateway cluster config: the gateway backend's `ClusterConfig`, the
  DaskCluster operator's ``spec.config``), `scheduler_job_options` (the gateway's scheduler job),
  `credentials` (staged TLS files, API token, log directory: CLI, gateway, operator);
- `assemble`: the one merge of the site's defaults (`site_defaults`), a cluster's recorded options and the
  ones an entry point gives now. The CLI merges its flags over the recorded options with it (the gateway
  and the operator give a cluster's whole set); the task (`tasks.options.job_options`, for the reconciler,
  the retirement and `scale --dry-run`) puts the recorded options over the site's defaults with it.

`tasks.api` checks a request's options (`check_option_names`, then one rendered job) before anything is
enqueued.

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


def flag_job_options(*, scheduler_address: str | None = None, nthreads: str | int | None = None,
                     memory_limit: str | None = None, universe: str | None = None, image: str | None = None,
                     docker_network: str | None = None, worker_python: str | None = None,
                     request_gpus: int | None = None, gpu_capability: float | None = None,
                     gpu_memory: str | None = None, packed_env: str | None = None) -> dict:
    """The options `htdask scale`'s flags give (None: not given), checked; raises ValidationError naming the
    flag. `image` is the container universe's Apptainer image, else a Docker image; `packed_env` a path
    the caller found readable."""
    from htdask.domain import validation
    opts: dict[str, Any] = {}
    if scheduler_address:
        opts["scheduler_address"] = validation.validate_address(scheduler_address)
    if nthreads:
        opts["nthreads"] = validation.validate_count(nthreads, 1024, field="--threads")
    if memory_limit:
        opts["memory_limit"] = validation.validate_memory(memory_limit, "--memory")
    if universe:
        opts["universe"] = universe
    if image and universe == "container":
        opts["container_image"] = image
    elif image:
        opts["docker_image"] = validation.validate_docker_image(image, "--image")
    given = {"docker_network": docker_network, "worker_python": worker_python, "request_gpus": request_gpus,
             "gpu_capability": gpu_capability}
    opts.update({k: v for k, v in given.items() if v is not None})
    if gpu_memory:
        opts["gpu_memory"] = validation.validate_memory(gpu_memory, "--gpu-memory")
    if packed_env:
        opts["packed_env"] = packed_env
    return opts


def credentials(*, tls_cert: str | None = None, tls_key: str | None = None, tls_ca: str | None = None,
                api_token: str | None = None, api_url: str | None = None, log_dir: str | None = None) -> dict:
    """The options naming what an entry point staged for a cluster's jobs (paths on the submit node,
    shipped by file transfer; None: not staged): TLS files, the gateway API's token file and URL, the log
    directory."""
    given = {"tls_cert": tls_cert, "tls_key": tls_key, "tls_ca": tls_ca, "api_token": api_token,
             "api_url": api_url, "log_dir": log_dir}
    return {k: v for k, v in given.items() if v is not None}


def scheduler_job_options(config, *, args: Sequence[str], worker_command: Sequence[str],
                          input_files: Sequence[str], port_range: str, environment: Mapping[str, str],
                          credentials: Mapping[str, str], cluster_name: str) -> dict:
    """The options of the job that runs a gateway cluster's Dask scheduler (`config`: its `ClusterConfig`):
    `worker_command` runs the wrapper (htdask/gateway/scheduler_job.py, shipped with the hooks in
    `input_files`), which drops the worker arguments and runs the scheduler command `args` on a port of
    `port_range` on its execute host."""
    extra = ["--dg-port-range", port_range] if port_range else []
    extra += ["--dg-exec", *config.scheduler_cmd, *args]
    options = {
        "scheduler_address": "tcp://127.0.0.1:1",  # unused: the wrapper drops the worker arguments
        "worker_command": list(worker_command),
        "input_files": list(input_files),
        "extra_args": extra,
        "nthreads": int(config.scheduler_cores),
        "memory_limit": int(config.scheduler_memory),
        "environment": {**environment, "DG_GATEWAY_CLUSTER": cluster_name},
        **credentials,
        "death_timeout": None,
    }
    if config.get("worker_extra_submit"):
        options["extra_submit"] = dict(config.worker_extra_submit)
    return options


def site_defaults(*, scheduler_address: str, log_dir: str | None = None) -> dict:
    """The site's defaults under every cluster's options: DASK_SCHEDULER_ADDRESS ('' when unset) and, where
    a submission needs one, the cluster's directory under LOG_DIR."""
    return {"scheduler_address": scheduler_address, **({"log_dir": log_dir} if log_dir else {})}


def with_entry_scheduler(options: Mapping[str, Any] | None, recorded: Mapping[str, Any] | None, *,
                         scheduler_address: str) -> dict | None:
    """A request's options (None: it keeps the cluster's `recorded` ones) with the scheduler address its entry
    point resolved from its own settings (`scheduler_address`: its DASK_SCHEDULER_ADDRESS, '' when unset)
    when neither names one: the address the request was checked with where it entered is the one recorded,
    so a Celery worker whose environment lacks the variable submits with it. Else `options` unchanged."""
    base = options if options is not None else recorded
    if not scheduler_address or (base or {}).get("scheduler_address"):
        return None if options is None else dict(options)
    return assemble(recorded=base, given=site_defaults(scheduler_address=scheduler_address))


def assemble(*, site: Mapping[str, Any] | None = None, recorded: Mapping[str, Any] | None = None,
             given: Mapping[str, Any] | None = None) -> dict:
    """THE merge of job options: the site's defaults (`site_defaults`), under a cluster's recorded options,
    under the ones an entry point gives now; key by key, the later wins, except that an empty value (None,
    '') never hides one set below it. Raises ValidationError for a name that is no option."""
    out: dict[str, Any] = {}
    for layer in (site, recorded, given):
        layer = dict(layer or {})
        check_option_names(layer)
        for key, value in layer.items():
            if (value is None or value == "") and out.get(key) not in (None, ""):
                continue
            out[key] = value
    return out


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


def job_spec_inputs(options: Mapping[str, Any] | None, *, scheduler_address: str,
                    log_dir: str | None = None) -> dict:
    """A worker job's inputs: the `WorkerJobSpec` keyword arguments (all but `cluster` and `owner`) for a
    cluster's job options (a request's, or the recorded ones; None: none) over the site's defaults
    (`scheduler_address`: DASK_SCHEDULER_ADDRESS, '' when unset; `log_dir`: the cluster's under LOG_DIR,
    None: none), by `assemble`.

    Used where a request enters (`tasks.options.check_job_options`, which renders one job with them: the
    CLI's, the gateway's and the operator's requests alike) and by the reconciler and the retirement
    (`tasks.options.job_options`). Raises ValidationError for an unknown option.
    """
    return assemble(site=site_defaults(scheduler_address=scheduler_address, log_dir=log_dir), recorded=options)
