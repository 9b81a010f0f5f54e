"""`make demo`: the whole controller on embedded defaults, then everything it started is stopped.

Starts a private redis-server, the local pool, a Celery worker on the schedd queue, beat, Flower
(behind basic auth), the exporter (status page and Prometheus metrics; its URL is printed) and a Dask
scheduler with its dashboard (its URL too).
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
        scheduler, address, dashboard = start_scheduler(stack)
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
        run_gateway_demo(stack, _say)
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


def start_scheduler(stack: Stack) -> tuple[Process, str, str]:
    """A Dask scheduler for the demo's workers, on loopback: (process, its address, its dashboard's URL)."""
    port, dashboard_port = free_port(), free_port()
    scheduler = Process([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                         "--port", str(port), "--dashboard-address", f"127.0.0.1:{dashboard_port}"],
                        env=stack.env, log_path=stack.logdir / "scheduler.log", name="dask-scheduler")
    wait_for_port(port, timeout=60)
    wait_for_port(dashboard_port, timeout=60)
    return scheduler, f"tcp://127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}/status"


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
          + (f" DEFAULT_OWNER={env['DEFAULT_OWNER']}" if env.get("DEFAULT_OWNER") else ""))
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
