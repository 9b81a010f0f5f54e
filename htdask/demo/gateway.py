"""The Dask Gateway part of `make demo`: the usual gateway interface, workers as HTCondor jobs.

    from htdask.demo.gateway import run_gateway_demo
    run_gateway_demo(stack, log)      # stack: a started htdask.demo.services.Stack (beat on); log: print-like

Starts `dask-gateway-server -f htdask/gateway/config.py` on a free port, then as a scientist would:
`Gateway().new_cluster()`, `cluster.scale(4)` (one condor_submit), a real computation checked against
NumPy, `cluster.scale(1)` (the scheduler retires 3 workers, their jobs are removed), `shutdown()`; then
stops the gateway. Raises on any mismatch; everything it started is stopped.
"""
from __future__ import annotations

import secrets
import time
from typing import Callable

from htdask.demo.gateway_server import GatewayServer, close_client
from htdask.demo.services import Stack


def _live_jobs(stack: Stack, cluster: str) -> list[str]:
    out = stack.condor("condor_q", "-allusers", "-constraint", f'DaskGatewayCluster == "{cluster}"',
                       "-af", "ClusterId", "ProcId", "JobStatus", "Owner", "DaskWorkerName")
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.strip()]
    return [f"{r[0]}.{r[1]} status={r[2]} owner={r[3]} name={r[4]}" for r in rows if r[2] in ("1", "2", "5")]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_gateway_demo(stack: Stack, log: Callable[[str], None] = print, workers: int = 4,
                     host: str = "127.0.0.1") -> None:
    """`host`: where the cluster's scheduler listens (the pool's bridge address with execute hosts)."""
    import dask.array as da
    import numpy as np

    password = secrets.token_urlsafe(12)
    srv = GatewayServer(stack.env, stack.workdir / "gateway", password=password, overrides={
        "HTCondorBackend.cluster_heartbeat_period": 2,
        "HTCondorBackend.cluster_heartbeat_timeout": 60.0,
        "HTCondorBackend.worker_status_period": 3.0,
        "HTCondorClusterConfig.worker_memory": "1 G",
        "HTCondorBackend.scheduler_host": host,
    })
    log(f"dask-gateway-server -f htdask/gateway/config.py   (GATEWAY_ADDRESS=127.0.0.1:{srv.port}, "
        f"log {srv.log_path})")
    srv.start()
    gw = cluster = client = None
    try:
        gw = srv.client("scientist")
        log(f'Gateway("{srv.address}", auth=BasicAuth("scientist", ...)).new_cluster()')
        cluster = gw.new_cluster()
        name = cluster.name
        log(f"cluster {name} running; its scheduler is a process on this host")
        submits = len(stack.calls("condor_submit"))
        log(f"cluster.scale({workers})   (one condor_submit, queue {workers} named workers)")
        cluster.scale(workers)
        client = cluster.get_client(set_as_default=False)
        client.wait_for_workers(workers, timeout=180)
        jobs = _wait(lambda: len(_live_jobs(stack, name)) == workers and _live_jobs(stack, name), 60,
                     f"{workers} jobs")
        log(f"{workers} workers connected; condor_submit calls: {len(stack.calls('condor_submit')) - submits}")
        for job in jobs:
            log(f"  job {job}")

        x = da.random.RandomState(42).random_sample((2000, 2000), chunks=(500, 500))
        got = client.compute(x.dot(x.T).sum()).result(timeout=300)
        xn = client.compute(x).result(timeout=300)
        want = np.dot(xn, xn.T).sum()
        ok = abs(got - want) <= 1e-9 * abs(want)
        log(f"sum(x @ x.T) on the cluster = {got:.6f}; NumPy = {want:.6f}: {'match' if ok else 'MISMATCH'}")
        if not ok:
            raise RuntimeError("the cluster's result differs from NumPy's")

        log("cluster.scale(1)   (the scheduler retires 3 workers, then their jobs are removed)")
        cluster.scale(1)
        _wait(lambda: len(client.scheduler_info(n_workers=-1)["workers"]) == 1, 120, "1 worker")
        _wait(lambda: len(_live_jobs(stack, name)) == 1, 60, "1 job")
        log(f"1 worker, 1 job left: {_live_jobs(stack, name)[0]}")

        client.close()
        client = None
        log("cluster.shutdown()")
        cluster.shutdown()
        cluster = None
        _wait(lambda: not _live_jobs(stack, name) or None, 60, "no job left")
        log("no job of the cluster left in the queue")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.shutdown()
        if gw is not None:
            close_client(gw)
        log("stopping dask-gateway-server")
        srv.stop()
