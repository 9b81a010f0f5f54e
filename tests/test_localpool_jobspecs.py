"""Every worker job description the controller generates round-trips through `condor_submit -dry-run`
with the attributes we meant: the CLI path, the gateway backend, the Kubernetes operator (docker
universe), and a site's extra_submit lines -- each reaching the job ad, not silently dropped."""
from __future__ import annotations

import re

import shlex
import sys
from types import SimpleNamespace

import classad2
import pytest

from tests.test_localpool_lib import dry_run, me
from htdask.domain.jobspec import WorkerJobSpec, worker_submit_description

ITEMS = [(3, "demo-3"), (4, "demo-4"), (7, "demo-7")]


@pytest.fixture
def work(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    return d


def roundtrip(env, work, cluster: str, options: dict, owner: str = "alice", items=ITEMS) -> list[dict]:
    desc = worker_submit_description(WorkerJobSpec(cluster=cluster, owner=owner, **options), items)
    ads = dry_run(env, work, desc.render())
    assert len(ads) == len(items) == desc.num_jobs
    return ads


def argv_of(ad: dict) -> list[str]:
    """The job's argv from its Arguments (V2 raw: whitespace-separated, single quotes group)."""
    return shlex.split(ad["Arguments"].replace("''", "'\"'\"'"))


def env_of(ad: dict) -> dict[str, str]:
    return dict(tok.split("=", 1) for tok in shlex.split(ad["Environment"]))


def common_checks(ads: list[dict], cluster: str, owner: str, items=ITEMS) -> None:
    for ad, (index, name) in zip(ads, items):
        assert (ad["DaskGatewayCluster"], ad["DaskClusterOwner"]) == (cluster, owner)
        assert (ad["DaskWorkerIndex"], ad["DaskWorkerName"]) == (index, name)
        assert ad["JobBatchName"] == cluster and ad["Owner"] == me() and ad["JobStatus"] == 1
        argv = argv_of(ad)
        assert argv[argv.index("--name") + 1] == name
        env = env_of(ad)
        assert env["DASK_GATEWAY_WORKER_NAME"] == name and env["DASK_GATEWAY_CLUSTER_NAME"] == cluster
        # the start script is the executable, shipped with the job (nothing read from a submit-side path)
        assert ad.get("TransferExecutable", True) is True and ad["Cmd"].endswith(".sh")
        assert ad["ShouldTransferFiles"] == "YES" and ad["WhenToTransferOutput"] == "ON_EXIT"
    assert [ad["ProcId"] for ad in ads] == list(range(len(items)))


def test_cli_scale_description(pool_env, work, monkeypatch):
    from tasks.options import job_options

    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.5:8786")
    options = job_options({"nthreads": 2, "memory_limit": 4 * 2**30})  # what `cli.py scale` sends
    ads = roundtrip(pool_env, work, "demo", options)
    common_checks(ads, "demo", "alice")
    ad = ads[0]
    assert ad["JobUniverse"] == 5 and "WantDocker" not in ad
    argv = argv_of(ad)
    assert argv[:4] == [sys.executable, "-m", "distributed.cli.dask_worker", "tcp://10.0.0.5:8786"]
    assert argv[argv.index("--nthreads") + 1] == "2" and argv[argv.index("--memory-limit") + 1] == "4GiB"
    assert (ad["RequestCpus"], ad["RequestMemory"]) == (2, 4096)
    assert "(TARGET.Cpus >= RequestCpus)" in str(ad["Requirements"])


def test_gateway_description_with_extra_submit(pool_env, work, tmp_path):
    from dask_gateway_server.backends.db_base import JobStatus as G
    from dask_gateway_server.utils import FrozenAttrDict

    from htdask.gateway.backend import HTCondorBackend, HTCondorClusterConfig

    extra = {"+ProjectName": '"physics"', "requirements": "(TARGET.HasCVMFS =?= true)", "request_gpus": "1",
             "periodic_remove": "NumJobStarts > 3", "max_retries": "5", "accounting_group": "group_physics",
             "concurrency_limits": "scratch"}
    backend = HTCondorBackend(worker_port_range="40000:40100", api_url="http://gw:8000/api",
                              scheduler_contact_host="submit.example.org")
    config = HTCondorClusterConfig(worker_cores=2, worker_memory="1 G", worker_extra_submit=extra).to_dict()
    cluster = SimpleNamespace(name="c0ffee", username="alice", token="tok", config=FrozenAttrDict(config),
                              scheduler_address="tls://127.0.0.1:8786", state={"workdir": str(tmp_path)},
                              target=G.RUNNING, workers={})
    ads = roundtrip(pool_env, work, "c0ffee", backend.job_options(cluster))
    common_checks(ads, "c0ffee", "alice")
    ad = ads[1]
    env = env_of(ad)
    assert env["DASK_GATEWAY_API_URL"] == "http://gw:8000/api"
    assert env["DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT"] == "dask.crt"
    assert ad["TransferInput"].startswith(str(tmp_path)) and ad["EncryptInputFiles"] == ad["TransferInput"]
    argv = argv_of(ad)
    assert argv[argv.index("--worker-port") + 1] == "40000:40100"
    assert re.search(r"/c0ffee-4\.\d+\.\d+\.out$", ad["Out"]) and ad["UserLog"].endswith("/c0ffee.log")
    # the site's extra_submit lines, each where condor_submit puts it
    assert ad["ProjectName"] == "physics" and ad["RequestGpus"] == 1
    req = str(ad["Requirements"])
    assert req.startswith("((TARGET.HasCVMFS is true)) && ") and "(TARGET.Gpus >= RequestGpus)" in req
    assert str(ad["PeriodicRemove"]) == "NumJobStarts > 3" and ad["JobMaxRetries"] == 5
    assert ad["AccountingGroup"] == f"group_physics.{me()}" and ad["ConcurrencyLimits"] == "scratch"


def test_operator_docker_universe_description(pool_env, work):
    from htdask.k8s_operator.config import OperatorConfig
    from htdask.k8s_operator.handlers import worker_options

    body = {"metadata": {"name": "demo", "namespace": "science", "uid": "u1"},
            "spec": {"config": {"worker_cores": 1.5, "worker_memory": 2 * 2**30, "worker_threads": 2,
                                "image": "ghcr.io/dask/dask:2026.8.0", "environment": {"EXTRA": "1"}}}}
    cfg = OperatorConfig(instance="t", api_url="http://gw/api", credentials_dir="/srv/creds",
                         worker_universe="docker")
    options = worker_options(body, cfg)
    ads = roundtrip(pool_env, work, "science-demo", options, owner="bob@example.org")
    common_checks(ads, "science-demo", "bob@example.org")
    ad = ads[2]
    assert ad["WantDocker"] is True and ad["DockerImage"] == "ghcr.io/dask/dask:2026.8.0"
    assert argv_of(ad)[:2] == ["dask", "worker"]  # resolved inside the image
    assert ad["ContainerServiceNames"] == "dask,nanny" and ad["dask_ContainerPort"] == 8788
    assert ad["nanny_ContainerPort"] == 8789
    assert "TARGET.HasDocker" in str(ad["Requirements"]) and "TARGET.OpSys" not in str(ad["Requirements"])
    assert (ad["RequestCpus"], ad["RequestMemory"]) == (2, 2048)
    assert ad["DaskGatewayClusterName"] == options["extra_submit"]["+DaskGatewayClusterName"].strip('"')
    env = env_of(ad)
    assert env["EXTRA"] == "1" and env["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"] == "dask.pem"
    assert ad["TransferInput"].startswith("/srv/creds/") and ad["TransferInput"].endswith("/dask.pem")


def test_expressions_are_classad2_canonical(pool_env, work, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.5:8786")
    from tasks.options import job_options

    options = job_options({"extra_submit": {"periodic_hold": "(time() - EnteredCurrentStatus) >  600 &&"
                                                             "JobStatus==1"}})
    [ad] = roundtrip(pool_env, work, "demo", options, items=[(0, "demo-0")])
    assert str(ad["PeriodicHold"]) == str(classad2.ExprTree("(time() - EnteredCurrentStatus) > 600 && JobStatus == 1"))
