"""The Dask worker job as data, and the one submit description that queues many of them.

Like dask-jobqueue's HTCondorJob, the job template is data (WorkerJobSpec) rendered in one place;
unlike it, all workers of a scale-up go into ONE submission (`queue DaskWorkerIndex,DaskWorkerName
from (...)`) so the schedd sees one transaction, and every job carries ClassAds naming its cluster,
worker and owner so the controller can find (and only ever touch) its own jobs. A batched round
goes further: the descriptions of all its clusters (each ending in its own queue statement) are
submitted as one file (domain/submitdesc.CombinedDescription, tasks/submissions.py); every description
of this module assigns the same commands for the same kind of options, which is what lets them share
a file without one cluster's value reaching another's jobs.

Execute hosts share nothing with the submit node: every job's executable is htdask's worker start
script (htdask/domain/worker_start.sh, from the spool), which runs the worker command given as its arguments;
TLS files, the gateway API token and any further input come by HTCondor's file transfer
(htdask/domain/jobfiles.py). A secret is only ever named by its path: the token's value is refused.
"""
from __future__ import annotations

import logging
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import classad2

from htdask.settings import load
from htdask.domain import jobfiles, spool
from htdask.domain.pyenv import job_python  # an interpreter the job's user can run (not under /root)
from htdask.domain.submitdesc import SubmitDescription
from htdask.domain.validation import (ValidationError, format_memory, split_address, validate_cluster_name,
                                      validate_count, validate_docker_image, validate_index, validate_job_id,
                                      validate_memory, validate_port, validate_port_range, validate_timeout,
                                      validate_worker_name)
from htdask.domain.submitvalues import (check_env, check_submit_safe, quote_arguments, quote_environment,
                                 validate_argument, validate_classad_string, validate_path, validate_submit_key,
                                 validate_submit_value)

log = logging.getLogger(__name__)

ITEM_VARS = ("DaskWorkerIndex", "DaskWorkerName")

#: Attributes the poller and the summaries need (condor_q -attributes).
POLL_PROJECTION = (
    "ClusterId", "ProcId", "JobStatus", "DaskGatewayCluster", "DaskWorkerName", "DaskWorkerIndex",
    "DaskClusterOwner", "EnteredCurrentStatus", "HoldReason", "HoldReasonCode", "ExitCode",
    "NumJobStarts", "QDate", "Owner", "LastRejMatchReason",
)


def default_worker_command(universe: str = "vanilla", python: str | None = None,
                           packed_env: str | None = None) -> list[str]:
    """DASK_WORKER_COMMAND (shell words) if set; else `dask worker` from the image's PATH (docker,
    container); else (vanilla) the packed environment's Python, or `python` (WORKER_PYTHON: a path the
    execute hosts have), or the submit node's own interpreter (htdask/domain/pyenv.py)."""
    raw = (load().dask_worker_command or "").strip()
    if raw:
        try:
            words = shlex.split(raw)
        except ValueError as e:
            raise ValidationError("DASK_WORKER_COMMAND", raw, f"is not valid shell words ({e})") from None
        if words:
            return words
    if universe in ("docker", "container"):
        return ["dask", "worker"]
    if packed_env:
        return [f"{jobfiles.PACKED_DIR}/bin/python", "-m", "distributed.cli.dask_worker"]
    return [python or job_python()[0], "-m", "distributed.cli.dask_worker"]


def default_image() -> str:
    return load().dask_worker_image


