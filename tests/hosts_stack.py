"""A controller stack whose pool has separate execute hosts (LOCALPOOL_EXECUTE_HOSTS=2: network
namespaces, a mount namespace per job hiding the submit host's directories, HTCondor file transfer),
a Dask scheduler on the pool's bridge address (the submit host as the execute hosts reach it), and the
computation every end-to-end test of tests/test_execute_hosts_e2e.py runs: one that moves data between
workers, checked against NumPy.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import urllib.request
import sys
import time
from pathlib import Path

from htdask.demo.procs import Process, free_port, wait_for_port
from htdask.demo.services import REPO, Stack

WORKER_ENV = {"POLL_INTERVAL": "2", "SCHEDD_MIN_INTERVAL": "0", "LOCALPOOL_EXECUTE_HOSTS": "2"}


def start(service_user: str, **env) -> Stack:
    """The stack, its execute hosts made by root's runner (the Celery worker submits as the owner)."""
    stack = Stack(beat=True, DEFAULT_OWNER=service_user, **{**WORKER_ENV, **env})
    stack.env_extra.setdefault("SPOOL_DIR", str(stack.workdir / "spool"))
    # what jobs must not see, besides /tmp (the workdir) and /work: the checkout wherever it is
    stack.env_extra.setdefault("LOCALPOOL_SUBMIT_DIRS", f"{REPO}:{stack.workdir}")
    stack.start()
    res = subprocess.run([sys.executable, "-m", "htdask_localpool", "start"], env=stack.env, cwd=str(REPO),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return stack


def bridge_address(stack: Stack) -> str:
    """The submit host's address on the pool's bridge (what execute hosts reach it at)."""
    import socket
    from htdask_localpool import hosts
    # `localpool start` returns once the runner holds its lock; it writes the plan when it makes the hosts
    plan = wait(lambda: hosts.Plan.load(stack.env["LOCALPOOL_DIR"]), timeout=60, interval=0.05,
                what="the pool's execute hosts (execute-hosts.json)")

    def up():  # the plan is written before the runner makes the bridge
        with socket.socket() as s:
            try:
                s.bind((plan.submit_addr, 0))
                return True
            except OSError:
                return False
    wait(up, timeout=60, what=f"the bridge address {plan.submit_addr}")
    return plan.submit_addr


def host_addresses(stack: Stack) -> set[str]:
    """The execute hosts' addresses."""
    bridge_address(stack)  # the hosts are made
    from htdask_localpool import hosts
    return {h.addr for h in hosts.Plan.load(stack.env["LOCALPOOL_DIR"]).hosts}


@contextlib.contextmanager
def running(service_user: str, **env):
    """A stack on execute hosts (`start`) for a `with` block (a module fixture's body); stopped, and its
    hosts removed, at the end."""
    s = start(service_user, **env)
    try:
        yield s
    finally:
        s.stop()
        remove_hosts(s)


def remove_hosts(stack: Stack) -> None:
    """Whatever `localpool stop` left of the execute hosts, by the names derived from the pool directory."""
    from htdask_localpool import hosts
    h = hosts.pool_hash(stack.env["LOCALPOOL_DIR"])
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith(f"lp{h}-"):
            subprocess.run(["ip", "netns", "del", line.split(" ")[0]], capture_output=True)
    subprocess.run(["ip", "link", "del", f"lpb{h}"], capture_output=True)


class Scheduler:
    """`dask scheduler` on the bridge address (tcp, or tls with the given files); stopped by pid."""

    def __init__(self, stack: Stack, host: str, *, tls: dict | None = None, port: int | None = None):
        self.host, self.port, self.tls = host, port or free_port(host), tls
        proto = "tls" if tls else "tcp"
        argv = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", host, "--port", str(self.port),
                "--no-dashboard", "--protocol", proto]
        if tls:
            argv += ["--tls-ca-file", tls["ca"], "--tls-cert", tls["cert"], "--tls-key", tls["key"]]
        self.address = f"{proto}://{host}:{self.port}"
        self.proc = Process(argv, env=stack.env, cwd=str(stack.workdir), log_path=stack.logdir / f"sched-{self.port}.log",
                            name="scheduler")
        wait_for_port(self.port, host=host, timeout=60)

    def client(self):
        from distributed import Client
        from distributed.security import Security
        sec = None
        if self.tls:
            sec = Security(tls_ca_file=self.tls["ca"], tls_client_cert=self.tls["cert"],
                           tls_client_key=self.tls["key"], require_encryption=True)
        return Client(self.address, security=sec, timeout=60)

    def stop(self) -> None:
        self.proc.stop()


