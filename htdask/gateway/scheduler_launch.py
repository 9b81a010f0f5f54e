"""Where and how a cluster's Dask scheduler starts: its command line (TLS, the gateway preload and
`htdask/gateway/scheduler_hooks.py`), a port in the site's range, the address workers use to reach it,
and, with ``scheduler_mode = "job"``, the options of the HTCondor job that runs it
(`htdask/gateway/scheduler_job.py`, controller cluster ``<cluster>-scheduler``).
"""
from __future__ import annotations

from pathlib import Path

from htdask.domain import joboptions
from htdask.gateway.pyenv import job_python, shared_copy
from htdask.gateway.scheduler_job import free_port

HERE = Path(__file__).resolve().parent
HOOKS = str(HERE / "scheduler_hooks.py")
SCHEDULER_JOB = str(HERE / "scheduler_job.py")
SCHEDULER_SUFFIX = "-scheduler"
#: the wrapper and the hooks by their names in the scheduler job's sandbox (its cwd)
JOB_WRAPPER, JOB_HOOKS = "./scheduler_job.py", "./scheduler_hooks.py"
#: replaced by the scheduler job with its execute host's address (htdask/gateway/scheduler_job.py)
HOST_PLACEHOLDER = "{host}"


def scheduler_args(config, host: str, port: str, heartbeat_period: float, hooks: str | None = None) -> list[str]:
    """`dask scheduler` arguments after the command, for a cluster `config` (dask-gateway's names);
    `hooks`: the path of htdask/gateway/scheduler_hooks.py where the scheduler runs (default: a copy here)."""
    return [
        "--protocol", "tls", "--port", port, "--host", host,
        "--dashboard-address", f"{host}:0",
        "--preload", "dask_gateway.scheduler_preload", "--preload", hooks or shared_copy(HOOKS),
        "--dg-api-address", f"{host}:0",
        "--dg-heartbeat-period", str(heartbeat_period),
        "--dg-adaptive-period", str(config.adaptive_period),
        "--dg-idle-timeout", str(config.idle_timeout),
    ]


def pick_port(port_range: str, host: str) -> int:
    """A free port of ``LOW:HIGH`` on `host`, tried in random order (0: any, when no range is set)."""
    if not port_range:
        return 0
    low, _, high = port_range.partition(":")
    try:
        return free_port(int(low), int(high or low), host)  # the scheduler job's own rule
    except SystemExit as e:
        raise RuntimeError(str(e)) from None


def contact_address(address: str, contact_host: str) -> str:
    """`address` (scheme://host:port) with its host replaced by `contact_host` (empty: unchanged)."""
    if not contact_host:
        return address
    scheme, _, rest = address.partition("://")
    port = rest.rsplit(":", 1)[-1]
    host = contact_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def scheduler_job_options(config, args: list[str], port_range: str, environment: dict[str, str],
                          credentials: dict[str, str], cluster_name: str) -> dict:
    """`WorkerJobSpec` fields of the job that runs the scheduler (`htdask.domain.joboptions.scheduler_job_options`
    with this side's paths): `htdask/gateway/scheduler_job.py` wraps the scheduler command `args`, picking a
    port of `port_range` on its execute host. The wrapper and the hooks reach the execute host by file
    transfer (`input_files`), as the TLS files and the token do (`credentials`: their paths on the submit
    node)."""
    return joboptions.scheduler_job_options(
        config, args=args, worker_command=[job_python()[0], JOB_WRAPPER],
        input_files=[shared_copy(SCHEDULER_JOB), shared_copy(HOOKS)], port_range=port_range,
        environment=environment, credentials=credentials, cluster_name=cluster_name)
