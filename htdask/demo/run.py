"""`make demo`: the whole controller on embedded defaults, then everything it started is stopped.

Starts a private redis-server, the local pool, a Celery worker on the schedd queue, beat, Flower
(behind basic auth), the exporter (status page and Prometheus metrics; its URL is printed) and a Dask
scheduler with its dashboard (its URL too).
As root (with iproute2 and nftables), the pool has two separate execute hosts (network namespaces whose
jobs cannot see this host's files; HTCondor's file transfer; htdask_localpool/README.md) and the schedulers
listen on the pool's bridge address, which the execute hosts reach; otherwise jobs run on this host.
Part 1, the CLI: with a Dask scheduler of its own, scales a cluster of real Dask workers (HTCondor
jobs of the local pool) to 4, runs a computation on them, scales to 1, deletes the cluster and
prints the summaries. Part 2, Dask Gateway: starts the gateway with our backend, and as a
scientist would, creates a cluster, scales it to 4, computes, scales down and shuts it down.
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import time

from htdask.demo.procs import Process, free_port, wait_for_port
from htdask.demo.services import Stack
from htdask.demo.users import ensure_user

DEMO_USER = "htdask-demo"


def _say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def demo_user() -> str | None:
    """As root, jobs run as a dedicated unprivileged account (never root); created when missing."""
    if os.geteuid() != 0:
        return None
    if ensure_user(DEMO_USER, home=True):
        _say(f"created the unprivileged account {DEMO_USER!r} the demo's jobs run as")
    return DEMO_USER


def execute_hosts() -> bool:
    """Root with `ip` and `nft`: the demo's pool gets separate execute hosts."""
    import shutil
    return os.geteuid() == 0 and bool(shutil.which("ip")) and bool(shutil.which("nft"))


def host_settings(workdir) -> dict:
    """Pool and spool settings of a demo with execute hosts (jobs must not see the checkout or the demo's files)."""
    from htdask.demo.services import REPO
    return {"LOCALPOOL_EXECUTE_HOSTS": "2", "SPOOL_DIR": str(workdir / "spool"),
            "LOCALPOOL_SUBMIT_DIRS": f"{REPO}:{workdir}"}


def start_execute_hosts(stack: Stack) -> str:
    """Start root's runner (it makes the execute hosts); the submit host's address on the pool's bridge."""
    import socket
    import subprocess
    from htdask.demo.procs import wait_until
    from htdask.demo.services import REPO
    from htdask_localpool import hosts
    res = subprocess.run([sys.executable, "-m", "htdask_localpool", "start"], env=stack.env, cwd=str(REPO),
                         capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"localpool start: {res.stderr.strip()}")
    # `localpool start` returns once the runner holds its lock; the runner writes the plan as it makes the hosts
    plan = wait_until(lambda: hosts.Plan.load(stack.env["LOCALPOOL_DIR"]), 60, 0.05,
                      "the pool's execute hosts (execute-hosts.json)")

    def up():
        with socket.socket() as sock:
            try:
                sock.bind((plan.submit_addr, 0))
                return True
            except OSError:
                return False
    wait_until(up, 60, 0.2, "the pool's bridge")
    return plan.submit_addr


