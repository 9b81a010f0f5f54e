"""A DaskCluster of the operator on a pool with separate execute hosts (issue 25), against the API server
emulator: the operator mirrors the cluster's Secret into OPERATOR_CREDENTIALS_DIR on the submit node
(invisible to jobs), the workers get the TLS files and the token by file transfer and join a TLS
scheduler (played here by a real `dask scheduler` with the Secret's keypair, on the pool's bridge) and
compute a rechunked sum across two execute hosts. Root only.
"""
from __future__ import annotations

import base64
import os

import pytest

from htdask.demo.procs import free_port
from htdask.demo.services import have_redis
from tests import hosts_stack as hs
from tests.conftest import needs
from tests.k8s_emulator import Emulator
from tests.test_operator_e2e import Gateway, start_operator

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="requires root: network namespaces"),
              pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")]


@pytest.fixture(scope="module")
@needs("stack", "root")
def stack(service_user):
    with hs.running(service_user, exporter=True) as s:
        yield s


@pytest.fixture
@needs("k8s")
def api():
    with Emulator() as emulator:
        yield emulator


def test_operator_cluster_on_execute_hosts(stack, api, tmp_path, service_user):
    from htdask.k8s_operator import bodies
    bridge = hs.bridge_address(stack)
    port = free_port(bridge)
    creds = stack.workdir / "operator-credentials"  # on the submit node, under the hidden /tmp
    ns, name = "sci", "oc1"
    gw = Gateway(api, ns, "gw-xh", service_user)
    op = start_operator(stack, api, tmp_path, "gw-xh", OPERATOR_SCHEDULER_ADDRESS=f"tls://{bridge}:{port}",
                        OPERATOR_CREDENTIALS_DIR=str(creds))
    sched = None
    try:
        gw.create(name)
        gw.wait_phase(name, "Pending")
        secret = hs.wait(lambda: gw.obj("secrets", bodies.secret_name(name)), what="the credentials Secret")
        data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
        mine = tmp_path / "scheduler-tls"  # the scheduler pod's mount, played here
        mine.mkdir()
        for k in ("dask.crt", "dask.pem"):
            (mine / k).write_bytes(data[k])
        tls = {"ca": str(mine / "dask.crt"), "cert": str(mine / "dask.crt"), "key": str(mine / "dask.pem")}
        sched = hs.Scheduler(stack, bridge, tls=tls, port=port)
        gw.scheduler_ready(name)
        status = gw.wait_phase(name, "Running", timeout=60)
        ours = status["htcondor"]["cluster"]
        gw.patch(name, "/spec/replicas", 2)
        with sched.client() as client:
            hs.compute_across_workers(client, timeout=240)
            assert hs.worker_hosts(client) == hs.host_addresses(stack)
            seen = hs.seen_by_workers(client, [str(creds), str(creds / ours / "dask.pem")])
            assert not any(any(v.values()) for v in seen.values()), seen
        token = data["api-token"].decode().strip()
        key_line = [ln for ln in data["dask.pem"].decode().splitlines() if ln and "-----" not in ln][2]
        gw.patch(name, "/spec/active", False)
        gw.wait_phase(name, "Stopped", timeout=90)
        from tests.conftest import live
        hs.wait(lambda: not live(stack, ours), what="the jobs to leave (their sandboxes go with them)")
        found = hs.scan_for(stack, [token, key_line], skip=(creds, stack.workdir / "spool"))
        assert found == [], f"the operator's secrets outside the credentials directory: {found}"
    finally:
        if sched is not None:
            sched.stop()
        op.stop()
