"""The local pool used by several Unix users: Owner, job uid, permissions, non-root runner.

Needs root (creates a throw-away user with useradd, deleted at teardown).  pytest's tmp dirs
are root-only, so the pool and the job directory live in a world-accessible temp dir.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.test_localpool_lib import pid_alive, pool, q, read_pids, run, wait_for




@pytest.fixture
def shared(pool_env, monkeypatch):
    """(env, workdir): LOCALPOOL_DIR and a job directory every user can reach."""
    base = Path(tempfile.mkdtemp(prefix="localpool-users-"))
    os.chmod(base, 0o1777)  # like /tmp: the first user to run a command creates the pool dir
    work = base / "work"
    work.mkdir()
    os.chmod(work, 0o1777)
    pool_env["LOCALPOOL_DIR"] = str(base / "pool")  # the fixture's teardown stops this pool too
    monkeypatch.setenv("LOCALPOOL_DIR", pool_env["LOCALPOOL_DIR"])
    try:
        yield pool_env, work
    finally:
        pool(pool_env, "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


JOB = ("executable = /bin/sh\n"
       "arguments = \"-c 'id -u > uid.$(Cluster); echo $$ > pid.$(Cluster); exec sleep 300'\"\n"
       "queue\n")


def _submit_as(env, work: Path, user, name: str) -> str:
    path = work / name
    path.write_text(JOB)
    os.chmod(path, 0o644)
    res = run(env, "condor_submit", "-terse", str(path), cwd=work, user=user)
    assert res.returncode == 0, res.stderr
    return res.stdout.split(" - ")[0]


def test_jobs_run_as_their_owner(unix_user, shared):
    env, work = shared
    pool(env, "start")  # a root runner, as on a real submit node
    job = _submit_as(env, work, unix_user, "u.sub")
    c = job.split(".")[0]
    wait_for(lambda: (work / f"pid.{c}").exists() and (work / f"pid.{c}").read_text().strip(),
             what="the user's job started")
    assert (work / f"uid.{c}").read_text().strip() == str(unix_user.pw_uid)
    pid = read_pids([work / f"pid.{c}"])[0]
    assert os.stat(f"/proc/{pid}").st_uid == unix_user.pw_uid
    assert os.stat(work / f"uid.{c}").st_uid == unix_user.pw_uid  # output written as the owner
    [ad] = q(env, job)
    assert ad["Owner"] == unix_user.pw_name and ad["JobStatus"] == 2

    # the user sees only their jobs by default; root's job is not theirs to remove
    root_job = run(env, "condor_submit", "-terse", str(work / "u.sub"), cwd=work).stdout.split(" - ")[0]
    res = run(env, "condor_q", "-json", "-attributes", "Owner", user=unix_user)
    assert res.returncode == 0 and res.stdout.count('"Owner"') == 1 and unix_user.pw_name in res.stdout
    res = run(env, "condor_rm", root_job, user=unix_user)
    assert (res.returncode, res.stderr) == (1, f"\nPermission denied to remove job {root_job}\n")
    res = run(env, "condor_rm", "-all", user=unix_user)
    assert (res.returncode, res.stdout) == (0, "All jobs have been marked for removal\n")
    wait_for(lambda: not pid_alive(pid), what="the user's job killed")
    assert [f"{a['ClusterId']}.{a['ProcId']}" for a in q(env)] == [root_job]


def test_non_root_runner_holds_other_users_jobs(unix_user, shared):
    env, work = shared
    # the first command run by the user starts the runner as that user
    res = run(env, "condor_q", user=unix_user)
    assert res.returncode == 0, res.stderr
    pidfile = Path(env["LOCALPOOL_DIR"]) / "runner.pid"
    runner = int(pidfile.read_text())
    assert os.stat(f"/proc/{runner}").st_uid == unix_user.pw_uid
    mine = _submit_as(env, work, unix_user, "u.sub")
    (work / "r.sub").write_text(JOB)
    root_job = run(env, "condor_submit", "-terse", str(work / "r.sub"), cwd=work).stdout.split(" - ")[0]
    wait_for(lambda: {a["JobStatus"] for a in q(env)} == {2, 5}, what="user job running, root job held")
    [held] = q(env, "-constraint", "JobStatus == 5")
    assert f"{held['ClusterId']}.{held['ProcId']}" == root_job
    assert held["HoldReasonCode"] == 6 and "not root" in held["HoldReason"]
    assert q(env, mine)[0]["JobStatus"] == 2
    pool(env, "stop")
    assert not pid_alive(runner)