@dataclass
class WorkerJobSpec:
    """Everything that varies between Dask worker jobs of one cluster (not between workers)."""

    cluster: str
    owner: str
    scheduler_address: str
    worker_command: list[str] | None = None  # None -> default_worker_command(universe)
    nthreads: int = 1
    memory_limit: int | str = "2GiB"
    universe: str = "vanilla"  # "vanilla" | "docker" | "container" (an Apptainer image)
    docker_image: str = field(default_factory=default_image)
    docker_network: str = "bridge"  # docker universe: "bridge" (a published port) | "host"
    container_image: str | None = None  # Apptainer image (ALLOWED_IMAGE_PREFIXES); universe "container"
    worker_python: str | None = field(default_factory=lambda: load().worker_python)  # on the execute hosts
    packed_env: str | None = field(default_factory=lambda: load().worker_packed_env)  # submit-side .tar.gz
    input_files: list[str] = field(default_factory=list)  # further submit-side files shipped to the sandbox
    request_gpus: int | None = None
    gpu_capability: float | None = None  # require_gpus: Capability >= x
    gpu_memory: int | str | None = None  # require_gpus: GlobalMemoryMb >= x
    environment: dict[str, str] = field(default_factory=dict)  # extra variables for the worker
    api_url: str | None = None  # DASK_GATEWAY_API_URL
    api_token: str | None = None  # a file on the submit node holding DASK_GATEWAY_API_TOKEN (shipped)
    tls_cert: str | None = None  # files on the submit node (the spool), shipped by file transfer
    tls_key: str | None = None
    tls_ca: str | None = None  # default: the certificate (self-signed, as dask-gateway's)
    worker_port_range: str | None = None  # "40000:40100" -> --worker-port
    nanny_port_range: str | None = None  # -> --nanny-port
    dashboard: bool = False
    dashboard_port: int = 0  # 0 = any free port
    death_timeout: float | None = 60
    extra_args: list[str] = field(default_factory=list)
    request_cpus: int | None = None  # default: nthreads
    request_memory: int | str | None = None  # default: memory_limit
    request_disk: int | str | None = None
    log_dir: str | None = None  # absolute; per-job .out/.err and one cluster .log
    extra_submit: dict[str, str] = field(default_factory=dict)  # site-specific commands

    def __post_init__(self):
        if self.worker_command is None:
            self.worker_command = default_worker_command(self.universe, self.worker_python, self.packed_env)


def _positive(n: object, field: str, maximum: int = 4096) -> int:
    value = validate_count(n, maximum=maximum, field=field)
    if value < 1:
        raise ValidationError(field, n, "must be at least 1")
    return value


def _arguments(spec: WorkerJobSpec, memory: int) -> tuple[str, list[str]]:
    """(executable, argument list) of `dask worker <scheduler> --name $(DaskWorkerName) ...`."""
    cmd = spec.worker_command
    if not isinstance(cmd, (list, tuple)) or not cmd:
        raise ValidationError("worker command", cmd, "must be a non-empty list of words")
    # looked up on the execute host by the start script (an absolute path, a path in the sandbox such as
    # a packed environment's env/bin/python, or a name on the execute host's PATH)
    exe = check_submit_safe(cmd[0], "worker command", allow_empty=False)
    if not re.match(r"^[A-Za-z0-9_./+-]+\Z", exe) or exe.startswith("-"):
        raise ValidationError("worker command", exe, "must be a program name or path")
    args = [validate_argument(a, "worker command argument") for a in cmd[1:]]
    args += [spec.scheduler_address, "--name", "$(DaskWorkerName)",
             "--nthreads", str(_positive(spec.nthreads, "nthreads")),
             "--memory-limit", format_memory(memory)]
    if spec.scheduler_address.startswith("gateway://"):
        # through dask-gateway's SNI proxy: its comm (dask_gateway.comm) in nanny and worker, which listen on
        # TLS (the nanny would take the scheduler's protocol, which has no listener)
        args += ["--preload-nanny", "dask_gateway.comm", "--preload", "dask_gateway.comm", "--protocol", "tls"]
    if spec.worker_port_range is not None and not jobfiles.bridged(spec):  # bridged: the container's port
        args += ["--worker-port", validate_port_range(spec.worker_port_range, "worker port range")]
    if spec.nanny_port_range is not None and not jobfiles.bridged(spec):  # bridged: the container's port
        args += ["--nanny-port", validate_port_range(spec.nanny_port_range, "nanny port range")]
    if not isinstance(spec.dashboard, bool):
        raise ValidationError("dashboard", spec.dashboard, "must be true or false")
    if spec.dashboard:
        args += ["--dashboard-address", f":{validate_port(spec.dashboard_port, 'dashboard port', allow_zero=True)}"]
    else:
        args += ["--no-dashboard"]
    if spec.death_timeout is not None:
        t = validate_timeout(spec.death_timeout, "death timeout")
        args += ["--death-timeout", f"{t:g}"]
    if isinstance(spec.extra_args, str):
        raise ValidationError("extra worker arguments", spec.extra_args, "must be a list of words")
    args += [validate_argument(a, "extra worker argument") for a in spec.extra_args]
    return exe, args