def _cli(stack: Stack, *args: str, timeout: float = 300.0) -> str:
    out = stack.cli(*args, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"cli {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def run_demo(keep: bool = False) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    user = demo_user()
    password = secrets.token_urlsafe(12)
    stack = Stack(beat=True, flower_auth=f"admin:{password}", redis_password=secrets.token_urlsafe(16),
                  appendonly=True, exporter=True, POLL_INTERVAL="2", SCHEDD_MIN_INTERVAL="0.1",
                  **({"DEFAULT_OWNER": user} if user else {}))
    if execute_hosts():
        stack.env_extra.update(host_settings(stack.workdir))
    host = "127.0.0.1"
    scheduler = None
    kept = False
    try:
        _say("starting redis-server, the local pool, a Celery worker (queue 'local'), beat, Flower and the exporter")
        stack.start()
        secret = stack.workdir / "flower-password"
        secret.touch(mode=0o600)
        secret.write_text(password + "\n")
        _say(f"Redis     redis://:***@127.0.0.1:{stack.redis.port}/0 "
             f"(AOF on, password in {stack.redis.workdir}/redis.conf)")
        _say(f"Flower    http://127.0.0.1:{stack.flower_port}/  (user admin, password in {secret})")
        _say(f"status    {stack.exporter_url}  (status page; Prometheus metrics at {stack.exporter_url}metrics)")
        _say(f"pool      LOCALPOOL_DIR={stack.env['LOCALPOOL_DIR']}")
        if execute_hosts():
            host = start_execute_hosts(stack)
            _say(f"execute   2 execute hosts (network namespaces, no view of this host's files); this host is "
                 f"{host} on their network, where the schedulers listen")
        scheduler, address, dashboard = start_scheduler(stack, host)
        _say(f"Dask scheduler {address}  (dashboard {dashboard})")

        _say("part 1: the CLI. htdask scale demo 4 --wait   (one condor_submit, queue 4)")
        print(_cli(stack, "scale", "demo", "4", "--scheduler", address, "--wait", "--timeout", "180"), end="")
        print(_cli(stack, "status"))
        print(_cli(stack, "jobs", "demo"))
        _compute(address, expected_workers=4)

        _say("htdask scale demo 1 --wait")
        print(_cli(stack, "scale", "demo", "1", "--wait", "--timeout", "120"), end="")
        print(_cli(stack, "status"))

        _say("htdask delete demo --wait")
        print(_cli(stack, "delete", "demo", "--wait", "--timeout", "120"), end="")
        print(_cli(stack, "poll"))
        _calls(stack)  # the scheduler stays up: KEEP=1 leaves it (and its dashboard) to the user

        _say("part 2: Dask Gateway, workers as HTCondor jobs through the same Celery tasks")
        from htdask.demo.gateway import run_gateway_demo
        run_gateway_demo(stack, _say, host=host)
        print(_cli(stack, "poll"))
        _calls(stack)
        if keep:
            _print_keep(stack, password, address, dashboard)
            kept = True
            while True:
                time.sleep(3600)
        _say("demo complete")
        return 0
    except KeyboardInterrupt:
        _say("stopped as asked" if kept else "interrupted")
        return 0 if kept else 130
    except Exception as exc:  # the demo reports and still cleans up
        print(f"demo failed: {exc}", file=sys.stderr)
        print(stack.logs(), file=sys.stderr)
        return 1
    finally:
        _say("stopping everything the demo started")
        if scheduler:
            scheduler.stop()
        stack.stop()


def start_scheduler(stack: Stack, host: str = "127.0.0.1") -> tuple[Process, str, str]:
    """A Dask scheduler for the demo's workers on `host` (loopback, or the pool's bridge address the
    execute hosts reach): (process, its address, its dashboard's URL)."""
    port, dashboard_port = free_port(host), free_port(host)
    scheduler = Process([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", host,
                         "--port", str(port), "--dashboard-address", f"{host}:{dashboard_port}"],
                        env=stack.env, log_path=stack.logdir / "scheduler.log", name="dask-scheduler")
    wait_for_port(port, host=host, timeout=60)
    wait_for_port(dashboard_port, host=host, timeout=60)
    return scheduler, f"tcp://{host}:{port}", f"http://{host}:{dashboard_port}/status"


def _print_keep(stack: Stack, flower_password: str, scheduler: str, dashboard: str) -> None:
    """KEEP=1: where everything is, its passwords, how to use it from another shell and how to stop it;
    `scheduler`, `dashboard`: the address of the demo's Dask scheduler (still running) and its dashboard."""
    env = stack.env
    _say("everything keeps running (make demo KEEP=1):")
    print(f"    Redis     {stack.redis.url}")
    print(f"    Flower    http://127.0.0.1:{stack.flower_port}/   user admin, password {flower_password}")
    if stack.exporter_url:
        print(f"    status    {stack.exporter_url}   (Prometheus metrics at {stack.exporter_url}metrics)")
    print(f"    Dask      scheduler {scheduler}   dashboard {dashboard}")
    print(f"    pool      LOCALPOOL_DIR={env['LOCALPOOL_DIR']}")
    print(f"    logs      controller {stack.logdir}   worker jobs LOG_DIR={env['LOG_DIR']}")
    print("    from another shell, at the top of the checkout:")
    print("      . .venv/bin/activate")
    print(f"      export REDIS_URL='{stack.redis.url}' LOCALPOOL_DIR='{env['LOCALPOOL_DIR']}' LOG_DIR='{env['LOG_DIR']}'"
          + (f" DEFAULT_OWNER={env['DEFAULT_OWNER']}" if env.get("DEFAULT_OWNER") else "")
          + (f" SPOOL_DIR='{env['SPOOL_DIR']}'" if env.get("SPOOL_DIR") else ""))
    print(f"      export PATH='{stack.pool_bin}':\"$PATH\"")
    print(f"      htdask scale mine 2 --scheduler {scheduler} --wait   # its workers show on the dashboard")
    print("      htdask status; htdask logs mine --tail 5")
    print(f"    stop:     Ctrl-C here, or kill {os.getpid()} (everything the demo started stops)", flush=True)


def _calls(stack: Stack) -> None:
    counts = {c: len(stack.calls(c)) for c in ("condor_submit", "condor_rm", "condor_q")}
    _say("schedd calls so far: " + ", ".join(f"{n} {c}" for c, n in counts.items()))


def _compute(address: str, expected_workers: int) -> None:
    """A real computation on the HTCondor-job workers, checked against NumPy."""
    import dask.array as da
    import numpy as np
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(expected_workers, timeout=120)
        workers = client.scheduler_info()["workers"]
        names = sorted(w["name"] for w in workers.values())
        _say(f"{len(workers)} Dask workers connected: {', '.join(map(str, names))}")
        x = da.random.RandomState(42).random_sample((2000, 2000), chunks=(500, 500))
        got = x.dot(x.T).sum().compute()
        xn = x.compute()  # the same (seeded) numbers, computed again and fetched
        want = np.dot(xn, xn.T).sum()
        ok = abs(got - want) <= 1e-9 * abs(want)
        _say(f"sum(x @ x.T) on the cluster = {got:.6f}; NumPy = {want:.6f}: {'match' if ok else 'MISMATCH'}")
        if not ok:
            raise RuntimeError("the cluster's result differs from NumPy's")


if __name__ == "__main__":
    sys.exit(run_demo(keep="--keep" in sys.argv))
