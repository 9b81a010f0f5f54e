"""What crosses from the submit node to an execute host with a worker job, and how the worker is reached.

Execute hosts share no filesystem with the submit node (and a Docker-universe job sees only its
container): every file a job reads comes by HTCondor's file transfer (`should_transfer_files = YES`,
`transfer_input_files`, read on the submit side as the job's owner), secrets with
`encrypt_input_files`; the job's environment then names them by their name in the sandbox (the
job's cwd, `_CONDOR_SCRATCH_DIR`), which `htdask/domain/worker_start.sh` turns into absolute paths. The
contents never appear in the description, the job ad, a task's arguments or a log line.

Addresses: a vanilla-universe worker (and a Docker job on the host's network) runs on its execute
host's network, and Dask finds its address by the route to the scheduler. On a Docker bridge the
container's address is unreachable from elsewhere: the job declares a container port
(`container_service_names = dask`, `dask_container_port`), HTCondor maps it to a port of the execute
host and publishes it as `dask_HostPort` in the job ad, and the start script makes the worker listen on
the container port and advertise the host's address and that port (`--listen-address`,
`--contact-address`), as dask-chtc does. Its nanny likewise: a second published port (`nanny_container_port`,
`nanny_HostPort`), `--nanny-port` inside the container, and the host's address and that port advertised
(a nanny preload of the start script, as `dask worker` has no option for the nanny's contact address).
"""
from __future__ import annotations

import os
import re

from htdask.domain.jobstatus import HOLD_SUBCODE_MISSING_PROGRAM
from htdask.domain.validation import ValidationError
from htdask.domain.submitvalues import check_submit_safe, validate_path

#: the worker's port inside its container on a Docker bridge, and the service name it is published under
CONTAINER_PORT = 8788
SERVICE = "dask"
#: the same for its nanny (`dask worker` runs one unless told `--no-nanny`): the scheduler reaches it there
#: to restart or kill the worker (Client.restart, restart_workers, run(..., nanny=True))
NANNY_CONTAINER_PORT = 8789
NANNY_SERVICE = "nanny"
#: the start script's exit code for "the worker's program (interpreter, environment) is missing here"
MISSING_EXIT = HOLD_SUBCODE_MISSING_PROGRAM  # 86, also the subcode of the job's on_exit_hold
MISSING_REASON = ("the worker's program or environment is missing on the execute host (exit 86 of htdask's "
                  "worker start; the job's error file says which): choose an image, WORKER_PYTHON or "
                  "WORKER_PACKED_ENV that execute hosts have")
PACKED_DIR = "env"  # where the start script unpacks a packed environment, in the sandbox


def submit_file(path: object, field: str) -> str:
    """An absolute path on the submit node (shipped by file transfer): no commas, no spaces."""
    p = validate_path(path, field)
    if not os.path.isabs(p) or re.search(r"[\s,;]", p):
        raise ValidationError(field, path, "must be an absolute path on the submit node without spaces or commas")
    return p


def token_file(value: object) -> str:
    """The gateway API token as a file on the submit node; a token given by value is refused without
    echoing it (it would be in the job ad)."""
    if not isinstance(value, str) or not os.path.isabs(value) or re.search(r"[\s,;]", value):
        raise ValidationError("gateway API token", "<hidden>", "give the path of a file on the submit node that "
                                                               "holds it (a token's value would be in the job ad)")
    return check_submit_safe(value, "gateway API token file", allow_empty=False)


class Transfer:
    """The input files of one worker job and the environment naming them in the sandbox."""

    def __init__(self):
        self.inputs: list[str] = []
        self.encrypted: list[str] = []
        self.env: dict[str, str] = {}
        self._names: dict[str, str] = {}

    def add(self, path: str, field: str, *, secret: bool = False) -> str:
        """Ship `path`; its name in the sandbox (the base name, as HTCondor transfers it)."""
        path = submit_file(path, field)
        name = os.path.basename(path.rstrip("/"))
        if self._names.get(name, path) != path:
            raise ValidationError(field, path, f"has the same file name as {self._names[name]} (files arrive in "
                                               "one sandbox directory by their names)")
        if name not in self._names:
            self._names[name] = path
            self.inputs.append(path)
            if secret:
                self.encrypted.append(path)
        return name