def _environment(spec: WorkerJobSpec, transfer: jobfiles.Transfer) -> dict[str, str]:
    """The worker's environment: our DASK_GATEWAY_* / TLS variables, then the spec's extra ones."""
    scheme, _host, port = split_address(spec.scheduler_address)
    ours = {
        "DASK_GATEWAY_CLUSTER_NAME": spec.cluster,
        "DASK_GATEWAY_SCHEDULER_ADDRESS": spec.scheduler_address,
        "DASK_GATEWAY_SCHEDULER_PORT": str(port),
        "DASK_GATEWAY_WORKER_NAME": "$(DaskWorkerName)",  # expanded per job by condor_submit
    }
    if spec.dashboard:
        ours["DASK_GATEWAY_DASHBOARD_PORT"] = str(spec.dashboard_port)
    if spec.api_url is not None:
        url = check_submit_safe(spec.api_url, "gateway API URL", allow_empty=False)
        if not re.match(r"^https?://[^\s'\"]+\Z", url):
            raise ValidationError("gateway API URL", spec.api_url, "must be an http(s):// URL")
        ours["DASK_GATEWAY_API_URL"] = url
    ours.update(transfer.env)
    if spec.tls_cert is None and scheme == "tls":
        log.warning("cluster %s: tls:// scheduler address but no TLS files for the workers", spec.cluster)
    extra = check_env(spec.environment, "worker environment")
    clash = sorted(set(extra) & set(ours))
    if clash:
        raise ValidationError("worker environment", clash[0], "is set by the controller and may not be overridden")
    return {**ours, **extra}


_RESERVED = {k.lower() for k in (
    "universe", "executable", "transfer_executable", "arguments", "environment", "docker_image",
    "request_cpus", "request_memory", "request_disk", "batch_name", "LogDir", "output", "error", "log",
    "submit_event_notes", "stream_output", "stream_error", "DaskWorkerIndex", "DaskWorkerName", "MY.DaskGatewayCluster", "MY.DaskClusterOwner",
    "MY.DaskWorkerName", "MY.DaskWorkerIndex", "getenv", "should_transfer_files", "when_to_transfer_output",
    "transfer_input_files", "encrypt_input_files", "container_image", "MY.SingularityImage",
    "container_service_names", f"{jobfiles.SERVICE}_container_port", f"{jobfiles.NANNY_SERVICE}_container_port",
    "docker_network_type", "on_exit_hold", "on_exit_hold_reason", "on_exit_hold_subcode")}


