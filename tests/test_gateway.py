"""The Dask Gateway backend end to end: a real dask-gateway-server (htdask/gateway/config.py), a real Celery
worker and beat, Redis and the local pool; Dask workers are HTCondor jobs of the pool.

Kept lean for a 2-core machine: 1-thread workers of 512 MB, small computations, short periods.
"""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from htdask.demo.gateway_server import GatewayServer, close_client
from htdask.demo.services import Stack, have_redis
from tests.conftest import live, needs, queue_of, wait_until

pytestmark = [pytest.mark.skipif(not have_redis(), reason="redis-server is not installed"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

#: short periods for tests (every value documented in htdask/gateway/backend.py)
FAST = {
    "HTCondorBackend.cluster_heartbeat_period": 2,
    "HTCondorBackend.cluster_heartbeat_timeout": 60.0,  # a busy 2-core machine may delay a heartbeat
    "HTCondorBackend.worker_status_period": 2.0,
    "HTCondorBackend.cluster_status_period": 2.0,
    "HTCondorBackend.history_grace": 3.0,
    "HTCondorClusterConfig.worker_memory": "512 M",
    "HTCondorClusterConfig.adaptive_period": 1.0,
}


def make_stack(service_user, **env) -> Stack:
    env.setdefault("POLL_INTERVAL", "3")
    env.setdefault("SCHEDD_MIN_INTERVAL", "0")
    return Stack(beat=True, DEFAULT_OWNER=service_user, **env)


@pytest.fixture(scope="module")
@needs("stack")
def stack(service_user):
    with make_stack(service_user) as s:
        yield s



def submits_for(stack: Stack, cluster: str) -> int:
    """condor_submit calls whose description named this cluster (calls.log keeps argv, the file is gone)."""
    return sum(1 for row in stack.calls("condor_submit") if cluster in row[2]) or len(stack.calls("condor_submit"))


def worker_names(client) -> set[str]:
    return {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}


def no_processes_left(srv: GatewayServer) -> bool:
    """Nothing this server started is left: the gateway, its schedulers, its jobs (found by their mark;
    other Dask processes on the machine are not ours to count)."""
    wait_until(lambda: not srv.processes(), timeout=60, message="no process of this gateway left")
    return True


def test_scale_compute_retire_adapt_and_shutdown(stack, service_user):
    import dask.array as da
    import numpy as np
    from distributed import futures_of

    ports = {"HTCondorBackend.scheduler_port_range": "47200:47299",
             "HTCondorBackend.worker_port_range": "47000:47099",
             "HTCondorBackend.nanny_port_range": "47100:47199"}
    srv = GatewayServer(stack.env, stack.workdir / "gw-main", overrides={**FAST, **ports})
    srv.start()
    try:
        gw = srv.client("alice")
        cluster = gw.new_cluster()
        name = cluster.name
        client = cluster.get_client(set_as_default=False)

        # ---- scale(3): one condor_submit, the gateway's names, the service account --------------
        submits = len(stack.calls("condor_submit"))
        cluster.scale(3)
        client.wait_for_workers(3, timeout=120)
        jobs = wait_until(lambda: len(live(stack, name)) == 3 and live(stack, name), message="3 jobs")
        assert {j["DaskWorkerName"] for j in jobs} == worker_names(client), "worker --name is the gateway's"
        assert len({j["ClusterId"] for j in jobs}) == 1, "the 3 starts were one condor_submit"
        assert len(stack.calls("condor_submit")) == submits + 1
        assert {j["Owner"] for j in jobs} == {service_user}, "jobs run as the service's account"
        info = client.scheduler_info(n_workers=-1)
        port = lambda address: int(address.rsplit(":", 1)[1])  # noqa: E731
        assert 47200 <= port(info["address"]) <= 47299, "the scheduler port is in its range"
        assert all(47000 <= port(a) <= 47099 for a in info["workers"]), "worker ports in their range"
        assert all(47100 <= port(w["nanny"]) <= 47199 for w in info["workers"].values()), "nanny ports too"

        # ---- the CLI shows the gateway user and will not scale the cluster by mistake -----------------
        row = json.loads(stack.cli("status", name, "--json").stdout)["clusters"][0]
        assert (row["managed_by"], row["user"]) == ("gateway", "alice"), row
        refused = stack.cli("scale", name, "1")
        assert refused.returncode == 2 and "managed by the gateway for user alice" in refused.stderr
        assert len(live(stack, name)) == 3, "nothing changed"

        # ---- the dashboard link answers with the scheduler's dashboard (bokeh, through the proxy) --
        link = cluster.dashboard_link
        assert link.startswith(srv.address) and name in link, link
        with urllib.request.urlopen(link, timeout=30) as resp:
            page = resp.read().decode(errors="replace")
        assert resp.status == 200 and "bokeh" in page.lower() and "Dask" in page, page[:500]

        # ---- a real computation, checked against NumPy ------------------------------------------
        arr = np.random.RandomState(42).random_sample((600, 600))
        x = da.from_array(arr, chunks=(150, 150))
        assert np.allclose(client.compute((x @ x.T).sum()).result(timeout=120), (arr @ arr.T).sum())

        # ---- scale(1) while a long task runs: retired, data moved, the task completes -----------
        y = client.persist(x + 1)
        wait_until(lambda: all(f.status == "finished" for f in futures_of(y)), message="y persisted")
        keys = [k for k in client.who_has(y)]
        assert len({a for v in client.who_has(y).values() for a in v}) >= 2, "data spread over workers"

        def slow(seconds):
            import time as t
            t.sleep(seconds)
            return 42

        long = client.submit(slow, 8, pure=False)
        wait_until(lambda: any(client.processing().values()), message="the long task runs")
        cluster.scale(1)
        wait_until(lambda: len(worker_names(client)) == 1, timeout=90, message="2 workers retired")
        who = client.who_has(y)
        assert all(who[k] for k in keys), "every persisted chunk moved to the remaining worker"
        assert long.result(timeout=90) == 42
        assert np.allclose(client.compute(y).result(timeout=60), arr + 1)
        remaining = worker_names(client)
        jobs = wait_until(lambda: len(live(stack, name)) == 1 and live(stack, name), timeout=60,
                          message="2 jobs removed")
        assert {j["DaskWorkerName"] for j in jobs} == remaining
        time.sleep(4)  # a poll and a reconcile later: nothing was submitted again
        assert len(live(stack, name)) == 1
        assert len(stack.calls("condor_submit")) == submits + 1, "no retired worker was resubmitted"

        # ---- adapt(1, 4) under load grows, then shrinks ------------------------------------------
        cluster.adapt(minimum=1, maximum=4)

        def inc(i):
            import time as t
            t.sleep(1.0)
            return i + 1

        futures = client.map(inc, range(40), pure=False)
        peak = wait_until(lambda: len(worker_names(client)) >= 3 and len(worker_names(client)), timeout=120,
                          message="adaptive scale-up")
        assert client.gather(futures) == list(range(1, 41))
        assert peak <= 4
        assert len(stack.calls("condor_submit")) <= submits + 4, "adaptive starts were batched"
        wait_until(lambda: len(worker_names(client)) == 1, timeout=120, message="adaptive scale-down")
        wait_until(lambda: len(live(stack, name)) == 1, timeout=60, message="1 job after scale-down")

        # ---- shutdown: no job left, no process left ---------------------------------------------
        client.close()
        cluster.shutdown()
        wait_until(lambda: not queue_of(stack, name), timeout=60, message="queue empty of the cluster")
        close_client(gw)
    finally:
        srv.stop()
    assert no_processes_left(srv)


def test_gateway_restart_keeps_running_clusters(stack, tmp_path):
    from cryptography.fernet import Fernet
    import dask.array as da
    import numpy as np

    env = {**stack.env, "GATEWAY_DB_URL": f"sqlite:///{tmp_path / 'gateway.sqlite'}",
           "DASK_GATEWAY_ENCRYPT_KEYS": Fernet.generate_key().decode()}
    srv = GatewayServer(env, stack.workdir / "gw-restart", overrides=FAST)
    srv.start()
    try:
        gw = srv.client("bob")
        cluster = gw.new_cluster(shutdown_on_close=False)
        name = cluster.name
        cluster.scale(2)
        client = cluster.get_client(set_as_default=False)
        client.wait_for_workers(2, timeout=120)
        names = worker_names(client)
        jobs = {f"{j['ClusterId']}.{j['ProcId']}" for j in live(stack, name)}
        client.close()
        cluster.close()
        close_client(gw)

        srv.stop()  # SIGTERM: with a file database the gateway leaves its clusters running
        assert len(live(stack, name)) == 2, "the workers' jobs outlive the gateway"
        srv.start()

        gw = srv.client("bob")
        assert name in {c.name for c in gw.list_clusters()}
        cluster = gw.connect(name)
        client = cluster.get_client(set_as_default=False)
        client.wait_for_workers(2, timeout=60)
        assert worker_names(client) == names
        assert {f"{j['ClusterId']}.{j['ProcId']}" for j in live(stack, name)} == jobs, "no job was replaced"
        arr = np.arange(10_000, dtype="f8").reshape(100, 100)
        assert client.compute(da.from_array(arr, chunks=50).sum()).result(timeout=60) == arr.sum()
        cluster.scale(3)
        client.wait_for_workers(3, timeout=120)
        client.close()
        cluster.shutdown()
        wait_until(lambda: not queue_of(stack, name), timeout=60, message="queue empty after shutdown")
        close_client(gw)
    finally:
        srv.stop()
    assert no_processes_left(srv)


@pytest.fixture(scope="module")
@needs("root")
def owner_user():
    """A fresh unprivileged Unix user (uid >= 1000) standing for a gateway user, removed at the end."""
    import os
    import pwd
    import subprocess
    if os.geteuid() != 0:
        pytest.skip("creating a Unix user needs root (CI runs as root)")
    user = f"htdask-gw-{os.getpid()}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", user], check=True)
    try:
        assert pwd.getpwnam(user).pw_uid >= 1000
        yield user
    finally:
        subprocess.run(["userdel", user], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_run_as_owner_runs_each_users_jobs_and_scheduler_as_that_user(stack, owner_user, tmp_path):
    import pwd

    user_map = tmp_path / "users.yaml"
    user_map.write_text(f"dana@example.org: {owner_user}\n")
    env = {**stack.env, "GATEWAY_RUN_AS_OWNER": "1", "USER_MAP_FILE": str(user_map), "CICONNECT_URL": ""}
    srv = GatewayServer(env, stack.workdir / "gw-owner", overrides=FAST)
    srv.start()
    try:
        gw = srv.client("dana@example.org")
        cluster = gw.new_cluster()
        name = cluster.name
        cluster.scale(1)
        client = cluster.get_client(set_as_default=False)
        client.wait_for_workers(1, timeout=120)
        assert {j["Owner"] for j in live(stack, name)} == {owner_user}
        uid = pwd.getpwnam(owner_user).pw_uid
        assert client.run_on_scheduler(lambda: __import__("os").getuid()) == uid, "scheduler runs as the owner"
        assert client.submit(lambda: __import__("os").getuid(), pure=False).result(timeout=60) == uid
        client.close()
        cluster.shutdown()
        wait_until(lambda: not queue_of(stack, name), timeout=60, message="queue empty")
        close_client(gw)
    finally:
        srv.stop()
    assert no_processes_left(srv)


def test_scheduler_as_an_htcondor_job(stack):
    srv = GatewayServer(stack.env, stack.workdir / "gw-job", overrides={
        **FAST, "HTCondorBackend.scheduler_mode": "job", "HTCondorClusterConfig.scheduler_memory": "512 M"})
    srv.start()
    try:
        gw = srv.client("erin")
        cluster = gw.new_cluster()
        name = cluster.name
        sched = queue_of(stack, name + "-scheduler")
        assert [(j["DaskWorkerName"], j["JobStatus"]) for j in sched] == [("scheduler", 2)]
        cluster.scale(2)
        client = cluster.get_client(set_as_default=False)
        client.wait_for_workers(2, timeout=120)
        assert client.submit(lambda x: x * 2, 21).result(timeout=60) == 42
        client.close()
        cluster.shutdown()
        wait_until(lambda: not queue_of(stack, name) and not queue_of(stack, name + "-scheduler"), timeout=60,
                   message="no scheduler or worker job left")
        close_client(gw)
    finally:
        srv.stop()
    assert no_processes_left(srv)
