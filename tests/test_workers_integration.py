"""workers through the real subprocess path into the local pool (htdask_localpool/bin/condor_*).

Nothing above the subprocess line is mocked: CliSchedd runs the pool's condor_submit / condor_q /
condor_rm / condor_hold / condor_release / condor_history programs, whose output formats are
HTCondor's.  Every pool (and every job it started) is stopped at teardown.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from workers import runas
from workers.htcondor.cli import CliSchedd
from htdask.domain.jobspec import (POLL_PROJECTION, WorkerJobSpec, cluster_constraint, jobs_constraints,
                             ours_constraint, worker_submit_description)
from workers.htcondor import schedd as schedd_module
from htdask.domain.jobstatus import JobStatus
from workers.htcondor.schedd import ParseError, ScheddError, ScheddTimeout
from htdask.domain.submitdesc import SubmitDescription
from htdask.domain.summary import summarize
from htdask.domain.validation import ValidationError

REPO = Path(__file__).resolve().parent.parent
POOL_BIN = REPO / "htdask_localpool" / "bin"

pytestmark = pytest.mark.skipif(not (POOL_BIN / "condor_q").exists(),
                                reason="htdask_localpool/bin/condor_q does not exist yet (localpool not built)")

# A cheap "worker": sh records its argv and environment, then sleeps; the dask arguments that
# follow become $1.. and are ignored.
RECORDER = ('d="$RECORD_DIR"; printf "%s\\n" "$@" > "$d/$DASK_GATEWAY_WORKER_NAME.args"; '
            'env > "$d/$DASK_GATEWAY_WORKER_NAME.env"; exec sleep 300')


def worker_spec(tmp: Path, cluster: str = "itest", owner: str = "alice", **kw) -> WorkerJobSpec:
    record = tmp / "record"
    logs = tmp / "logs"
    for d in (record, logs):
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o1777)
    base = dict(cluster=cluster, owner=owner, scheduler_address="tcp://127.0.0.1:8786",
                worker_command=["/bin/sh", "-c", RECORDER, "sh"], memory_limit="1GiB",
                log_dir=str(logs), environment={"RECORD_DIR": str(record)}, death_timeout=None)
    base.update(kw)
    return WorkerJobSpec(**base)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def pool_cmd(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "htdask_localpool", *args], env=env, cwd=REPO, check=check,
                          capture_output=True, text=True, timeout=60)


def calls(env: dict) -> list[str]:
    path = Path(env["LOCALPOOL_DIR"]) / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def pool_processes(env: dict, program: str) -> list[str]:
    """`pid args` of the live `program` processes THIS test's pool started: the pids its calls.log names
    (one line per condor_* call), still running (not zombies) with this pool's LOCALPOOL_DIR (a pid reused
    by another process is not ours)."""
    mark = f"LOCALPOOL_DIR={env['LOCALPOOL_DIR']}".encode()
    found = []
    for line in calls(env):
        fields = line.split("\t")
        if len(fields) < 4 or fields[1] != program:
            continue
        proc = Path("/proc") / fields[3]
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if state != "Z" and mark in environ:
            found.append(f"{fields[3]} " + " ".join(c.decode(errors="replace") for c in cmd))
    return found


@pytest.fixture
def schedd(pool_env):
    return CliSchedd()


def our_ads(schedd, cluster="itest"):
    return list(schedd.query(cluster_constraint(cluster), POLL_PROJECTION))


def test_submit_query_summarize_remove_history(schedd, tmp_path):
    foreign = SubmitDescription({"executable": "/bin/sleep", "arguments": '"300"'})
    [foreign_id] = schedd.submit(foreign)

    desc = worker_submit_description(worker_spec(tmp_path), [(0, "itest-0"), (1, "itest-1"), (2, "itest-2")])
    ids = schedd.submit(desc)
    assert len(ids) == 3
    cluster_no = ids[0].split(".")[0]
    assert ids == [f"{cluster_no}.0", f"{cluster_no}.1", f"{cluster_no}.2"]
    assert cluster_no != foreign_id.split(".")[0]

    ads = our_ads(schedd)
    assert len(ads) == 3
    by_index = {a["DaskWorkerIndex"]: a for a in ads}
    assert set(by_index) == {0, 1, 2}
    for i, a in by_index.items():
        assert a["DaskGatewayCluster"] == "itest"
        assert a["DaskWorkerName"] == f"itest-{i}"
        assert a["DaskClusterOwner"] == "alice"
        assert f"{a['ClusterId']}.{a['ProcId']}" in ids
        assert a["JobStatus"] in (JobStatus.IDLE, JobStatus.RUNNING)
        assert a["Owner"] == pwd.getpwuid(os.geteuid()).pw_name
    [batch] = {a["JobBatchName"] for a in schedd.query(cluster_constraint("itest"), ["JobBatchName"])}
    assert batch == "itest"
    # the marker finds ours and only ours
    assert {f"{a['ClusterId']}.{a['ProcId']}" for a in schedd.query(ours_constraint(), ["ClusterId", "ProcId"])} \
        == set(ids)

    s = summarize(schedd.query(cluster_constraint("itest"), POLL_PROJECTION))["itest"]
    assert s.idle + s.running == 3 and s.held == 0 and s.max_index == 2 and s.owner == pwd.getpwuid(os.geteuid()).pw_name  # the Unix user the jobs run as
    assert sorted(j.name for j in s.jobs) == ["itest-0", "itest-1", "itest-2"]
    assert sorted(j.job_id for j in s.jobs) == ids

    by_index = {a["DaskWorkerIndex"]: f"{a['ClusterId']}.{a['ProcId']}" for a in our_ads(schedd)}
    [first] = jobs_constraints("itest", [by_index[0], by_index[2]])
    res = schedd.remove(constraint=first, reason="scale down")
    assert res.ok and res.matched, res

    def gone():
        live = [a for a in our_ads(schedd) if a["JobStatus"] != JobStatus.REMOVED]
        return live if len(live) == 1 else None
    live = wait_for(gone)
    assert live and live[0]["DaskWorkerIndex"] == 1
    assert any(a["ClusterId"] for a in schedd.query(f"ClusterId == {foreign_id.split('.')[0]}"))

    def in_history():
        ads = list(schedd.history(cluster_constraint("itest"), POLL_PROJECTION))
        return ads if {a["DaskWorkerIndex"] for a in ads} == {0, 2} else None
    hist = wait_for(in_history)
    assert hist, "removed jobs did not reach the history"
    assert all(a["JobStatus"] == JobStatus.REMOVED for a in hist)
    assert len(list(schedd.history(cluster_constraint("itest"), POLL_PROJECTION, limit=1))) == 1

    # nothing matches any more: not an error
    [again] = jobs_constraints("itest", [by_index[0], by_index[2], "999.0"])
    res = schedd.remove(constraint=again)
    assert res.ok and not res.matched, res


@pytest.mark.parametrize("via_stdin", [True, False])
def test_the_description_goes_through_stdin_by_default_and_leaves_no_file(pool_env, tmp_path, monkeypatch,
                                                                           via_stdin):
    """By default no file holds the description (it may carry the API token), so a worker killed
    mid-submit leaves none behind; a temp file (removed after the call) is the alternative."""
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile caches its directory
    schedd = CliSchedd() if via_stdin else CliSchedd(submit_via_stdin=False)
    ids = schedd.submit(worker_submit_description(worker_spec(tmp_path), [(3, "itest-3"), (4, "itest-4")]))
    assert len(ids) == 2
    assert sorted(a["DaskWorkerName"] for a in our_ads(schedd)) == ["itest-3", "itest-4"]
    argv = json.loads(calls(pool_env)[-2].split("\t")[2])
    assert (argv[-1] == "-") == via_stdin, argv
    assert not list(private_tmp.iterdir())


def test_worker_gets_its_arguments_and_environment(schedd, tmp_path):
    spec = worker_spec(tmp_path, extra_args=["--resources", "GPU=1 MEM=2", "it's", 'say "hi"'],
                       environment={"RECORD_DIR": str(tmp_path / "record"), "NOTE": "a 'b' \"c\" d"})
    desc = worker_submit_description(spec, [(7, "itest-7")])
    schedd.submit(desc)
    args_file = tmp_path / "record" / "itest-7.args"
    env_file = tmp_path / "record" / "itest-7.env"
    assert wait_for(lambda: env_file.exists() and env_file.stat().st_size > 0, 60), \
        "the pool did not start the job within 60 s"
    args = args_file.read_text().split("\n")[:-1]
    assert args == ["tcp://127.0.0.1:8786", "--name", "itest-7", "--nthreads", "1", "--memory-limit",
                    "1GiB", "--no-dashboard", "--resources", "GPU=1 MEM=2", "it's", 'say "hi"']
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert env["DASK_GATEWAY_WORKER_NAME"] == "itest-7"
    assert env["DASK_GATEWAY_CLUSTER_NAME"] == "itest"
    assert env["NOTE"] == "a 'b' \"c\" d"
    schedd.remove(constraint=cluster_constraint("itest"))


def test_hold_and_release(schedd, tmp_path):
    ids = schedd.submit(worker_submit_description(worker_spec(tmp_path), [(0, "itest-0"), (1, "itest-1")]))
    res = schedd.hold(constraint=jobs_constraints("itest", [ids[1]])[0], reason="testing holds")
    assert res.ok and res.matched
    s = summarize(schedd.query(cluster_constraint("itest"), POLL_PROJECTION))["itest"]
    assert s.held == 1
    [(reason, n)] = s.held_reasons.items()
    assert "testing holds" in reason and n == 1
    held = [j for j in s.jobs if j.status == JobStatus.HELD]
    assert held[0].index == 1 and held[0].hold_code == 1
    # holding again is not an error; by ids too
    assert schedd.hold(ids=[ids[1]]).ok
    res = schedd.release(ids=[ids[1]])
    assert res.ok and res.matched
    s = summarize(schedd.query(cluster_constraint("itest"), POLL_PROJECTION))["itest"]
    assert s.held == 0 and s.idle + s.running == 2
    # releasing a job that is not held / removing by ids
    assert schedd.release(constraint=cluster_constraint("itest")).ok
    res = schedd.remove(ids=ids)
    assert res.ok and res.matched
    assert wait_for(lambda: all(a["JobStatus"] == JobStatus.REMOVED for a in our_ads(schedd)))


def test_many_job_ids_are_acted_on_in_bounded_calls(schedd, pool_env, caplog):
    """Issue 23 item 5: a list of job ids longer than IDS_PER_CALL is acted on in several condor_rm calls
    (each argv far below ARG_MAX), as one ActResult, and the log lines name counts and a few ids."""
    n = 2 * schedd_module.IDS_PER_CALL + 500
    pool_cmd(pool_env, "seed", str(n), "--attr", 'DaskGatewayCluster="many"')
    ids = [f"{a['ClusterId']}.{a['ProcId']}" for a in schedd.query(cluster_constraint("many"), ["ClusterId", "ProcId"])]
    assert len(ids) == n
    before = len(calls(pool_env))
    with caplog.at_level("INFO", logger="workers.htcondor.cli"):
        res = schedd.remove(ids=ids, reason="many")
    assert res.ok and res.matched, res
    rms = [json.loads(line.split("\t")[2]) for line in calls(pool_env)[before:] if "\tcondor_rm\t" in line]
    assert len(rms) == 3 and max(len(argv) for argv in rms) <= schedd_module.IDS_PER_CALL + 2, [len(a) for a in rms]
    assert sorted((x for argv in rms for x in argv if "." in x), key=lambda i: int(i.split(".")[0])) == ids
    assert wait_for(lambda: not [a for a in schedd.query(cluster_constraint("many"), ["JobStatus"])
                                 if a["JobStatus"] != JobStatus.REMOVED])
    assert len(res.message) < 1000, res.message
    assert max(len(r.getMessage()) for r in caplog.records) < 1000


def test_a_constraint_too_long_for_one_argument_is_refused_before_running(schedd, pool_env):
    before = len(calls(pool_env))
    with pytest.raises(ValidationError, match="longer than"):
        schedd.remove(constraint="ClusterId == 1 || " * 10_000 + "false")
    assert len(calls(pool_env)) == before


def test_empty_queue_and_history(schedd):
    assert list(schedd.query()) == []
    assert list(schedd.query(cluster_constraint("nothing"), POLL_PROJECTION)) == []
    assert list(schedd.history(cluster_constraint("nothing"))) == []
    res = schedd.remove(constraint=cluster_constraint("nothing"))
    assert res.ok and not res.matched


def test_remove_nothing_matched_with_jobs_in_queue(schedd, tmp_path):
    schedd.submit(worker_submit_description(worker_spec(tmp_path), [(0, "itest-0")]))
    for act in (schedd.remove, schedd.hold, schedd.release):
        res = act(constraint=cluster_constraint("other"))
        assert res.ok and not res.matched, res


def test_failing_command_raises_with_stderr(schedd, tmp_path):
    schedd.submit(worker_submit_description(worker_spec(tmp_path), [(0, "itest-0")]))
    with pytest.raises(ScheddError) as e:
        list(schedd.query("JobStatus == == 1"))
    err = e.value
    assert not isinstance(err, (ScheddTimeout, ParseError))
    assert err.returncode not in (0, None) and err.stderr.strip()
    assert err.argv[0].endswith("condor_q") and "\n" not in str(err)
    with pytest.raises(ScheddError) as e:
        schedd.remove(constraint="((")
    assert e.value.stderr.strip() and e.value.returncode == 1


def test_submit_error_carries_condor_message(schedd):
    bad = SubmitDescription({"universe": "docker", "executable": "/bin/true"})
    with pytest.raises(ScheddError) as e:
        schedd.submit(bad)
    assert "docker_image" in str(e.value)
    assert e.value.returncode == 1 and "ERROR" in e.value.stderr


def test_timeout_kills_and_raises(schedd, pool_env, monkeypatch):
    pool_cmd(pool_env, "fault", "submit-delay", "5")
    monkeypatch.setenv("CONDOR_TIMEOUT", "1")
    t0 = time.monotonic()
    with pytest.raises(ScheddTimeout) as e:
        schedd.submit(SubmitDescription({"executable": "/bin/sleep", "arguments": '"300"'}))
    assert time.monotonic() - t0 < 4
    assert "did not finish within 1s" in str(e.value)
    assert e.value.argv[0].endswith("condor_submit")
    # the whole process group was killed: no condor_submit of ours is left running
    assert wait_for(lambda: not pool_processes(pool_env, "condor_submit"), 5), pool_processes(pool_env, "condor_submit")
    pool_cmd(pool_env, "fault", "clear")
    monkeypatch.setenv("CONDOR_TIMEOUT", "60")
    # the killed submit left nothing behind
    assert list(schedd.query("true")) == []


def test_big_queue_is_streamed_and_an_abandoned_query_is_killed(schedd, pool_env):
    n = 20000
    pool_cmd(pool_env, "seed", str(n), "--attr", 'DaskGatewayCluster="big"', "--attr",
             'DaskClusterOwner="alice"', "--procs-per-cluster", "1000")
    s = summarize(schedd.query(cluster_constraint("big"), POLL_PROJECTION))
    assert s["big"].idle == n and len(s["big"].jobs) == n and s["big"].owner == pwd.getpwuid(os.geteuid()).pw_name
    assert len({j.job_id for j in s["big"].jobs}) == n
    # a consumer that stops early: condor_q is killed, not left blocked on a full pipe
    it = schedd.query("true")
    assert next(it)["DaskGatewayCluster"] == "big"
    it.close()
    assert wait_for(lambda: not pool_processes(pool_env, "condor_q"), 5), pool_processes(pool_env, "condor_q")


# --- run as another Unix user ------------------------------------------------------------------



@pytest.fixture
def shared_pool_env(pool_env, monkeypatch):
    """The local pool in a directory every user can reach (pytest's tmp dirs are root-only)."""
    base = Path(tempfile.mkdtemp(prefix="htdask-pool-"))
    os.chmod(base, 0o755)
    env = dict(pool_env)
    env["LOCALPOOL_DIR"] = str(base / "pool")
    monkeypatch.setenv("LOCALPOOL_DIR", env["LOCALPOOL_DIR"])
    pool_cmd(env, "start")
    try:
        yield env, base
    finally:
        pool_cmd(env, "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_submit_and_remove_as_another_user(unix_user, shared_pool_env):
    env, base = shared_pool_env
    schedd = CliSchedd()
    spec = worker_spec(base, owner=unix_user.pw_name)
    ids = schedd.submit(worker_submit_description(spec, [(0, "itest-0"), (1, "itest-1")]), user=unix_user.pw_name)
    assert len(ids) == 2
    ads = our_ads(schedd)
    assert {a["Owner"] for a in ads} == {unix_user.pw_name}
    assert {a["DaskClusterOwner"] for a in ads} == {unix_user.pw_name}
    # the pool runs the job as its owner
    env_file = base / "record" / "itest-0.env"
    assert wait_for(lambda: env_file.exists() and env_file.stat().st_size > 0, 60)
    assert env_file.stat().st_uid == unix_user.pw_uid
    assert f"HOME={unix_user.pw_dir}" in env_file.read_text().splitlines()
    res = schedd.remove(constraint=cluster_constraint("itest"), user=unix_user.pw_name)
    assert res.ok and res.matched
    assert wait_for(lambda: all(a["JobStatus"] == JobStatus.REMOVED for a in our_ads(schedd)))


@pytest.mark.parametrize("user", ["root", "daemon", "nosuchuser-xyz", "bin"])
def test_refused_users_run_nothing(user, pool_env, tmp_path):
    schedd = CliSchedd()
    desc = worker_submit_description(worker_spec(tmp_path), [(0, "itest-0")])
    before = calls(pool_env)
    with pytest.raises(runas.UserRefused):
        schedd.submit(desc, user=user)
    with pytest.raises(runas.UserRefused):
        schedd.remove(constraint=cluster_constraint("itest"), user=user)
    assert calls(pool_env) == before


def test_low_uid_refused_even_if_it_exists(pool_env, tmp_path):
    low = [p for p in pwd.getpwall() if 0 < p.pw_uid < 1000]
    assert low, "no system accounts on this machine?"
    with pytest.raises(runas.UserRefused, match="below MIN_SUBMIT_UID"):
        CliSchedd().submit(worker_submit_description(worker_spec(tmp_path), [(0, "itest-0")]),
                           user=low[0].pw_name)
    assert calls(pool_env) == []