def plan(spec, scheme: str) -> Transfer:
    """The files of `spec` (a WorkerJobSpec) to transfer and the environment naming them."""
    t = Transfer()
    if spec.api_token is not None:
        t.env["DASK_GATEWAY_API_TOKEN"] = "./" + t.add(token_file(spec.api_token), "gateway API token file",
                                                       secret=True)
    if (spec.tls_cert is None) != (spec.tls_key is None):
        raise ValidationError("TLS files", (spec.tls_cert, spec.tls_key), "give both the certificate and the key")
    if spec.tls_cert is not None:
        cert = t.add(spec.tls_cert, "TLS certificate", secret=True)
        key = t.add(spec.tls_key, "TLS key", secret=True)
        ca = t.add(spec.tls_ca, "TLS CA file", secret=True) if spec.tls_ca else cert
        t.env.update({
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": ca,
            "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT": cert,
            "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY": key,
        })
    if spec.universe == "vanilla" and spec.packed_env:
        t.env["HTDASK_PACKED_ENV"] = t.add(spec.packed_env, "packed environment")
    if isinstance(spec.input_files, str) or not isinstance(spec.input_files, (list, tuple)):
        raise ValidationError("input files", spec.input_files, "must be a list of paths")
    for path in spec.input_files:
        t.add(path, "input file")
    if bridged(spec):
        t.env["HTDASK_SERVICE"] = f"{SERVICE}:{CONTAINER_PORT}"
        t.env["HTDASK_PROTOCOL"] = "tls" if scheme in ("tls", "gateway") else "tcp"
    return t


def uses_nanny(words) -> bool:
    """Whether `dask worker` with these words runs a nanny: its default, unless `--no-nanny` (the last of
    `--nanny`/`--no-nanny` wins, as click reads a flag)."""
    nanny = True
    for word in words:
        if word in ("--nanny", "--no-nanny"):
            nanny = word == "--nanny"
    return nanny


def services(spec, words) -> dict[str, int]:
    """The container ports a job on a Docker bridge publishes (`container_service_names`), name -> port:
    the worker's, and its nanny's when `words` (the worker command) run one; {} off a bridge."""
    if not bridged(spec):
        return {}
    out = {SERVICE: CONTAINER_PORT}
    if uses_nanny(words):
        out[NANNY_SERVICE] = NANNY_CONTAINER_PORT
    return out


def bridged(spec) -> bool:
    """A Docker job on a bridge network (its own address, reached only through a published port)."""
    if spec.docker_network not in ("bridge", "host"):
        raise ValidationError("docker network", spec.docker_network, "must be 'bridge' or 'host'")
    return spec.universe == "docker" and spec.docker_network == "bridge"


def image_allowed(image: object, prefixes) -> str:
    """An Apptainer image (a path or URL) that starts with one of `prefixes` (ALLOWED_IMAGE_PREFIXES)."""
    img = check_submit_safe(image, "container image", allow_empty=False)
    if re.search(r"[\s,;\"']", img):
        raise ValidationError("container image", image, "must be one path or URL")
    if not any(img.startswith(p) for p in prefixes):
        allowed = ", ".join(prefixes) or "none (ALLOWED_IMAGE_PREFIXES is unset)"
        raise ValidationError("container image", image, f"is not under an allowed prefix: {allowed}")
    return img


def gpu_commands(spec) -> dict[str, str]:
    """request_gpus and require_gpus (HTCondor's GPU attributes: Capability, GlobalMemoryMb)."""
    out: dict[str, str] = {}
    if spec.request_gpus in (None, 0):
        if spec.gpu_capability is not None or spec.gpu_memory is not None:
            raise ValidationError("GPU requirements", "capability/memory", "need request_gpus")
        return out
    n = spec.request_gpus
    if type(n) is not int or not 1 <= n <= 64:
        raise ValidationError("request_gpus", n, "must be a whole number from 1 to 64")
    out["request_gpus"] = str(n)
    clauses = []
    if spec.gpu_capability is not None:
        cap = spec.gpu_capability
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < 100:
            raise ValidationError("GPU capability", cap, "must be a number such as 7.5")
        clauses.append(f"Capability >= {float(cap):g}")
    if spec.gpu_memory is not None:
        from htdask.domain.validation import validate_memory
        mb = validate_memory(spec.gpu_memory, "GPU memory") // 2**20
        clauses.append(f"GlobalMemoryMb >= {mb}")
    if clauses:
        out["require_gpus"] = " && ".join(clauses)
    return out
