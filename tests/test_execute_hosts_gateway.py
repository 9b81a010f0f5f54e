"""Dask Gateway clusters on a pool with separate execute hosts (issue 25): TLS files and the API token
reach the workers by file transfer, Docker-universe workers on a bridge network advertise their execute
host's address and published port, or use the host's network; the scheduler runs on the gateway host
or as a job on an execute host (the gateway reaches it at that host's address).

Each cluster computes a rechunked array sum that moves data between its two workers. Root only.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from htdask.demo.gateway_server import GatewayServer, close_client
from htdask.demo.procs import free_port
from htdask.demo.services import have_redis
from tests import hosts_stack as hs
from tests.conftest import needs

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="requires root: network namespaces"),
              pytest.mark.skipif(not have_redis(), reason="redis-server is not installed"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

FAST = {
    "HTCondorBackend.cluster_heartbeat_period": 2,
    "HTCondorBackend.cluster_heartbeat_timeout": 60.0,
    "HTCondorBackend.worker_status_period": 2.0,
    "HTCondorBackend.cluster_status_period": 2.0,
    "HTCondorClusterConfig.worker_memory": "512 M",
    "HTCondorClusterConfig.scheduler_memory": "512 M",
    "HTCondorClusterConfig.worker_job_options": {"universe": "docker", "docker_image": "ghcr.io/dask/dask:latest"},
}
#: a per-cluster option for the network of the Docker-universe workers (htdask/domain/joboptions.py maps it)
OPTIONS = """
from dask_gateway_server.options import Options, Select
c.HTCondorBackend.cluster_options = Options(Select("network", ["bridge", "host"], default="bridge"),
                                            handler=lambda options: {"docker_network": options.network})
"""


@pytest.fixture(scope="module")
@needs("stack", "root")
def stack(service_user):
    with hs.running(service_user, exporter=True) as s:
        yield s


def _cluster(srv, network: str, stack, expect_hosts: set[str], check=None):
    gw = srv.client("alice")
    try:
        options = gw.cluster_options()
        options.network = network
        cluster = gw.new_cluster(options)
        try:
            cluster.scale(2)
            with cluster.get_client(set_as_default=False) as client:
                hs.compute_across_workers(client, timeout=240)
                addrs = list(client.scheduler_info()["workers"])
                assert all(a.startswith("tls://") for a in addrs), addrs
                assert hs.worker_hosts(client) == expect_hosts, addrs
                ports = {int(a.rsplit(":", 1)[1]) for a in addrs}
                if network == "bridge":  # the ports HTCondor published (the pool's from 31000), not the container's
                    assert all(p >= 31000 for p in ports) and 8788 not in ports, ports
                # the nannies too: the scheduler reaches each at the address it advertised (a restart goes there)
                nannies = {w["nanny"] for w in client.scheduler_info()["workers"].values()}
                assert {a.split("://", 1)[1].rsplit(":", 1)[0] for a in nannies} == expect_hosts, nannies
                if network == "bridge":
                    assert all(int(a.rsplit(":", 1)[1]) >= 31000 for a in nannies), nannies
                assert len(client.run(os.getpid, nanny=True)) == 2
                client.restart_workers([addrs[0]], timeout=120)
                hs.compute_across_workers(client, timeout=240)
                token = Path(cluster_workdir(srv, cluster.name), "api-token").read_text().strip()
                seen = hs.seen_by_workers(client, [cluster_workdir(srv, cluster.name)])
                assert not any(any(v.values()) for v in seen.values()), seen
                if check:
                    check(client, cluster)
            return cluster.name, token
        finally:
            cluster.shutdown()
    finally:
        close_client(gw)


def cluster_workdir(srv, name: str) -> str:
    return str(srv.workdir / "clusters" / name)


def _server(stack, name: str, proxy_on_bridge: bool = False, **overrides) -> GatewayServer:
    bridge = hs.bridge_address(stack)
    api = f"{bridge}:{free_port(bridge)}"  # the private API, where execute hosts reach it
    srv = GatewayServer(stack.env, stack.workdir / name, code=OPTIONS,
                        overrides={**FAST, "HTCondorBackend.clusters_directory": str(stack.workdir / name / "clusters"),
                                   "HTCondorBackend.api_url": f"http://{api}/api",  # a scheduler job reports there
                                   **overrides})
    srv.env["GATEWAY_API_ADDRESS"] = api
    if proxy_on_bridge:  # the proxy where execute hosts reach it too; workers go through it
        srv.env["GATEWAY_ADDRESS"] = f"0.0.0.0:{srv.port}"
        srv.overrides["HTCondorBackend.worker_proxy_address"] = f"{bridge}:{srv.port}"
    return srv.start()


def test_gateway_workers_on_bridge_and_host_networks_with_a_local_scheduler(stack):
    bridge = hs.bridge_address(stack)
    srv = _server(stack, "gw-local", **{"HTCondorBackend.scheduler_host": bridge})
    try:
        hosts = hs.host_addresses(stack)
        name, token = _cluster(srv, "bridge", stack, hosts)
        _cluster(srv, "host", stack, hosts)
        # neither the API token nor the key is anywhere but the staging directories
        found = hs.scan_for(stack, [token], skip=(srv.workdir / "clusters",))
        assert found == [], f"the gateway API token is kept outside its staging directory: {found}"
    finally:
        srv.stop()


def test_gateway_scheduler_as_a_job_on_an_execute_host(stack):
    srv = _server(stack, "gw-job", **{"HTCondorBackend.scheduler_mode": "job"})
    try:
        hosts = hs.host_addresses(stack)
        gw = srv.client("alice")
        try:
            cluster = gw.new_cluster()
            try:
                assert cluster.scheduler_address  # reported by the job, at its execute host's address
                cluster.scale(2)
                with cluster.get_client(set_as_default=False) as client:
                    hs.compute_across_workers(client, timeout=240)
                    sched = client.scheduler_info()["address"]
                    assert sched.split("://")[1].rsplit(":", 1)[0] in hosts, sched
            finally:
                cluster.shutdown()
        finally:
            close_client(gw)
    finally:
        srv.stop()


def test_gateway_workers_reach_a_loopback_scheduler_through_the_sni_proxy(stack):
    """The scheduler listens on 127.0.0.1 only: workers on execute hosts reach it through the gateway's
    proxy (gateway://proxy:port/<cluster>, routed by SNI), one proxied port for every cluster."""
    srv = _server(stack, "gw-proxy", proxy_on_bridge=True)
    try:
        hosts = hs.host_addresses(stack)

        def through_proxy(client, cluster):
            assert client.scheduler_info()["address"].startswith("tls://127.0.0.1:")
            out = stack.condor("condor_q", "-allusers", "-af", "Arguments", "-constraint",
                               f'DaskGatewayCluster == "{cluster.name}"').stdout
            assert f"gateway://{hs.bridge_address(stack)}:{srv.port}/{cluster.name}" in out, out
        _cluster(srv, "bridge", stack, hosts, check=through_proxy)
    finally:
        srv.stop()
