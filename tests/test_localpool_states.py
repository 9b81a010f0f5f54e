"""The local pool puts jobs in every JobStatus as HTCondor does (issue 23 items 6 and 9):
condor_suspend / condor_continue (7 Suspended, SIGSTOP / SIGCONT, events 010 / 011), and matchmaking
against the pool's slot ads: a job no slot can run stays idle with the negotiator's rejection
(LastRejMatchReason / LastRejMatchTime), and condor_q -better-analyze says why, clause by clause."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.test_localpool_lib import q, run, submit, wait_for


@pytest.fixture
def work(tmp_path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def _state(pid: int) -> str:
    """The process' state letter from /proc (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _pid(env, job: str) -> int:
    from htdask_localpool import store
    con = store.connect()
    try:
        return con.execute("SELECT pid FROM jobs WHERE cluster=? AND proc=?", tuple(map(int, job.split(".")))
                           ).fetchone()[0]
    finally:
        con.close()


def test_condor_suspend_and_continue(pool_env, work):
    log = work / "job.log"
    job, = submit(pool_env, work, f"executable = /bin/sleep\narguments = 300\nlog = {log}\nqueue\n")
    wait_for(lambda: q(pool_env, job)[0]["JobStatus"] == 2, timeout=30, what="running")
    pid = _pid(pool_env, job)
    out = run(pool_env, "condor_suspend", job)
    assert (out.returncode, out.stdout) == (0, f"Job {job} suspended\n"), out.stderr
    ad = q(pool_env, job)[0]
    assert (ad["JobStatus"], ad["TotalSuspensions"]) == (7, 1)
    wait_for(lambda: _state(pid) == "T", what="the job's process stopped")
    out = run(pool_env, "condor_suspend", job)
    assert out.returncode == 1 and f"Job {job} already suspended" in out.stderr
    time.sleep(0.5)  # a few runner ticks
    assert run(pool_env, "condor_q", job, "-af", "JobStatus").stdout == "7\n", "the runner leaves it suspended"
    out = run(pool_env, "condor_continue", job)
    assert (out.returncode, out.stdout) == (0, f"Job {job} continued\n"), out.stderr
    assert q(pool_env, job)[0]["JobStatus"] == 2
    wait_for(lambda: _state(pid) in ("S", "R"), what="the job's process resumed")
    out = run(pool_env, "condor_continue", job)
    assert out.returncode == 1 and f"Job {job} not suspended to be continued" in out.stderr
    import htcondor2
    events = [int(e.type) for e in htcondor2.JobEventLog(str(log)).events(stop_after=0)]
    assert events[-2:] == [10, 11], events
    assert run(pool_env, "condor_rm", job).returncode == 0


def test_a_job_no_slot_matches_stays_idle_with_the_negotiators_rejection(pool_env, work):
    big, = submit(pool_env, work, "executable = /bin/sleep\narguments = 300\nrequest_memory = 100TB\nqueue\n",
                  name="big.sub")
    small, = submit(pool_env, work, "executable = /bin/sleep\narguments = 300\nrequest_memory = 1GB\nqueue\n",
                    name="small.sub")
    wait_for(lambda: q(pool_env, small)[0]["JobStatus"] == 2, timeout=30, what="the small job running")
    ad = wait_for(lambda: (a := q(pool_env, big)[0]).get("LastRejMatchReason") and a, timeout=30,
                  what="the big job rejected")
    assert (ad["JobStatus"], ad["LastRejMatchReason"]) == (1, "no match found ")
    assert isinstance(ad["LastRejMatchTime"], int)
    assert "LastRejMatchReason" not in q(pool_env, small)[0]
    text = run(pool_env, "condor_q", "-better-analyze", big).stdout
    cluster = big.split(".")[0]
    assert "The Requirements expression for job" in text
    assert any(line.split()[1:] == ["0", "TARGET.Memory", ">=", "RequestMemory"] for line in text.splitlines()
               if line.startswith("[")), text
    assert "Reason for last match failure: no match found" in text
    assert f"{cluster}.000:  Run analysis summary ignoring user priority." in text
    assert "No machines matched the jobs's constraints" in text
    small_text = run(pool_env, "condor_q", "-better-analyze", small).stdout
    assert "Job is running." in small_text
    assert run(pool_env, "condor_rm", big, small).returncode == 0
