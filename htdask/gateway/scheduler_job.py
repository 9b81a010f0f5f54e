"""Run the Dask scheduler as an HTCondor job (`HTCondorBackend.scheduler_mode = "job"`).

The controller describes every job as a Dask worker (`htdask.domain.jobspec`): it appends the worker's
arguments (`<address> --name ... --nthreads ...`) and sets the worker's TLS variables. This small
program is that job's worker command: it drops the worker arguments, turns the worker TLS variables into
the scheduler's, picks a free port from `--dg-port-range` when one is given, puts its execute host's address for
`{host}`, and execs the scheduler
command that follows `--dg-exec`. It imports nothing of ours, so execute hosts need only Python.

    scheduler_job.py <worker args ...> [--dg-port-range LOW:HIGH] --dg-exec dask scheduler ... --port {port}
"""
from __future__ import annotations

import os
import random
import re
import socket
import sys


def free_port(low: int, high: int, host: str = "0.0.0.0") -> int:
    ports = list(range(low, high + 1))
    random.shuffle(ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise SystemExit(f"scheduler job: no free port in {low}:{high}")


def execute_host_address(environ) -> str:
    """This execute host's address as HTCondor's starter publishes it (StartdIpAddr in the job or machine
    ad: on a host with no default route Dask could not find it), else 0.0.0.0 (every interface)."""
    for var in ("_CONDOR_JOB_AD", "_CONDOR_MACHINE_AD"):
        try:
            with open(environ.get(var) or "/nonexistent") as f:
                for line in f:
                    m = re.match(r'^StartdIpAddr\s*=\s*"<([0-9.]+):', line)
                    if m:
                        return m.group(1)
        except OSError:
            continue
    return "0.0.0.0"


def build(argv: list[str], environ: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    if "--dg-exec" not in argv:
        raise SystemExit("scheduler job: --dg-exec <scheduler command> is missing")
    i = argv.index("--dg-exec")
    head, cmd = argv[:i], argv[i + 1:]
    if not cmd:
        raise SystemExit("scheduler job: empty scheduler command")
    port = 0
    if "--dg-port-range" in head:
        low, _, high = head[head.index("--dg-port-range") + 1].partition(":")
        port = free_port(int(low), int(high or low))
    host = execute_host_address(environ)
    cmd = [a.replace("{port}", str(port)).replace("{host}", host) for a in cmd]
    env = dict(environ)
    tls = "DASK_DISTRIBUTED__COMM__TLS__"
    for kind in ("CERT", "KEY"):
        if f"{tls}WORKER__{kind}" in env:
            env[f"{tls}SCHEDULER__{kind}"] = env.pop(f"{tls}WORKER__{kind}")
    if env.get("DG_GATEWAY_CLUSTER"):
        env["DASK_GATEWAY_CLUSTER_NAME"] = env["DG_GATEWAY_CLUSTER"]
    return cmd, env


def main() -> None:
    cmd, env = build(sys.argv[1:], dict(os.environ))
    print("scheduler job: exec", " ".join(cmd), flush=True)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
