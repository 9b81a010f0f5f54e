"""The local pool writes each job's event log (submit command ``log``) as HTCondor's schedd and shadow do,
read back here with HTCondor's own reader, ``htcondor2.JobEventLog`` (ReadUserLog from the wheel)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import htcondor2
import pytest

from tests.test_localpool_lib import me, pool, q, run, submit, wait_for


def events(path: Path) -> list:
    """Every event of the log, read without blocking (stop_after=0)."""
    if not path.exists():
        return []
    with htcondor2.JobEventLog(str(path)) as jel:
        return list(jel.events(stop_after=0))


def kinds(path: Path, job: str | None = None) -> list[int]:
    return [int(e.type) for e in events(path) if job is None or f"{e.cluster}.{e.proc}" == job]


def test_exit_codes_signals_and_requeue_in_the_event_log(pool_env, tmp_path):
    log = tmp_path / "c.log"
    text = (f"log = {log}\nexecutable = /bin/sh\nsubmit_event_notes = job $(Process) of a test\n"
            "arguments = \"-c 'exit 3'\"\nqueue 1\n"
            "arguments = \"-c 'kill -9 $$'\"\nqueue 1\n")
    jobs = submit(pool_env, tmp_path, text)
    wait_for(lambda: kinds(log).count(5) == 2, what="two terminated events")
    evs = events(log)
    c = int(jobs[0].split(".")[0])
    assert {(e.cluster, e.proc) for e in evs} == {(c, 0), (c, 1)}
    for p in (0, 1):
        assert [int(e.type) for e in evs if e.proc == p] == [0, 1, 5]
    term = {e.proc: e for e in evs if e.type == htcondor2.JobEventType.JOB_TERMINATED}
    assert term[0]["TerminatedNormally"] is True and term[0]["ReturnValue"] == 3
    assert term[1]["TerminatedNormally"] is False and term[1]["TerminatedBySignal"] == 9
    assert {e["Cluster"] for e in evs} == {c}
    assert evs[0]["SubmitHost"].startswith("<")
    assert [e["LogNotes"] for e in evs if e.type == htcondor2.JobEventType.SUBMIT] == ["job 0 of a test",
                                                                                    "job 1 of a test"]


def test_requeued_exit_is_an_eviction(pool_env, tmp_path):
    log = tmp_path / "r.log"
    submit(pool_env, tmp_path, f"log = {log}\nexecutable = /bin/sh\narguments = \"-c 'exit 2'\"\n"
                               "max_retries = 1\nqueue\n")
    wait_for(lambda: 5 in kinds(log), what="the terminated event")
    assert kinds(log) == [0, 1, 4, 1, 5]
    evicted = [e for e in events(log) if e.type == htcondor2.JobEventType.JOB_EVICTED][0]
    assert evicted["TerminatedAndRequeued"] is True and evicted["ReturnValue"] == 2


def test_hold_release_remove_and_start_failure(pool_env, tmp_path):
    log = tmp_path / "h.log"
    [job] = submit(pool_env, tmp_path, f"log = {log}\nexecutable = /bin/sleep\narguments = 300\nqueue\n")
    wait_for(lambda: kinds(log) == [0, 1], what="the execute event")
    assert run(pool_env, "condor_hold", "-reason", "maintenance", "-subcode", "7", job).returncode == 0
    assert run(pool_env, "condor_release", job).returncode == 0
    wait_for(lambda: kinds(log).count(1) == 2, what="the second execute event")
    assert run(pool_env, "condor_rm", job).returncode == 0
    wait_for(lambda: q(pool_env) == [], what="the job to leave the queue")
    assert kinds(log) == [0, 1, 12, 13, 1, 9]
    by_type = {int(e.type): e for e in events(log)}
    assert by_type[12]["HoldReason"] == f"maintenance (by user {me()})"
    assert (by_type[12]["HoldReasonCode"], by_type[12]["HoldReasonSubCode"]) == (1, 7)
    assert by_type[13]["Reason"] == f"via condor_release (by user {me()})"
    assert by_type[9]["Reason"] == f"via condor_rm (by user {me()})"

    # a job whose executable cannot be started is held by the "shadow": 000 then 012, code 6, no 001
    bad = tmp_path / "bad.log"
    [job2] = submit(pool_env, tmp_path, f"log = {bad}\nexecutable = /nonexistent/prog\n"
                                        "transfer_executable = false\nqueue\n", name="bad.sub")
    wait_for(lambda: 12 in kinds(bad), what="the held event")
    assert kinds(bad) == [0, 12]
    held = events(bad)[-1]
    assert held["HoldReasonCode"] == 6 and "Failed to execute" in held["HoldReason"]
    assert f"{held.cluster}.{held.proc}" == job2


def test_policy_hold_and_the_runner_stop_are_logged(pool_env, tmp_path):
    log = tmp_path / "p.log"
    submit(pool_env, tmp_path, f"log = {log}\nexecutable = /bin/sh\narguments = \"-c 'exit 1'\"\n"
                               "on_exit_hold = ExitCode != 0\nqueue\n"
                               "executable = /bin/sleep\narguments = 300\non_exit_hold = false\nqueue\n")
    wait_for(lambda: kinds(log).count(1) == 2 and 12 in kinds(log), what="execute and held events")
    held = [e for e in events(log) if e.type == htcondor2.JobEventType.JOB_HELD][0]
    assert held["HoldReasonCode"] == 3 and held.proc == 0
    pool(pool_env, "stop")  # the running job is stopped without a result: evicted, back to idle
    assert [int(e.type) for e in events(log) if e.proc == 1] == [0, 1, 4]
    evicted = events(log)[-1]
    assert evicted["Checkpointed"] is False and not evicted.get("TerminatedAndRequeued")


def test_the_log_is_written_as_the_jobs_owner(unix_user, pool_env, monkeypatch):
    base = Path(tempfile.mkdtemp(prefix="localpool-userlog-"))
    try:
        os.chmod(base, 0o1777)
        work = base / "work"
        work.mkdir()
        os.chown(work, unix_user.pw_uid, unix_user.pw_gid)
        pool_env["LOCALPOOL_DIR"] = str(base / "pool")
        monkeypatch.setenv("LOCALPOOL_DIR", pool_env["LOCALPOOL_DIR"])
        pool(pool_env, "start")  # a root runner, as on a real submit node
        log = work / "u.log"
        [job] = submit(pool_env, work, f"log = {log}\nexecutable = /bin/true\nqueue\n", user=unix_user)
        wait_for(lambda: 5 in kinds(log), what="the terminated event")
        assert os.stat(log).st_uid == unix_user.pw_uid
        assert kinds(log) == [0, 1, 5]
        assert events(log)[-1]["ReturnValue"] == 0
        assert run(pool_env, "condor_rm", job).returncode == 1  # it left the queue: nothing more logged
        assert kinds(log) == [0, 1, 5]
    finally:
        pool(pool_env, "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_no_log_command_no_file(pool_env, tmp_path):
    [job] = submit(pool_env, tmp_path, "executable = /bin/true\nqueue\n")
    wait_for(lambda: q(pool_env) == [], what="the job to finish")
    assert not list(tmp_path.glob("*.log")), job
