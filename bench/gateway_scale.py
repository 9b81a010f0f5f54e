"""Benchmark `gateway_scale`: from `new_cluster()` + `scale(8)` to 8 workers connected, through a real
dask-gateway-server, our HTCondor backend against dask-gateway's `UnsafeLocalBackend`, in one run.

ours      `htdask/gateway/config.py` (HTCondorBackend): the 8 starts become one Celery request and one
          `condor_submit` to the local pool, whose jobs run `dask worker` as an unprivileged account.
baseline  dask-gateway's UnsafeLocalBackend: the gateway starts 8 `dask worker` processes itself.

Both use the same scheduler and worker commands (`dask scheduler` / `dask worker`, 1 thread, 512 MB),
the same client calls and timing: from `new_cluster()` until `client.wait_for_workers(8)` returns.
Rounds alternate ours / baseline (the machine is shared); medians are compared. Last line:

    gateway_scale: <ours/baseline>x (goal: <= 1.05x) ok|MISSED

    python bench/gateway_scale.py [--workers 8] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_path, bench_user, figure, machine, say  # noqa: E402
from htdask.gateway.pyenv import dask_command, job_environment  # noqa: E402
from htdask.demo.gateway_server import GatewayServer, close_client  # noqa: E402
from htdask.demo.services import Stack  # noqa: E402

GOAL = 1.05  # issue 18 (was 1.3)
COMMON = {"cluster_heartbeat_period": 2, "cluster_heartbeat_timeout": 60.0}


def ours(stack: Stack, workdir: Path) -> GatewayServer:
    overrides = {f"HTCondorBackend.{k}": v for k, v in COMMON.items()}
    overrides.update({"HTCondorClusterConfig.worker_memory": "512 M", "HTCondorClusterConfig.worker_cores": 1})
    return GatewayServer(stack.env, workdir, overrides=overrides, name="ours")


def baseline(stack: Stack, workdir: Path) -> GatewayServer:
    srv = GatewayServer(stack.env, workdir, config=None, name="upstream")
    overrides = {
        "DaskGateway.backend_class": "dask_gateway_server.backends.local.UnsafeLocalBackend",
        "DaskGateway.address": "127.0.0.1:0",
        "Proxy.address": f"127.0.0.1:{srv.port}",
        "DaskGateway.authenticator_class": "dask_gateway_server.auth.SimpleAuthenticator",
        "SimpleAuthenticator.password": srv.password,
        "LocalClusterConfig.scheduler_cmd": dask_command("scheduler"),
        "LocalClusterConfig.worker_cmd": dask_command("worker"),
        "LocalClusterConfig.environment": job_environment(),
        "LocalClusterConfig.worker_memory": "512 M",
        "LocalClusterConfig.worker_cores": 1,
    }
    overrides.update({f"UnsafeLocalBackend.{k}": v for k, v in COMMON.items()})
    srv.overrides = overrides
    return srv


def measure(srv: GatewayServer, n: int) -> float:
    gw = srv.client("bench")
    t0 = time.perf_counter()
    cluster = gw.new_cluster()
    cluster.scale(n)
    client = cluster.get_client(set_as_default=False)
    client.wait_for_workers(n, timeout=300)
    elapsed = time.perf_counter() - t0
    client.close()
    cluster.shutdown()
    close_client(gw)
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()

    say(f"machine: {machine()}")
    times: dict[str, list[float]] = {"ours": [], "upstream": []}
    with Stack(DEFAULT_OWNER=bench_user(), PATH=bench_path(), POLL_INTERVAL="5") as stack:
        servers = {"ours": ours(stack, stack.workdir / "ours"),
                   "upstream": baseline(stack, stack.workdir / "upstream")}
        try:
            for srv in servers.values():
                srv.start()
            for r in range(a.rounds):
                for kind in ("ours", "upstream") if r % 2 == 0 else ("upstream", "ours"):
                    dt = measure(servers[kind], a.workers)
                    times[kind].append(dt)
                    say(f"round {r + 1}: {kind:8s} new_cluster + scale({a.workers}) -> {a.workers} workers "
                        f"in {dt:.2f}s")
                    time.sleep(2)  # let the previous cluster's processes go
            subs = [row for row in stack.calls("condor_submit")]
            say(f"condor_submit calls for {a.rounds} clusters of ours: {len(subs)}")
        finally:
            for srv in servers.values():
                srv.stop()
    left = [p for srv in servers.values() for p in srv.processes()]
    if left:
        say(f"left over: {left}")
    med = {k: statistics.median(v) for k, v in times.items()}
    say(f"median: ours {med['ours']:.2f}s, UnsafeLocalBackend {med['upstream']:.2f}s")
    ratio = med["ours"] / med["upstream"]
    figure("gateway_scale", f"{ratio:.2f}x", f"<= {GOAL}x", ratio <= GOAL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
