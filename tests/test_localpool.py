"""The embedded local pool behaves like HTCondor from the outside: programs, formats, jobs.

Every test uses the ``pool_env`` fixture (fresh LOCALPOOL_DIR, htdask_localpool/bin first on PATH);
its teardown stops the runner and kills every job process of the pool.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_localpool_lib import (calls, env_with, history, job_status, me, pid_alive, pool, q,
                                      read_pids, run, status_map, submit, wait_for)

HOST = socket.gethostname()

# A job that records its pid, then sleeps (exec keeps the pid).
SLEEPER = """executable = /bin/sh
arguments = "-c 'echo $$ > pid.$(Cluster).$(Process); exec sleep 300'"
"""


@pytest.fixture
def work(tmp_path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def idle_pool(pool_env):
    """A pool whose runner starts nothing (LOCALPOOL_SLOTS=0): jobs stay Idle for format tests."""
    pool_env["LOCALPOOL_SLOTS"] = "0"
    return pool_env


# ------------------------------------------------------------------ the main round trip

def test_submit_query_remove_history_roundtrip(pool_env, work):
    (work / "job.sub").write_text(SLEEPER + '+DaskGatewayCluster = "x"\nqueue 3\n')
    res = run(pool_env, "condor_submit", "-terse", "job.sub", cwd=work)
    assert res.returncode == 0, res.stderr
    m = re.fullmatch(r"(\d+)\.0 - \1\.2\n", res.stdout)
    assert m, res.stdout
    c = int(m.group(1))

    pidfiles = [work / f"pid.{c}.{p}" for p in range(3)]
    wait_for(lambda: all(f.exists() and f.read_text().strip() for f in pidfiles), what="3 jobs running")
    wait_for(lambda: set(status_map(pool_env).values()) == {2}, what="JobStatus 2")
    pids = read_pids(pidfiles)
    assert all(pid_alive(p) for p in pids)

    res = run(pool_env, "condor_q", "-json", "-allusers", "-constraint", 'DaskGatewayCluster == "x"',
              "-attributes", "ClusterId,ProcId,JobStatus,Owner,DaskGatewayCluster")
    assert res.returncode == 0, res.stderr
    ads = [("{\n"
            f'  "ClusterId": {c},\n'
            '  "DaskGatewayCluster": "x",\n'
            '  "JobStatus": 2,\n'
            f'  "Owner": "{me()}",\n'
            f'  "ProcId": {p}\n'
            "}\n") for p in range(3)]
    assert res.stdout == "[\n" + ",\n".join(ads) + "]\n"

    res = run(pool_env, "condor_rm", "-constraint", 'DaskGatewayCluster == "x"')
    assert (res.returncode, res.stdout, res.stderr) == (
        0, 'All jobs matching constraint (DaskGatewayCluster == "x") have been marked for removal\n', "")
    wait_for(lambda: not any(pid_alive(p) for p in pids), what="job processes to die")
    wait_for(lambda: q(pool_env) == [], what="removed jobs to leave the queue")
    hist = history(pool_env, "-constraint", 'DaskGatewayCluster == "x"')
    assert sorted(a["ProcId"] for a in hist) == [0, 1, 2]
    assert {a["JobStatus"] for a in hist} == {3}
    assert {a["RemoveReason"] for a in hist} == {f"via condor_rm (by user {me()})"}


def test_concurrent_submits_never_lose_or_duplicate(idle_pool, work):
    (work / "job.sub").write_text("executable = /bin/true\nqueue 25\n")
    procs = [subprocess.Popen(["condor_submit", "-terse", "job.sub"], cwd=work, env=idle_pool,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    clusters = sorted(int(o.split(".")[0]) for o, _ in outs)
    assert len(set(clusters)) == 4
    res = run(idle_pool, "condor_q", "-allusers", "-af", "ClusterId", "ProcId")
    ids = res.stdout.split("\n")[:-1]
    assert len(ids) == 100 and len(set(ids)) == 100
    assert {int(i.split()[0]) for i in ids} == set(clusters)
    assert sorted(int(i.split()[1]) for i in ids) == sorted(list(range(25)) * 4)


# ------------------------------------------------------------------ job life cycle

def test_job_runs_to_completion_with_exit_code(pool_env, work):
    ids = submit(pool_env, work, 'executable = /bin/sh\narguments = "-c \'echo out-$(Process); '
                                 'echo err >&2; exit 3\'"\noutput = o.$(Process)\nerror = e.$(Process)\n'
                                 'log = job.log\nqueue\n')
    [hist] = wait_for(lambda: history(pool_env, ids[0].split(".")[0]), what="job in history")
    assert hist["JobStatus"] == 4 and hist["ExitCode"] == 3 and hist["ExitBySignal"] is False
    assert hist["NumJobStarts"] == 1 and hist["CompletionDate"] >= hist["JobStartDate"] >= hist["QDate"]
    assert hist["LastJobStatus"] == 2 and hist["EnteredCurrentStatus"] == hist["CompletionDate"]
    assert hist["JobCurrentStartDate"] == hist["JobStartDate"]
    assert hist["GlobalJobId"] == f"{HOST}#{ids[0]}#{hist['QDate']}"
    assert hist["Iwd"] == str(work) and hist["Out"] == "o.0" and hist["UserLog"] == str(work / "job.log")
    assert (work / "o.0").read_text() == "out-0\n" and (work / "e.0").read_text() == "err\n"
    assert q(pool_env) == []


def test_signal_exit_is_recorded(pool_env, work):
    ids = submit(pool_env, work, 'executable = /bin/sh\narguments = "-c \'kill -9 $$\'"\nqueue\n')
    [hist] = wait_for(lambda: history(pool_env, ids[0]), what="job in history")
    assert hist["JobStatus"] == 4 and hist["ExitBySignal"] is True and hist["ExitSignal"] == 9
    assert "ExitCode" not in hist


def test_missing_executable_is_held_code_6(pool_env, work):
    ids = submit(pool_env, work, "executable = /nonexistent/prog\nqueue\n")
    wait_for(lambda: job_status(pool_env, ids[0]) == 5, what="held")
    [ad] = q(pool_env, ids[0])
    assert ad["HoldReasonCode"] == 6 and ad["HoldReasonSubCode"] == 2
    assert ad["HoldReason"] == f"Error from slot1@{HOST}: Failed to execute '/nonexistent/prog': " \
                               "No such file or directory"
    (work / "noexec.sh").write_text("#!/bin/sh\n")
    ids = submit(pool_env, work, "executable = noexec.sh\nqueue\n")
    wait_for(lambda: job_status(pool_env, ids[0]) == 5, what="held")
    [ad] = q(pool_env, ids[0])
    assert ad["HoldReasonCode"] == 6 and "Permission denied" in ad["HoldReason"]
    assert ad["Cmd"] == str(work / "noexec.sh")


def test_hold_running_job_kills_it_release_restarts(pool_env, work):
    ids = submit(pool_env, work, SLEEPER + "queue\n")
    pidfile = work / f"pid.{ids[0]}"
    wait_for(pidfile.exists, what="job started")
    wait_for(lambda: pidfile.read_text().strip(), what="pid written")
    pid = read_pids([pidfile])[0]
    res = run(pool_env, "condor_hold", ids[0])
    assert (res.returncode, res.stdout) == (0, f"Job {ids[0]} held\n")
    wait_for(lambda: not pid_alive(pid), what="held job killed")
    [ad] = q(pool_env, ids[0])
    assert ad["JobStatus"] == 5 and ad["HoldReasonCode"] == 1 and ad["HoldReasonSubCode"] == 0
    assert ad["HoldReason"] == f"via condor_hold (by user {me()})"
    pidfile.unlink()
    res = run(pool_env, "condor_release", ids[0])
    assert (res.returncode, res.stdout) == (0, f"Job {ids[0]} released\n")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="job restarted")
    wait_for(lambda: job_status(pool_env, ids[0]) == 2, what="running again")
    [ad] = q(pool_env, ids[0])
    assert ad["NumJobStarts"] == 2 and "HoldReason" not in ad
    assert ad["LastHoldReasonCode"] == 1 and ad["ReleaseReason"] == f"via condor_release (by user {me()})"


def test_slots_cap_running_jobs(pool_env, work):
    pool_env["LOCALPOOL_SLOTS"] = "2"
    ids = submit(pool_env, work, "executable = /bin/sleep\narguments = 300\nqueue 5\n")
    wait_for(lambda: list(status_map(pool_env).values()).count(2) == 2, what="2 running")
    time.sleep(0.5)
    st = status_map(pool_env)
    assert sorted(st.values()) == [1, 1, 1, 2, 2], st
    run(pool_env, "condor_rm", ids[0], ids[1])
    wait_for(lambda: sorted(status_map(pool_env).values()) == [1, 2, 2], what="next jobs start")
    out = pool(pool_env, "status").stdout
    assert "runner: pid" in out and "slots: 2 busy of 2" in out and "1 idle, 2 running" in out


def test_environment_and_arguments_reach_the_job(pool_env, work):
    submit(pool_env, work, "executable = /bin/sh\n"
                           "arguments = \"-c 'env > env.out; printf \"\"%s|\"\" \"\"$@\"\" > args.out' "
                           "sh 'a b' 'it''s' \"\"q\"\"\"\n"
                           "environment = \"one=1 two=\"\"2\"\" three='spacey ''quoted'' value'\"\n"
                           "queue\n")
    wait_for(lambda: (work / "args.out").exists() and (work / "env.out").exists()
             and history(pool_env), what="job done")
    assert (work / "args.out").read_text() == "a b|it's|\"q\"|"
    env = dict(line.split("=", 1) for line in (work / "env.out").read_text().splitlines() if "=" in line)
    assert env["one"] == "1" and env["two"] == '"2"' and env["three"] == "spacey 'quoted' value"
    assert env["HOME"] == os.path.expanduser("~" + me()) and env["_CONDOR_SCRATCH_DIR"]
    assert env["_CONDOR_JOB_AD"].endswith(".job.ad") and "PATH" in env
    [hist] = history(pool_env)
    assert hist["Environment"] == "one=1 two=\"2\" 'three=spacey ''quoted'' value'"
    assert hist["Arguments"].startswith("-c ")

    (work / "old.sub").write_text("executable = /bin/sh\narguments = -c env>old.out\n"
                                  "environment = A=1;B=x y\nqueue\n")
    assert run(pool_env, "condor_submit", "old.sub", cwd=work).returncode == 0
    wait_for(lambda: (work / "old.out").exists() and len(history(pool_env)) == 2, what="old syntax job")
    env = dict(line.split("=", 1) for line in (work / "old.out").read_text().splitlines() if "=" in line)
    assert env["A"] == "1" and env["B"] == "x y"
    assert history(pool_env)[0]["Args"] == "-c env>old.out"


def test_docker_universe(pool_env, work):
    (work / "d.sub").write_text("universe = docker\nexecutable = /bin/true\nqueue\n")
    res = run(pool_env, "condor_submit", "d.sub", cwd=work)
    assert (res.returncode, res.stdout, res.stderr) == (
        1, "Submitting job(s)", "\nERROR: docker jobs require a docker_image\n")
    assert q(pool_env) == []
    ids = submit(pool_env, work, "universe = docker\ndocker_image = python:3.11\nexecutable = /bin/true\n"
                                 "queue\n")
    [hist] = wait_for(lambda: history(pool_env, ids[0]), what="docker job ran locally")
    assert hist["DockerImage"] == "python:3.11" and hist["WantDocker"] is True
    assert hist["JobUniverse"] == 5 and hist["ExitCode"] == 0


def test_queue_items_and_macros(idle_pool, work):
    ids = submit(idle_pool, work, "executable = /bin/echo\n"
                                  "arguments = $(name) $(Cluster).$(Process) $(JobId) $(missing:dflt)\n"
                                  "output = out.$(name).$(ProcId)\n"
                                  "+Name = \"$(name)\"\n+Idx = $(ItemIndex)\n+Step = $(Step)\n"
                                  "queue 2 name in (a, b,\n c\n)\n")  # a multi-line list ends at a line starting with ")"
    ads = q(idle_pool, "-attributes", "ClusterId,ProcId,Name,Idx,Step,Args,Out")
    c = int(ids[0].split(".")[0])
    assert [(a["ProcId"], a["Name"], a["Idx"], a["Step"]) for a in ads] == [
        (0, "a", 0, 0), (1, "a", 0, 1), (2, "b", 1, 0), (3, "b", 1, 1), (4, "c", 2, 0), (5, "c", 2, 1)]
    assert ads[3]["Args"] == f"b {c}.3 {c}.3 dflt" and ads[3]["Out"] == "out.b.3"

    ids = submit(idle_pool, work, "executable = /bin/true\n"
                                  "request_memory = 2GB\nrequest_disk = 1M\nrequest_cpus = 2\n"
                                  "batch_name = demo\n"
                                  "+DaskWorkerIndex = $(DaskWorkerIndex)\n"
                                  "MY.DaskWorkerName = \"$(DaskWorkerName)\"\n"
                                  "queue DaskWorkerIndex,DaskWorkerName from (\n5 demo-5\n6 demo-6\n)\n")
    c = ids[0].split(".")[0]
    ads = q(idle_pool, c)
    assert [(a["DaskWorkerIndex"], a["DaskWorkerName"]) for a in ads] == [(5, "demo-5"), (6, "demo-6")]
    assert {(a["RequestMemory"], a["RequestDisk"], a["RequestCpus"], a["JobBatchName"]) for a in ads} == {
        (2048, 1024, 2, "demo")}

    getenv_pool = env_with(idle_pool, LP_GETENV_TEST="a b", LP_OTHER="no")
    ids = submit(getenv_pool, work, "executable = /bin/true\ngetenv = LP_GETENV_*\nenvironment = X=1\nqueue\n")
    assert q(idle_pool, ids[0])[0]["Environment"] == "'LP_GETENV_TEST=a b' X=1"

    ids = submit(idle_pool, work, "Executable = /bin/true\nQUEUE 2 x,y FROM (\n1, one\n2 two words\n)\n",
                 "-batch-name", "cmdline", "-a", '+Extra = "$(y)"')
    ads = q(idle_pool, ids[0].split(".")[0])
    assert [a["Extra"] for a in ads] == ["one", "one", "two words", "two words"]
    assert {a["JobBatchName"] for a in ads} == {"cmdline"}


# ------------------------------------------------------------------ formats (contracts)

def test_submit_default_output_and_errors(idle_pool, work):
    (work / "three.sub").write_text("executable = /bin/true\nqueue 3\n")
    res = run(idle_pool, "condor_submit", "three.sub", cwd=work)
    c = res.stdout.split("cluster ")[-1].rstrip(".\n")
    assert (res.returncode, res.stdout) == (0, f"Submitting job(s)...\n3 job(s) submitted to cluster {c}.\n")
    assert res.stderr == f"To monitor your job(s), run: condor_watch_q -clusters {c}\n"

    res = run(idle_pool, "condor_submit", "nofile.sub", cwd=work)
    assert (res.returncode, res.stdout, res.stderr) == (
        1, "", "\nERROR: Failed to open command file (nofile.sub) (No such file or directory)\n")

    (work / "bad.sub").write_text("executable = /bin/true\nthis is not a command\nqueue\n")
    res = run(idle_pool, "condor_submit", "bad.sub", cwd=work)
    assert (res.returncode, res.stdout, res.stderr) == (
        1, "Submitting job(s)", "\nERROR: Failed to parse command file (line 2).\n")

    (work / "noq.sub").write_text("executable = /bin/true\n")
    res = run(idle_pool, "condor_submit", "noq.sub", cwd=work)
    assert (res.returncode, res.stderr) == (
        1, '\nERROR: "noq.sub" doesn\'t contain any "queue" commands -- no jobs queued\n')

    (work / "zero.sub").write_text("executable = /bin/true\nqueue 0\n")
    res = run(idle_pool, "condor_submit", "zero.sub", cwd=work)
    assert (res.returncode, res.stderr) == (
        0, '\nWARNING: "zero.sub" has only empty "queue" commands -- no jobs queued\n')

    res = run(idle_pool, "condor_submit", "-terse", "-", cwd=work, input="executable = /bin/true\nqueue 2\n")
    assert res.returncode == 0 and re.fullmatch(r"(\d+)\.0 - \1\.1\n", res.stdout)
    res = run(idle_pool, "condor_submit", "-", cwd=work, input="executable = /bin/true\n+Foo = 7\nqueue\n")
    c = int(res.stdout.split("cluster ")[-1].rstrip(".\n"))
    assert res.returncode == 0 and res.stdout.startswith(f"\n** Proc {c}.0:\n")
    assert f"\nClusterId = {c}\n" in res.stdout and "\nFoo = 7\n" in res.stdout
    assert res.stdout.endswith(f"\n1 job(s) submitted to cluster {c}.\n")

    res = run(idle_pool, "condor_submit", "-batch-name", cwd=work)
    assert (res.returncode, res.stderr) == (1, "condor_submit: -batch-name requires another argument\n")
    assert len(q(idle_pool)) == 6


def test_condor_q_formats(idle_pool, work):
    res = run(idle_pool, "condor_q", "-json", "-allusers")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    ids = submit(idle_pool, work, "executable = /bin/true\n+R = 1.5\n+I = 3.0\n+E = A  +  1\n"
                                  "+S = \"a\\\"b\\\\c\"\n+U = undefined\n+B = true\n+L = {1, \"x\"}\n"
                                  "+BIG = 1e20\nqueue 2\n")
    c = ids[0].split(".")[0]
    res = run(idle_pool, "condor_q", "-json", "-allusers", "-attributes", "R,I,E,S,U,B,L,BIG", ids[1])
    assert res.stdout == ('[\n{\n  "B": true,\n  "BIG": 1E+20,\n  "E": "\\/Expr(A + 1)\\/",\n  "I": 3.0,\n'
                          '  "L": [\n    1,\n    "x"\n  ],\n  "R": 1.5,\n  "S": "a\\"b\\\\c",\n  "U": null\n}\n]\n')
    # full ads: sorted case-insensitively, every HTCondor attribute present
    full = run(idle_pool, "condor_q", "-json", "-allusers").stdout
    ads = json.loads(full)
    assert len(ads) == 2
    names = list(ads[0])
    assert names == sorted(names, key=str.lower)
    for attr in ("ClusterId", "ProcId", "JobStatus", "Owner", "Cmd", "Iwd", "Out", "Err", "RequestCpus",
                 "RequestMemory", "RequestDisk", "JobUniverse", "QDate", "EnteredCurrentStatus",
                 "GlobalJobId", "NumJobStarts", "Requirements"):
        assert attr in ads[0], attr
    assert ads[0]["RequestMemory"].startswith("/Expr(")  # default request_memory is an expression
    # -af: space separated, strings raw, one line per job
    res = run(idle_pool, "condor_q", "-allusers", "-af", "ClusterId", "ProcId", "Owner", "S", "Nope")
    assert res.stdout == f"{c} 0 {me()} a\"b\\c undefined\n{c} 1 {me()} a\"b\\c undefined\n"
    res = run(idle_pool, "condor_q", "-long", "-attributes", "Owner,clusterid,S", ids[0])
    assert res.stdout == f'ClusterId = {c}\nOwner = "{me()}"\nS = "a\\"b\\c"\n\n'
    # default: only my jobs; owner argument; constraint on a positional cluster
    pool(idle_pool, "seed", "3", "--owner", "someoneelse")
    assert len(q(idle_pool)) == 5
    assert run(idle_pool, "condor_q", "-json", "-attributes", "Owner").stdout.count('"Owner"') == 2
    assert len(q(idle_pool, "someoneelse")) == 3
    # table + totals
    res = run(idle_pool, "condor_q", "-allusers")
    lines = res.stdout.split("\n")
    assert lines[:2] == ["", ""] and lines[2].startswith(f"-- Schedd: {HOST} : <")
    assert "Total for query: 5 jobs; 0 completed, 0 removed, 5 idle, 0 running, 0 held, 0 suspended \n" \
           "Total for all users: 5 jobs; 0 completed, 0 removed, 5 idle, 0 running, 0 held, 0 suspended\n" \
        in res.stdout
    res = run(idle_pool, "condor_q", "-totals")
    assert f"Total for query: 2 jobs; 0 completed, 0 removed, 2 idle, 0 running, 0 held, 0 suspended \n" \
           f"Total for {me()}@{HOST}: 2 jobs;" in res.stdout
    # a bad constraint is an error
    res = run(idle_pool, "condor_q", "-allusers", "-constraint", "JobStatus == == 1")
    assert (res.returncode, res.stdout, res.stderr) == (
        1, "", "Error: Argument 3 (JobStatus == == 1) is not a valid constraint\n")
    res = run(idle_pool, "condor_q", "-bogus")
    assert res.returncode == 1 and res.stderr == "Error: unrecognized argument -bogus\n"


def test_rm_hold_release_messages_and_exit_codes(idle_pool, work):
    res = run(idle_pool, "condor_rm", "-constraint", "true")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "condor_rm:0:There are no jobs in the queue\n")
    res = run(idle_pool, "condor_hold", "7")
    assert (res.returncode, res.stderr) == (0, "condor_hold:0:There are no jobs in the queue\n")
    ids = submit(idle_pool, work, "executable = /bin/true\nqueue 3\n")
    c = ids[0].split(".")[0]
    res = run(idle_pool, "condor_hold", ids[0])
    assert (res.returncode, res.stdout, res.stderr) == (0, f"Job {ids[0]} held\n", "")
    res = run(idle_pool, "condor_hold", ids[0])
    assert (res.returncode, res.stdout, res.stderr) == (1, "", f"\nJob {ids[0]} already held\n")
    res = run(idle_pool, "condor_release", ids[1])
    assert (res.returncode, res.stderr) == (1, f"\nJob {ids[1]} not held to be released\n")
    res = run(idle_pool, "condor_release", "-constraint", "JobStatus == 5", "-reason", "go")
    assert (res.returncode, res.stdout) == (0, "All jobs matching constraint (JobStatus == 5) have been released\n")
    [ad] = q(idle_pool, ids[0])
    assert ad["JobStatus"] == 1 and ad["ReleaseReason"] == f"go (by user {me()})"
    res = run(idle_pool, "condor_hold", c)
    assert (res.returncode, res.stdout) == (0, f"All jobs in cluster {c} have been held\n")
    res = run(idle_pool, "condor_hold", c)
    assert (res.returncode, res.stdout, res.stderr) == (1, "", f"\nCouldn't find/hold all jobs in cluster {c}\n")
    res = run(idle_pool, "condor_release", me())
    assert (res.returncode, res.stdout) == (0, f'All jobs of user "{me()}" have been released\n')
    res = run(idle_pool, "condor_rm", "999.0")
    assert (res.returncode, res.stdout, res.stderr) == (1, "", "\nJob 999.0 not found\n")
    res = run(idle_pool, "condor_rm", "-constraint", "((")
    assert (res.returncode, res.stderr) == (1, "DCSchedd::actOnJobs:1:Can't insert constraint into ClassAd\n"
                                               "Couldn't find/remove all jobs matching constraint ((()\n")
    # rm.cpp warns that -constraint is ignored for C.P ids, then still applies it (faithfully copied)
    res = run(idle_pool, "condor_rm", ids[2], "-constraint", "false")
    assert (res.returncode, res.stdout) == (1, f"Job {ids[2]} marked for removal\n")
    assert res.stderr == "Warning, -constraint is ignored for fully qualified job ids\n" \
                         "\nCouldn't find/remove all jobs matching constraint (false)\n"
    res = run(idle_pool, "condor_rm", ids[2])
    assert (res.returncode, res.stderr) == (1, f"\nJob {ids[2]} not found\n")
    res = run(idle_pool, "condor_rm", "-totals", "-all")
    assert (res.returncode, res.stdout) == (
        0, "2 Succeeded, 0 Failed, 0 Not Found, 0 Bad Status, 0 Already Done, 0 Permission Denied\n"
           "All jobs have been marked for removal\n")
    res = run(idle_pool, "condor_rm")
    assert res.returncode == 1 and res.stderr.startswith("You did not specify any jobs\nUsage: condor_rm ")
    res = run(idle_pool, "condor_rm", "0")
    assert res.returncode == 1 and res.stderr.startswith("Invalid cluster # from 0.\nYou did not specify any jobs\n")
    res = run(idle_pool, "condor_rm", "-all", "5")
    assert res.returncode == 1 and res.stderr.startswith("Usage: condor_rm")
    res = run(idle_pool, "condor_rm", "5", "-all")
    assert (res.returncode, res.stderr) == (1, "condor_rm: can't mix -all with other constraints\n")
    assert q(idle_pool) == []
    assert len(history(idle_pool)) == 3


def test_history_formats(idle_pool, work):
    res = run(idle_pool, "condor_history", "-json")
    assert (res.returncode, res.stdout) == (0, "[\n]\n")
    ids = submit(idle_pool, work, "executable = /bin/true\n+Tag = \"t\"\nqueue 3\n")
    run(idle_pool, "condor_rm", ids[0].split(".")[0])
    hist = history(idle_pool)
    assert [a["ProcId"] for a in hist] == [2, 1, 0]  # newest first
    assert len(history(idle_pool, "-limit", "2")) == 2 and len(history(idle_pool, "-match", "1")) == 1
    assert [a["ProcId"] for a in history(idle_pool, ids[1])] == [1]
    assert history(idle_pool, "-constraint", "ProcId > 0", "-attributes", "ProcId,Tag") == [
        {"ProcId": 2, "Tag": "t"}, {"ProcId": 1, "Tag": "t"}]
    res = run(idle_pool, "condor_history", "-af", "ProcId", "JobStatus", "-limit", "1")
    assert res.stdout == "2 3\n"
    res = run(idle_pool, "condor_history", "-json", "-constraint", "false")
    assert res.stdout == "[\n]\n"


# ------------------------------------------------------------------ faults, bookkeeping, stop

def test_fault_knobs(pool_env, work):
    (work / "s.sub").write_text("executable = /bin/sleep\narguments = 300\nqueue 2\n")
    pool(pool_env, "fault", "submit-fail", "1")
    res = run(pool_env, "condor_submit", "s.sub", cwd=work)
    assert res.returncode == 1 and res.stderr.startswith("\nERROR: Failed to connect to local queue manager\n")
    assert q(pool_env) == []
    assert run(pool_env, "condor_submit", "s.sub", cwd=work).returncode == 0
    run(pool_env, "condor_rm", "-all")

    pool(pool_env, "fault", "query-fail", "2")
    for _ in range(2):
        res = run(pool_env, "condor_q", "-json", "-allusers")
        assert res.returncode == 1 and res.stdout == ""
        assert res.stderr.startswith("\n-- Failed to fetch ads from: <") and "SECURITY:2:" in res.stderr
    assert run(pool_env, "condor_q", "-json").returncode == 0

    pool(pool_env, "fault", "submit-delay", "20")
    p = subprocess.Popen(["condor_submit", "s.sub"], cwd=work, env=pool_env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    time.sleep(1.0)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=10)
    pool(pool_env, "fault", "clear")
    wait_for(lambda: q(pool_env) == [], what="removed jobs gone")
    assert q(pool_env) == [], "a submit killed mid-way queued jobs"

    pool(pool_env, "fault", "hold-next", "1")
    ids = submit(pool_env, work, "executable = /bin/sleep\narguments = 300\nrequest_memory = 100\nqueue 2\n")
    wait_for(lambda: sorted(status_map(pool_env).values()) == [2, 5], what="one held, one running")
    [held] = q(pool_env, "-constraint", "JobStatus == 5")
    assert held["HoldReasonCode"] == 34 and "memory limit" in held["HoldReason"]
    assert f"{held['ClusterId']}.{held['ProcId']}" == ids[0]
    pool(pool_env, "fault", "submit-partial", "2")
    ids = submit(pool_env, work, "executable = /bin/sleep\narguments = 300\nqueue 5\n")
    assert len(ids) == 2, "the schedd accepted only 2 of 5 jobs"
    out = submit(pool_env, work, "executable = /bin/sleep\narguments = 300\nqueue 3\n")
    assert len(out) == 3, "submit-partial is one-shot"
    assert pool(pool_env, "fault", "show").stdout.count(": 0") == 5


def test_calls_log_lines(idle_pool, work):
    (work / "j.sub").write_text("executable = /bin/true\nqueue\n")
    run(idle_pool, "condor_submit", "-terse", "j.sub", cwd=work)
    run(idle_pool, "condor_q", "-json", "-constraint", 'Owner == "x y"')
    run(idle_pool, "condor_rm", "999.0")  # fails, still logged
    run(idle_pool, "condor_history", "-limit", "1")
    lines = calls(idle_pool)
    assert len(lines) == 4
    parsed = []
    for line in lines:
        t, name, args, pid = line.split("\t")
        assert float(t) > 1e9 and int(pid) > 1
        parsed.append((name, json.loads(args)))
    assert parsed == [("condor_submit", ["-terse", "j.sub"]),
                      ("condor_q", ["-json", "-constraint", 'Owner == "x y"']),
                      ("condor_rm", ["999.0"]), ("condor_history", ["-limit", "1"])]


def test_stop_kills_every_job_process(pool_env, work):
    ids = submit(pool_env, work, "executable = /bin/sh\n"
                                 "arguments = \"-c 'sleep 300 & echo $! > child.$(Process); "
                                 "setsid sleep 301 & echo $! > escaped.$(Process); "
                                 "echo $$ > pid.$(Process); wait'\"\nqueue 3\n")
    files = [work / f"{k}.{p}" for k in ("child", "escaped", "pid") for p in range(3)]
    wait_for(lambda: all(f.exists() and f.read_text().strip() for f in files), what="all processes started")
    pids = read_pids(files)
    assert all(pid_alive(p) for p in pids)
    res = pool(pool_env, "stop")
    assert res.stdout.startswith("stopped runner pid")
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5, what="every job process dead")
    assert pool(pool_env, "stop").stdout.strip() == "not running"  # idempotent
    out = pool(pool_env, "status").stdout
    assert "runner: not running" in out and "3 idle" in out
    # a command restarts the pool and the jobs run again
    assert sorted(status_map(pool_env)) == ids
    wait_for(lambda: set(status_map(pool_env).values()) == {2}, what="jobs restarted")


def test_runner_restarts_and_commands_start_it(pool_env, work):
    assert pool(pool_env, "status").stdout.count("not running") == 1
    res = pool(pool_env, "start")
    pid = int(res.stdout.split()[-1])
    assert pid_alive(pid)
    assert pool(pool_env, "start").stdout == res.stdout  # no second runner
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), what="runner killed")
    ids = submit(pool_env, work, "executable = /bin/true\nqueue\n")
    wait_for(lambda: history(pool_env, ids[0]), what="new runner ran the job")


def test_big_queue_query_is_fast(idle_pool):
    pool(idle_pool, "seed", "20000", "--attr", 'DaskGatewayCluster="big"', "--attr", "DaskWorkerIndex=3")
    t0 = time.monotonic()
    res = run(idle_pool, "condor_q", "-json", "-allusers", "-constraint", "DaskGatewayCluster =!= undefined",
              "-attributes", "ClusterId,ProcId,JobStatus,Owner,DaskGatewayCluster,DaskWorkerIndex,"
                             "EnteredCurrentStatus,HoldReason")
    elapsed = time.monotonic() - t0
    assert res.returncode == 0
    assert res.stdout.count('"DaskGatewayCluster": "big"') == 20000
    assert elapsed < 5.0, elapsed
    assert pool(idle_pool, "status").stdout.count("20000 idle") == 1