def worker_submit_description(spec: WorkerJobSpec, items: Sequence[tuple[int, str]]) -> SubmitDescription:
    """ONE submit description queueing one worker job per (index, name) item.

    Every value is validated and quoted here; a newline, an escaping quote or `$(` in any of them
    raises ValidationError before anything is rendered.
    """
    cluster = validate_cluster_name(spec.cluster)
    check_submit_safe(spec.owner, "cluster owner", allow_empty=False, max_len=256)
    owner_q = validate_classad_string(spec.owner, "cluster owner", max_len=256)
    if spec.universe not in ("vanilla", "docker", "container"):
        raise ValidationError("universe", spec.universe, "must be 'vanilla', 'docker' or 'container'")
    scheme = split_address(spec.scheduler_address)[0]
    memory = validate_memory(spec.memory_limit, "memory limit", minimum=2**20)
    transfer = jobfiles.plan(spec, scheme)
    exe, args = _arguments(spec, memory)
    services = jobfiles.services(spec, [exe] + args)  # published ports on a Docker bridge
    if jobfiles.NANNY_SERVICE in services:
        transfer.env["HTDASK_NANNY_SERVICE"] = f"{jobfiles.NANNY_SERVICE}:{services[jobfiles.NANNY_SERVICE]}"
    env = _environment(spec, transfer)

    rows = []
    seen_idx, seen_name = set(), set()
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValidationError("worker item", item, "must be (index, name)")
        idx = validate_index(item[0])
        name = validate_worker_name(item[1])
        if idx in seen_idx or name in seen_name:
            raise ValidationError("worker item", item, "repeats an index or a name")
        seen_idx.add(idx)
        seen_name.add(name)
        rows.append((str(idx), name))
    if not rows:
        raise ValidationError("worker items", list(items), "need at least one worker")

    settings = load()
    d = SubmitDescription()
    image = None
    if spec.universe == "container":
        image = jobfiles.image_allowed(spec.container_image, settings.allowed_image_prefixes)
    elif spec.container_image is not None:
        raise ValidationError("container image", spec.container_image, "needs universe 'container'")
    d["universe"] = "vanilla" if image and settings.apptainer_attribute else spec.universe
    if spec.universe == "docker":
        d["docker_image"] = validate_docker_image(spec.docker_image)
        if spec.docker_network == "host":
            d["docker_network_type"] = "host"
    elif image and settings.apptainer_attribute:
        d["MY.SingularityImage"] = classad2.quote(image)
    elif image:
        d["container_image"] = image
    # the start script (htdask/domain/worker_start.sh) runs the worker command on the execute host
    d["executable"] = spool.start_script_path(settings.spool_dir)
    d["transfer_executable"] = "true"
    d["arguments"] = quote_arguments([exe] + args)
    d["environment"] = quote_environment(env)
    d["should_transfer_files"] = "YES"
    d["when_to_transfer_output"] = "ON_EXIT"
    if transfer.inputs:
        d["transfer_input_files"] = ",".join(transfer.inputs)
    if transfer.encrypted:
        d["encrypt_input_files"] = ",".join(transfer.encrypted)
    if services:
        d["container_service_names"] = ",".join(services)
        for name, port in services.items():
            d[f"{name}_container_port"] = str(port)
    for key, value in jobfiles.gpu_commands(spec).items():
        d[key] = value
    d["on_exit_hold"] = f"ExitCode =?= {jobfiles.MISSING_EXIT}"
    d["on_exit_hold_reason"] = classad2.quote(jobfiles.MISSING_REASON)
    d["on_exit_hold_subcode"] = str(jobfiles.MISSING_EXIT)
    cpus = spec.request_cpus if spec.request_cpus is not None else spec.nthreads
    d["request_cpus"] = str(_positive(cpus, "request_cpus"))
    req_mem = memory if spec.request_memory is None else validate_memory(spec.request_memory, "request_memory")
    d["request_memory"] = str(math.ceil(req_mem / 2**20))  # MiB
    if spec.request_disk is not None:
        d["request_disk"] = str(math.ceil(validate_memory(spec.request_disk, "request_disk") / 2**10))  # KiB
    d["batch_name"] = cluster
    if spec.log_dir is not None:
        d["LogDir"] = validate_path(spec.log_dir, "log directory")
        # One file per job, named as HTCondor users name them (condor_submit(1): $(Cluster).$(Process)):
        # a replacement job that reuses a worker's name must not truncate the error of the one that crashed.
        d["output"] = f"$(LogDir)/{cluster}-$(DaskWorkerIndex).$(Cluster).$(Process).out"
        d["error"] = f"$(LogDir)/{cluster}-$(DaskWorkerIndex).$(Cluster).$(Process).err"
        # streamed back while the worker runs (a removed job's output is never transferred): `htdask logs`
        d["stream_output"] = "true"
        d["stream_error"] = "true"
        d["log"] = f"$(LogDir)/{cluster}.log"
        # the job's 000 event names its worker (LogNotes): htdask/gateway/eventlog.py maps job ids to workers with it
        d["submit_event_notes"] = "DaskWorkerName=$(DaskWorkerName)"
    if not isinstance(spec.extra_submit, dict):
        raise ValidationError("extra submit commands", spec.extra_submit, "must be a mapping")
    for key, value in spec.extra_submit.items():
        key = validate_submit_key(key, "extra submit command")
        canon = "my." + key[1:].lower() if key.startswith("+") else key.lower()
        if canon in _RESERVED:
            raise ValidationError("extra submit command", key, "is set by the controller")
        d[key] = validate_submit_value(value, f"extra submit command {key}")
    d.set_attr("DaskGatewayCluster", classad2.quote(cluster))
    d.set_attr("DaskClusterOwner", owner_q)
    d.set_attr("DaskWorkerName", '"$(DaskWorkerName)"')
    d.set_attr("DaskWorkerIndex", "$(DaskWorkerIndex)")
    return d.with_items(ITEM_VARS, rows)


