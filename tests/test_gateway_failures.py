"""Start failures versus queue wait, end to end (a pool with ONE slot, so jobs really wait in the queue).

- a job that ran and ended before its worker connected is a failed start, reported with its exit code;
- a held job is a failed start, reported with its hold reason;
- a job running too long without its worker connecting is reported and replaced;
- a job idle in the queue is NOT a failed start, however long it waits.
"""
from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from htdask.demo.gateway_server import GatewayServer, close_client
from htdask.demo.services import FAKE_WORKER, have_redis
from tests.conftest import wait_until
from tests.test_gateway import FAST, live, make_stack, no_processes_left, queue_of, worker_names

pytestmark = [pytest.mark.stack, pytest.mark.skipif(not have_redis(), reason="redis-server is not installed"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

#: clusters choose their worker command (the failure cases use broken ones)
OPTIONS = '''
from dask_gateway_server.options import Options, String
def _worker_cmd(options):
    return {"worker_cmd": options.worker_cmd} if options.worker_cmd else {}
c.HTCondorBackend.cluster_options = Options(String("worker_cmd", default=""), handler=_worker_cmd)
'''


def log_lines(srv: GatewayServer, cluster: str, needle: str) -> list[str]:
    text = srv.log_path.read_text(errors="replace") if srv.log_path.exists() else ""
    return [ln for ln in text.splitlines() if cluster in ln and needle in ln]


def test_start_failures_are_reported_and_queue_wait_is_not(service_user):
    with make_stack(service_user, LOCALPOOL_SLOTS="1") as stack:
        fake = stack.workdir / "fake_worker"
        shutil.copy(FAKE_WORKER, fake)
        os.chmod(fake, 0o755)
        srv = GatewayServer(stack.env, stack.workdir / "gw", code=OPTIONS, overrides={
            **FAST, "HTCondorBackend.worker_connect_timeout": 6.0,
            "HTCondorBackend.worker_start_failure_limit": 2})
        srv.start()
        try:
            gw = srv.client("carol")

            # ---- the job ran and ended: exit code reported, the cluster fails after 2 starts ----
            cluster = gw.new_cluster(worker_cmd="/bin/false")
            name = cluster.name
            cluster.scale(1)
            wait_until(lambda: gw.get_cluster(name).status.name == "FAILED", timeout=90,
                       message="cluster failed after repeated start failures")
            lines = log_lines(srv, name, "failed to start")
            assert lines and all("exit code 1" in ln for ln in lines), lines
            wait_until(lambda: not queue_of(stack, name), timeout=60, message="no job left")

            # ---- the job is held: hold reason reported ------------------------------------------
            cluster = gw.new_cluster(worker_cmd="/etc/hostname")  # not executable: the job is held
            name = cluster.name
            cluster.scale(1)
            lines = wait_until(lambda: log_lines(srv, name, "failed to start"), timeout=60,
                               message="held job reported")
            assert "held before its worker connected" in lines[0] and "HoldReasonCode" in lines[0], lines
            cluster.shutdown()
            wait_until(lambda: not queue_of(stack, name), timeout=60, message="no job left")

            # ---- the job runs but its worker never connects: reported and replaced --------------
            cluster = gw.new_cluster(worker_cmd=str(fake))
            name = cluster.name
            cluster.scale(1)
            first = wait_until(lambda: [j for j in live(stack, name) if j["JobStatus"] == 2], timeout=60,
                               message="the job runs")[0]
            lines = wait_until(lambda: log_lines(srv, name, "without its worker connecting"), timeout=60,
                               message="stuck job reported")
            assert re.search(r"running for \d+s", lines[0])
            jobs = wait_until(lambda: [j for j in live(stack, name)
                                       if j["DaskWorkerName"] != first["DaskWorkerName"]], timeout=60,
                              message="a replacement with a new name")
            assert first["DaskWorkerName"] not in {j["DaskWorkerName"] for j in live(stack, name)} or \
                wait_until(lambda: first["DaskWorkerName"] not in {j["DaskWorkerName"] for j in live(stack, name)},
                           timeout=30, message="the stuck job removed")
            assert jobs
            cluster.shutdown()
            wait_until(lambda: not queue_of(stack, name), timeout=60, message="no job left")

            # ---- queue wait is not failure: the 2nd worker waits for the only slot ---------------
            cluster = gw.new_cluster()
            name = cluster.name
            cluster.scale(2)
            client = cluster.get_client(set_as_default=False)
            client.wait_for_workers(1, timeout=120)
            idle = wait_until(lambda: [j for j in live(stack, name) if j["JobStatus"] == 1], timeout=30,
                              message="one job idle")[0]
            time.sleep(20)  # > 3 x worker_connect_timeout, and several checks
            assert log_lines(srv, name, "failed to start") == []
            still = [j for j in live(stack, name) if j["JobStatus"] == 1]
            assert [(j["ClusterId"], j["ProcId"]) for j in still] == [(idle["ClusterId"], idle["ProcId"])]
            assert len(worker_names(client)) == 1 and gw.get_cluster(name).status.name == "RUNNING"
            client.close()
            cluster.shutdown()
            wait_until(lambda: not queue_of(stack, name), timeout=60, message="no job left")
            close_client(gw)
        finally:
            srv.stop()
        assert no_processes_left(srv)
