"""The gateway backend's pieces without services: job checks, batching, config, scheduler job, options."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from htdask.gateway import jobcheck
from htdask.gateway.namesync import NameSync
from htdask.gateway.scheduler_job import build
from htdask.demo.services import REPO
from htdask.domain.jobstatus import JobStatus

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

NOW = 10_000.0


def rec(job_id, status, since=NOW - 5, name="w1", **kw):
    return {"job_id": job_id, "name": name, "index": 0, "status": int(status), "since": since, **kw}


def classify(records, seen=None, enqueued_at=NOW - 100, polled_at=NOW - 1, timeout=60.0, **kw):
    return jobcheck.classify(records=records, seen_job=seen, enqueued_at=enqueued_at, polled_at=polled_at,
                             now=NOW, connect_timeout=timeout, **kw)


# ---- queue wait is not failure --------------------------------------------------------------------

def test_an_idle_job_is_pending_however_long_it_waits():
    v = classify([rec("5.0", JobStatus.IDLE, since=NOW - 7 * 86400)], enqueued_at=NOW - 7 * 86400)
    assert (v.ok, v.state, v.job_id) == (True, "idle", "5.0")


def test_a_held_job_is_a_failed_start_with_its_hold_reason():
    v = classify([rec("5.0", JobStatus.HELD, hold_reason="memory usage exceeded request", hold_code=34)])
    assert not v.ok and v.state == "held"
    assert "memory usage exceeded request" in v.reason and "34" in v.reason and "5.0" in v.reason


def test_a_job_running_too_long_without_connecting_fails_and_a_young_one_waits():
    assert classify([rec("5.0", JobStatus.RUNNING, since=NOW - 30)]).ok
    v = classify([rec("5.0", JobStatus.RUNNING, since=NOW - 61)])
    assert not v.ok and v.state == "stuck" and "without its worker connecting" in v.reason
    assert classify([rec("5.0", JobStatus.RUNNING, since=NOW - 9999)], timeout=0).ok, "0 disables"


def test_a_job_that_left_the_queue_or_was_replaced_is_a_failed_start():
    v = classify([], seen="5.0")
    assert not v.ok and v.state == "ended" and v.need_history
    v = classify([rec("6.0", JobStatus.IDLE)], seen="5.0")  # the reconciler resubmitted the name
    assert not v.ok and v.state == "ended" and v.job_id == "5.0"


def test_no_news_from_a_poll_older_than_the_request_is_not_failure():
    v = classify([], seen="5.0", enqueued_at=NOW - 2, polled_at=NOW - 3)
    assert v.ok and v.state == "unpolled"


def test_an_unseen_job_is_pending_unless_its_submission_failed():
    v = classify([])
    assert v.ok and v.state == "unseen" and v.need_history
    v = classify([], submit_error="condor_submit: bad executable", submit_error_at=NOW - 50)
    assert not v.ok and "bad executable" in v.reason
    assert classify([], submit_error="old", submit_error_at=NOW - 500).ok, "an error older than the request"
    assert classify([], submit_error="retrying after error: CEDAR:6001", submit_error_at=NOW - 50).ok, \
        "Celery retries the submit: not a failed start"
    assert classify([], submit_error="CEDAR:6001", submit_error_at=NOW - 0.1).ok, "on_retry may yet mark it"


def test_a_job_the_controller_recorded_as_ended_is_a_failed_start_at_once():
    ended = [{"job_id": "5.0", "name": "w", "status": JobStatus.COMPLETED, "exit_code": 1, "ended_at": NOW - 1}]
    v = classify([], ended=ended)  # never seen in the queue: no history lookup, no grace period
    assert (v.ok, v.state, v.job_id, v.need_history) == (False, "ended", "5.0", False)
    assert "exit code 1" in v.reason
    old = [{**ended[0], "ended_at": NOW - 500}]  # ended before this request: another start's job
    assert classify([], ended=old).ok


def test_a_connected_worker_is_gone_once_a_newer_poll_lacks_its_job_and_only_then():
    assert classify([rec("5.0", JobStatus.RUNNING)], connected_since=NOW - 10).ok
    v = classify([], connected_since=NOW - 10, polled_at=NOW - 1)  # no job id recorded: not "unseen"
    assert (v.ok, v.state) == (False, "ended")
    v = classify([], connected_since=NOW - 10, polled_at=NOW - 20)  # the poll predates the connection
    assert (v.ok, v.state) == (True, "connected")


def _describe_ended(ad: dict) -> str:
    from htdask.domain import jobend
    return jobend.describe(jobend.record_of(ad))


def test_describe_ended_reports_exit_code_signal_and_removal():
    """One description of how a job ended (htdask.domain.jobend), from a history ad as from a record."""
    assert _describe_ended({"ClusterId": 7, "ProcId": 1, "JobStatus": 4, "ExitCode": 3}) == \
        "job 7.1 ended before its worker connected: exit code 3"
    assert _describe_ended({"ClusterId": 7, "ProcId": 1, "JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9,
                            "ExitCode": None}) == "job 7.1 ended before its worker connected: killed by signal 9"
    assert _describe_ended({"ClusterId": 7, "ProcId": 1, "JobStatus": 3, "RemoveReason": "by admin"}) == \
        "job 7.1 was removed before its worker connected: by admin"


def test_index_by_name_puts_the_newest_job_first():
    recs = {"5.0": rec("5.0", 1), "12.0": rec("12.0", 1), "9.3": rec("9.3", 2), "x": rec("1.1", 1, name=None)}
    by = jobcheck.index_by_name(recs)
    assert [r["job_id"] for r in by["w1"]] == ["12.0", "9.3", "5.0"]


# ---- batching -------------------------------------------------------------------------------------

def test_a_burst_of_starts_is_one_request_and_a_later_one_another():
    sent = []

    async def main():
        async def send():
            sent.append(len(sent))
            await asyncio.sleep(0.05)

        sync = NameSync("c", send, window=0.05)
        await asyncio.gather(*(sync.sync() for _ in range(20)))
        assert len(sent) == 1
        first = asyncio.ensure_future(sync.sync())
        await asyncio.sleep(0.07)  # the second burst starts while the first send runs
        await asyncio.gather(first, *(sync.sync() for _ in range(5)))
        assert len(sent) == 3
        await sync.drain()

    asyncio.run(main())


def test_a_failed_request_is_reported_to_every_waiter_and_the_next_burst_retries():
    calls = []

    async def main():
        async def send():
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("redis down")

        sync = NameSync("c", send, window=0.01)
        results = await asyncio.gather(*(sync.sync() for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        await sync.sync()
        assert len(calls) == 2

    asyncio.run(main())


# ---- config -------------------------------------------------------------------------------------

def _run_config(env: dict) -> subprocess.CompletedProcess:
    code = (
        "import json, sys\n"
        "from traitlets.config.loader import PyFileConfigLoader\n"
        f"c = PyFileConfigLoader('config.py', path={str(REPO / 'htdask' / 'gateway')!r}).load_config()\n"
        "out = {k: dict(v) for k, v in c.items()}\n"
        "print(json.dumps(out, default=str))\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "DEFAULT_OWNER"))}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                          cwd=str(REPO), timeout=60)


def _load_config(env: dict) -> dict:
    res = _run_config(env)
    assert res.returncode == 0, res.stderr
    import json
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_config_uses_our_backend_addresses_password_and_dask_2026_commands(service_user):
    cfg = _load_config({"GATEWAY_ADDRESS": "10.1.2.3:9000", "GATEWAY_PASSWORD": "s3cret", "DEFAULT_OWNER": service_user,
                        "REDIS_URL": "redis://127.0.0.1:1234/0", "GATEWAY_WORKER_PORTS": "40000:40100",
                        "GATEWAY_RUN_AS_OWNER": ""})
    assert cfg["DaskGateway"]["backend_class"] == "htdask.gateway.backend.HTCondorBackend"
    assert cfg["Proxy"]["address"] == "10.1.2.3:9000"
    assert cfg["DaskGateway"]["address"] == "127.0.0.1:0", "the private API address is separate"
    assert cfg["SimpleAuthenticator"]["password"] == "s3cret"
    assert cfg["HTCondorBackend"]["redis_url"] == "redis://127.0.0.1:1234/0"
    assert cfg["HTCondorBackend"]["worker_port_range"] == "40000:40100"
    assert cfg["HTCondorBackend"]["run_as_owner"] is False
    sched, work = cfg["HTCondorClusterConfig"]["scheduler_cmd"], cfg["HTCondorClusterConfig"]["worker_cmd"]
    assert isinstance(work, list) and work[-1] == "worker" and sched[-1] == "scheduler"
    assert "dask-worker" not in " ".join(work)


def test_config_defaults_to_the_local_address_and_any_password_only_when_allowed():
    cfg = _load_config({"GATEWAY_ADDRESS": "", "GATEWAY_PASSWORD": "", "GATEWAY_RUN_AS_OWNER": "1",
                        "GATEWAY_ALLOW_ANY_PASSWORD": "1"})
    assert cfg["Proxy"]["address"] == "127.0.0.1:8000"
    assert "password" not in cfg.get("SimpleAuthenticator", {})
    assert cfg["HTCondorBackend"]["run_as_owner"] is True


@pytest.mark.parametrize("env,words", [
    ({"GATEWAY_PASSWORD": "", "GATEWAY_RUN_AS_OWNER": "1"}, ["GATEWAY_PASSWORD is unset",
                                                            "GATEWAY_ALLOW_ANY_PASSWORD=1"]),
    ({"GATEWAY_PASSWORD": "pw", "DEFAULT_OWNER": "root"}, ["no usable job account", "DEFAULT_OWNER=root"]),
    ({"GATEWAY_PASSWORD": "pw", "DEFAULT_OWNER": "no-such-user-xyz"}, ["no such Unix user"]),
    ({"GATEWAY_PASSWORD": "pw", "DEFAULT_OWNER": "daemon"}, ["below MIN_SUBMIT_UID"]),
])
def test_an_unusable_setup_stops_the_gateway_with_one_line(env, words):
    res = _run_config(env)
    assert res.returncode == 2 and res.stdout == "", (res.returncode, res.stdout)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dask-gateway-server: refusing to start: "), res.stderr
    assert all(w in lines[0] for w in words), lines[0]


@pytest.mark.root
def test_gateway_as_root_without_a_job_account_refuses():
    if os.geteuid() != 0:
        pytest.skip("the gateway's own user is the job account when not root")
    res = _run_config({"GATEWAY_PASSWORD": "pw"})
    assert res.returncode == 2 and "DEFAULT_OWNER=(unset)" in res.stderr and "root" in res.stderr


def test_commands_given_as_strings_are_split():
    from htdask.gateway.backend import HTCondorClusterConfig
    c = HTCondorClusterConfig(worker_cmd="/opt/env/bin/dask worker --lifetime 1h")
    assert c.worker_cmd == ["/opt/env/bin/dask", "worker", "--lifetime", "1h"]


def test_port_ranges_are_validated():
    from htdask.gateway.backend import HTCondorBackend
    from traitlets import TraitError
    with pytest.raises(TraitError):
        HTCondorBackend(worker_port_range="9000-9100")
    assert HTCondorBackend(nanny_port_range="41000:41100").nanny_port_range == "41000:41100"


# ---- scheduler as a job ----------------------------------------------------------------------------

def test_scheduler_job_drops_worker_args_and_maps_tls():
    env = {"DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT": "/s/dask.crt",
           "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY": "/s/dask.pem",
           "DASK_GATEWAY_CLUSTER_NAME": "abc-scheduler", "DG_GATEWAY_CLUSTER": "abc"}
    argv = ["tcp://127.0.0.1:1", "--name", "scheduler", "--nthreads", "1", "--dg-exec",
            "/usr/bin/python3", "-m", "dask", "scheduler", "--port", "{port}"]
    cmd, out = build(argv, env)
    assert cmd == ["/usr/bin/python3", "-m", "dask", "scheduler", "--port", "0"]
    assert out["DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT"] == "/s/dask.crt"
    assert out["DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY"] == "/s/dask.pem"
    assert "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY" not in out
    assert out["DASK_GATEWAY_CLUSTER_NAME"] == "abc"


# ---- options and names -----------------------------------------------------------------------------

def _cluster(tmp_path, **cfg):
    from dask_gateway_server.backends.db_base import JobStatus as G
    from htdask.gateway.backend import HTCondorClusterConfig
    config = HTCondorClusterConfig(worker_cores=2, worker_memory="1 G", **cfg).to_dict()
    from dask_gateway_server.utils import FrozenAttrDict
    cluster = SimpleNamespace(name="c0ffee", username="alice", token="tok", config=FrozenAttrDict(config),
                              scheduler_address="tls://127.0.0.1:8786", state={"workdir": str(tmp_path)},
                              target=G.RUNNING, workers={})
    for name, status, target in [("a", G.RUNNING, G.RUNNING), ("b", G.SUBMITTED, G.RUNNING),
                                 ("c", G.CREATED, G.RUNNING), ("d", G.SUBMITTED, G.STOPPED),
                                 ("e", G.STOPPED, G.STOPPED), ("f", G.CREATED, G.RUNNING)]:
        cluster.workers[name] = SimpleNamespace(name=name, status=status, target=target, cluster=cluster)
    return cluster


def test_wanted_names_are_submitted_running_and_starting_workers(tmp_path):
    from htdask.gateway.backend import HTCondorBackend
    backend = HTCondorBackend()
    backend._starting = {"c"}
    assert backend.wanted_names(_cluster(tmp_path)) == ["a", "b", "c"]


def test_job_options_carry_network_settings_tls_files_and_pass_validation(tmp_path):
    from htdask.gateway.backend import HTCondorBackend
    from tasks.options import check_job_options
    backend = HTCondorBackend(worker_port_range="40000:40100", nanny_port_range="41000:41100",
                              scheduler_contact_host="submit.example.org", api_url="http://gw:8000/api")
    cluster = _cluster(tmp_path, worker_extra_submit={"+ProjectName": '"physics"'},
                       worker_job_options={"request_disk": "1GiB"})
    opts = backend.job_options(cluster)
    assert opts["scheduler_address"] == "tls://submit.example.org:8786"
    assert (opts["worker_port_range"], opts["nanny_port_range"]) == ("40000:40100", "41000:41100")
    assert (opts["nthreads"], opts["request_cpus"], opts["memory_limit"]) == (2, 2, 2**30)
    assert opts["tls_cert"].startswith(str(tmp_path)) and opts["api_token"].startswith(str(tmp_path))
    assert opts["extra_submit"] == {"+ProjectName": '"physics"'} and opts["request_disk"] == "1GiB"
    check_job_options(opts)  # what tasks.api runs before anything is enqueued


def test_a_job_held_by_a_person_is_not_a_failed_start():
    """Issue 12 item 6: condor_hold (HoldReasonCode 1) and HOLD_KEEP_CODES holds are left alone."""
    v = classify([rec("5.0", JobStatus.HELD, hold_reason="via condor_hold", hold_code=1)])
    assert v.ok and v.state == "held-kept"
    assert not classify([rec("5.0", JobStatus.HELD, hold_reason="memory", hold_code=34)]).ok
    assert classify([rec("5.0", JobStatus.HELD, hold_reason="memory", hold_code=34)], kept_hold_codes=(1, 34)).ok