def compute_across_workers(client, n_workers: int = 2, timeout: float = 180) -> dict:
    """A rechunked array sum that needs data from several workers, checked against NumPy; returns
    {worker address: incoming transfers} (at least one worker fetched data from another)."""
    import dask.array as da
    import numpy as np

    client.wait_for_workers(n_workers, timeout=timeout)
    rng = np.random.default_rng(7)
    x = rng.random((600, 600))
    arr = da.from_array(x, chunks=(100, 600))  # row blocks, spread over the workers
    arr = client.persist(arr)
    total = (arr + arr.T).rechunk((600, 50)).sum(axis=0)  # every output chunk needs every row block
    got = client.compute(total).result(timeout=timeout)
    np.testing.assert_allclose(got, (x + x.T).sum(axis=0))
    transfers = client.run(lambda dask_worker: dask_worker.state.transfer_incoming_count_total)
    assert sum(transfers.values()) > 0, f"no data moved between workers: {transfers}"
    return transfers


def worker_hosts(client) -> set[str]:
    """The hosts of the connected workers' addresses."""
    return {addr.split("://", 1)[1].rsplit(":", 1)[0] for addr in client.scheduler_info()["workers"]}


def seen_by_workers(client, paths: list[str]) -> dict:
    """Which of `paths` exist (non-empty for directories) on each worker's execute host."""
    def look(paths=paths):
        out = {}
        for p in paths:
            out[p] = os.path.exists(p) and (not os.path.isdir(p) or bool(os.listdir(p)))
        return out
    return client.run(look)


def wait(predicate, timeout: float = 120, what: str = "condition", interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def text_files(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, bytes]:
    """Every regular file under `root` (but `skip`), path -> contents."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if any(Path(dirpath) == s or s in Path(dirpath).parents for s in skip):
            dirnames[:] = []
            continue
        for name in filenames:
            p = os.path.join(dirpath, name)
            try:
                if not os.path.isfile(p) or os.path.islink(p):  # not the runner's FIFO, not a socket
                    continue
                with open(p, "rb") as f:
                    out[p] = f.read()
            except OSError:
                pass
    return out


def scan_for(stack, needles: list[str], skip: tuple[Path, ...]) -> list[str]:
    """Where any of `needles` appears: job ads (queue and history), every file of the stack but `skip`
    (logs, LOG_DIR, the pool's database and calls.log, Celery's), every Redis value (task arguments
    and results, records) and the exporter's metrics."""
    found = []
    for prog in ("condor_q", "condor_history"):
        out = stack.condor(prog, "-allusers" if prog == "condor_q" else "-limit", *([] if prog == "condor_q" else ["1000"]),
                           "-long").stdout
        found += [f"{prog} -long" for n in needles if n in out]
    for path, data in text_files(stack.workdir, skip).items():
        found += [path for n in needles if n.encode() in data]
    import redis
    r = redis.Redis.from_url(stack.env["REDIS_URL"])
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"string":
            values = [r.get(key)]
        elif kind == b"hash":
            values = list(r.hgetall(key).values()) + list(r.hkeys(key))
        elif kind == b"list":
            values = r.lrange(key, 0, -1)
        elif kind in (b"set",):
            values = list(r.smembers(key))
        elif kind == b"zset":
            values = [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
        else:
            values = []
        found += [f"redis {key!r}" for v in values for n in needles if v and n.encode() in v]
    with urllib.request.urlopen(stack.exporter_url + "metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    found += ["metrics" for n in needles if n in metrics]
    return found