# --- constraints --------------------------------------------------------------------------------

def ours_constraint() -> str:
    """Every job any Dask cluster of ours submitted."""
    return "DaskGatewayCluster =!= undefined"


def cluster_constraint(cluster: str) -> str:
    """The jobs of one cluster (names are lowercase DNS labels, so == cannot match another one)."""
    return f"DaskGatewayCluster == {classad2.quote(validate_cluster_name(cluster))}"


def clusters_constraint(clusters: Iterable[str]) -> str:
    """The jobs of any of these clusters (one ClassAd ``member`` test; callers bound the list's size)."""
    quoted = ",".join(classad2.quote(validate_cluster_name(c)) for c in sorted(set(clusters)))
    return f"member(DaskGatewayCluster, {{{quoted}}})"


#: characters of one constraint built from a list of jobs: it is one argv word, and Linux takes at most
#: 128 KiB per word (MAX_ARG_STRLEN) and 2 MiB for all of them; a longer list is split into several
CONSTRAINT_MAX = 16_000


def job_id_terms(job_ids: Iterable[str], limit: int = CONSTRAINT_MAX) -> list[str]:
    """ClassAd terms that together match exactly the jobs `job_ids` ('C.P'), each at most `limit`
    characters: per ClusterId, every run of 3 or more consecutive ProcIds as one range
    (`ClusterId == 12 && ProcId >= 100 && ProcId <= 25999`), the other ProcIds in `member` lists.
    Raises ValidationError for an id that is not 'C.P'."""
    procs: dict[int, set[int]] = {}
    for job_id in job_ids:
        c, dot, p = validate_job_id(job_id).partition(".")
        if not dot:
            raise ValidationError("job id", job_id, "must name one job ('cluster.proc')")
        procs.setdefault(int(c), set()).add(int(p))
    terms = []
    for c, ps in sorted(procs.items()):
        singles: list[int] = []
        for first, last in _runs(sorted(ps)):
            if last - first >= 2:
                terms.append(f"ClusterId == {c} && ProcId >= {first} && ProcId <= {last}")
            else:
                singles += range(first, last + 1)
        head = f"ClusterId == {c} && member(ProcId, {{"
        chunk: list[str] = []
        for p in map(str, singles):
            if chunk and len(head) + sum(len(x) + 1 for x in chunk) + len(p) + 2 > limit:
                terms.append(head + ",".join(chunk) + "})")
                chunk = []
            chunk.append(p)
        if chunk:
            terms.append(head + ",".join(chunk) + "})")
    return terms


def _runs(ps: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct integers as (first, last) runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for p in ps:
        if runs and runs[-1][1] == p - 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs


def pack_terms(prefix: str, terms: list[str], limit: int = CONSTRAINT_MAX) -> list[str]:
    """`prefix && ((t1) || (t2) ...)`, as few constraints as fit in `limit` characters each (a term
    longer than that gets a constraint of its own)."""
    out, group, size = [], [], 0
    base = len(prefix) + 8
    for term in terms:
        if group and base + size + len(term) + 6 > limit:
            out.append(group)
            group, size = [], 0
        group.append(term)
        size += len(term) + 6
    if group:
        out.append(group)
    return [f"{prefix} && ({' || '.join(f'({t})' for t in g)})" for g in out]


def jobs_constraints(cluster: str, job_ids: Iterable[str], limit: int = CONSTRAINT_MAX) -> list[str]:
    """Constraints that together match the jobs `job_ids` of `cluster` and nothing else, each at most
    `limit` characters (one condor_rm/hold/release each): jobs are named by ClusterId.ProcId, never by a
    worker index or name that two jobs may share. Raises ValidationError for no ids or a bad one."""
    terms = job_id_terms(job_ids, limit - 100)
    if not terms:
        raise ValidationError("job ids", [], "need at least one job id")
    return pack_terms(cluster_constraint(cluster), terms, limit)
