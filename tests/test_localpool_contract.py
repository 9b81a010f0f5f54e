"""Contract tests: the local pool's condor_submit against what the HTCondor manual says.

Each case is an example of the manual (docs/man-pages/htcondor-jdl.rst, condor_submit.rst,
users-manual/submitting-a-job.rst, HTCondor 25) with its stated expansion or result, checked
through `condor_submit -dry-run` (the job ads condor_submit would send) or by running the job.
"""
from __future__ import annotations

from pathlib import Path

import classad2
import pytest

from tests.test_localpool_lib import dry_run, history, q, run, submit, wait_for


@pytest.fixture
def work(tmp_path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def col(ads: list[dict], name: str) -> list:
    return [ad.get(name) for ad in ads]


# ---- queue forms (submitting-a-job.rst "Submitting many similar jobs with one queue command") ------

def test_queue_matching_files_example_1(pool_env, work):
    for f in ("initial.dat", "middle.dat", "ending.dat"):
        (work / f).write_text("x")
    (work / "dir.dat").mkdir()  # "Only files, and not directories are considered"
    ads = dry_run(pool_env, work, "executable = /bin/true\ntransfer_input_files = $(filename)\n"
                                  "arguments = -infile $(filename)\nqueue filename matching files *.dat\n")
    assert sorted(col(ads, "Args")) == ["-infile ending.dat", "-infile initial.dat", "-infile middle.dat"]
    assert sorted(col(ads, "TransferInput")) == ["ending.dat", "initial.dat", "middle.dat"]


def test_queue_in_list_example_2(pool_env, work):
    ads = dry_run(pool_env, work, "executable = /bin/true\narguments = $(input)\nqueue 1 input in A, B, C\n")
    assert col(ads, "Args") == ["A", "B", "C"] and col(ads, "ProcId") == [0, 1, 2]


def test_queue_from_inline_lines_sets_submit_commands_example_3(pool_env, work):
    ads = dry_run(pool_env, work, "executable = /bin/true\n+Input = \"$(input)\"\n"
                                  "queue input, arguments from (\n  file1, -a -b 26\n  file2, -c -d 92\n)\n")
    assert col(ads, "Input") == ["file1", "file2"]
    assert col(ads, "Args") == ["-a -b 26", "-c -d 92"]  # the queue variable IS the arguments command


def test_queue_from_command_output_example_4(pool_env, work):
    ads = dry_run(pool_env, work, "executable = /bin/true\narguments = $(item)\nqueue from seq 7 9 |\n")
    assert col(ads, "Args") == ["7", "8", "9"]


def test_queue_3_in_two_items_process_item_step_itemindex_row(pool_env, work):
    ads = dry_run(pool_env, work, "executable = /bin/true\n"
                                  "arguments = $(Process) $(Item) $(Step) $(ItemIndex) $(Row)\n"
                                  "queue 3 in (A, B)\n")
    assert col(ads, "Args") == ["0 A 0 0 0", "1 A 1 0 0", "2 A 2 0 0", "3 B 0 1 1", "4 B 1 1 1", "5 B 2 1 1"]


def test_queue_count_forms(pool_env, work):
    assert len(dry_run(pool_env, work, "executable = /bin/true\nn = 2\nqueue $(n)\n")) == 2
    assert len(dry_run(pool_env, work, "executable = /bin/true\nqueue 2*3\n")) == 6  # <int expr>
    ads = dry_run(pool_env, work, "executable = /bin/true\narguments = $(v)\nqueue 1 v in a, b\n")
    assert col(ads, "Args") == ["a", "b"]
    ads = dry_run(pool_env, work, "executable = /bin/true\nqueue executable from (\n/bin/true\n/bin/false\n)\n")
    assert col(ads, "Cmd") == ["/bin/true", "/bin/false"]
    ads = dry_run(pool_env, work, "executable = /bin/echo\nqueue arguments in (x1, x2)\n")
    assert col(ads, "Args") == ["x1", "x2"]


def test_several_queue_statements_one_cluster(pool_env, work):
    ads = dry_run(pool_env, work, "executable = /bin/true\narguments = first\nqueue\n"
                                  "arguments = second\nqueue 2\n")
    assert col(ads, "Args") == ["first", "second", "second"] and col(ads, "ProcId") == [0, 1, 2]


# ---- macro functions (submitting-a-job.rst "Using Function Macros") --------------------------------

def test_int_macro_examples_1_and_2(pool_env, work):
    for i in (1, 2, 3):
        (work / f"run-{i:04d}").mkdir()
    ads = dry_run(pool_env, work, "executable = /bin/true\nMyIndex = $(Process) + 1\n"
                                  "initial_dir = run-$INT(MyIndex,%04d)\nqueue 3\n")
    assert col(ads, "Iwd") == [str(work / f"run-{i:04d}") for i in (1, 2, 3)]
    ads = dry_run(pool_env, work, "executable = /bin/true\nValues = $(Process) * 10\n"
                                  "Extension = $INT(Values,%03d)\ninput = X.$(Extension)\nqueue 4\n")
    assert col(ads, "In") == ["X.000", "X.010", "X.020", "X.030"]


def test_fnx_with_matching_example_3(pool_env, work):
    (work / "samplerun").mkdir()
    for f in ("A.dat", "B.dat"):
        (work / "samplerun" / f).write_text("x")
    ads = dry_run(pool_env, work, "executable = /bin/true\narguments = $Fnx(FILE)\n"
                                  "transfer_input_files = $(FILE)\nqueue FILE matching (\n    samplerun/*.dat\n)\n")
    assert sorted(col(ads, "Args")) == ["A.dat", "B.dat"]
    assert sorted(col(ads, "TransferInput")) == ["samplerun/A.dat", "samplerun/B.dat"]


def test_file_substr_choice_real_macros(pool_env, work):
    sub = work / "sub"
    sub.mkdir()
    ads = dry_run(pool_env, sub, "executable = $Fp(SUBMIT_FILE)run.sh\nName = abcdef\nn = 2\n"
                                 "+S = \"$SUBSTR(Name, 2) $SUBSTR(Name, 0, -2) $SUBSTR(Name, 1, 3) $SUBSTR(Name, -1)\"\n"
                                 "+F = \"$Fn(/tmp/simulate.exe) $Fx(/tmp/simulate.exe)\"\n"
                                 "+C = \"$CHOICE(1, x, y, z)\"\n+R = \"$RANDOM_CHOICE(0,1,2,3,4,5,6,7,8)\"\n"
                                 "arguments = $INT(n) $REAL(n)\nqueue\n")
    [ad] = ads
    assert ad["Cmd"] == str(sub / "run.sh")  # $Fp of the submit file's path
    assert ad["S"] == "cdef abcd bcd f" and ad["F"] == "simulate .exe" and ad["C"] == "y"
    assert ad["R"] in {str(i) for i in range(9)}
    assert ad["Args"] == "2 2"


# ---- arguments and environment (htcondor-jdl.rst) ---------------------------------------------------

ARGV_SCRIPT = '#!/bin/sh\nfor a in "$@"; do printf "[%s]\\n" "$a"; done\n'


@pytest.mark.parametrize("arguments, argv", [
    ('"3 simple arguments"', ["3", "simple", "arguments"]),
    ("\"one 'two with spaces' 3\"", ["one", "two with spaces", "3"]),
    ("\"one \"\"two\"\" 'spacey ''quoted'' argument'\"", ["one", '"two"', "spacey 'quoted' argument"]),
])
def test_arguments_new_syntax_examples(pool_env, work, arguments, argv):
    script = work / "argv.sh"
    script.write_text(ARGV_SCRIPT)
    script.chmod(0o755)
    ids = submit(pool_env, work, f"executable = argv.sh\narguments = {arguments}\noutput = out.txt\nqueue\n")
    wait_for(lambda: history(pool_env, ids[0]), what="job finished")
    assert (work / "out.txt").read_text().splitlines() == [f"[{a}]" for a in argv]


@pytest.mark.parametrize("environment, expected", [
    ("\"one=1 two=\"\"2\"\" three='spacey ''quoted'' value'\"",
     ["one=1", 'two="2"', "three=spacey 'quoted' value"]),
    ("one=1;two=2;three=\"quotes have no 'special' meaning\"",
     ["one=1", "two=2", "three=\"quotes have no 'special' meaning\""]),
])
def test_environment_examples(pool_env, work, environment, expected):
    ids = submit(pool_env, work, f"executable = /usr/bin/env\nenvironment = {environment}\noutput = env.txt\n"
                                 "queue\n")
    wait_for(lambda: history(pool_env, ids[0]), what="job finished")
    lines = (work / "env.txt").read_text().splitlines()
    assert [l for l in lines if l.split("=", 1)[0] in ("one", "two", "three")] == expected


# ---- resources, requirements, policy (htcondor-jdl.rst, condor_submit.rst examples) ----------------

@pytest.mark.parametrize("memory, disk, want_memory, want_disk", [
    ("32 Mb", "100 Gb", 32, 100 * 1024 * 1024),  # condor_submit.rst Example 1
    ("100", "1", 100, 1),  # no unit: MiB / KiB
    ("1.5G", "1M", 1536, 1024),
    ("2GB", "1KB", 2048, 1),
    ("1T", "1TB", 1024 * 1024, 1024 ** 3),
    ("1GB, 2GB", "10K", 1024, 10),  # a retry list: the first quantity is the request
])
def test_request_units(pool_env, work, memory, disk, want_memory, want_disk):
    [ad] = dry_run(pool_env, work, f"executable = /bin/true\nrequest_memory = {memory}\n"
                                   f"request_disk = {disk}\nqueue\n")
    assert (ad["RequestMemory"], ad["RequestDisk"]) == (want_memory, want_disk)


def test_default_requirements_and_user_requirements_combined(pool_env, work):
    [ad] = dry_run(pool_env, work, "executable = /bin/true\nqueue\n")
    req = str(ad["Requirements"])
    for clause in ('TARGET.Arch == "X86_64"', 'TARGET.OpSys == "LINUX"', "TARGET.Disk >= RequestDisk",
                   "TARGET.Memory >= RequestMemory", "TARGET.HasFileTransfer"):
        assert clause in req
    assert "TARGET.Cpus" not in req  # request_cpus 1: no clause
    # condor_submit.rst Example 2: the user's clause first, and no OpSys default when it tests OpSysAndVer
    [ad] = dry_run(pool_env, work, "executable = /bin/sleep\narguments = 30\n"
                                   "Requirements = (OpSysAndVer == \"RedHat9\")\n"
                                   "Request_Memory = 32 Mb\nRequest_Disk = 100 Gb\nrequest_cpus = 4\n"
                                   "request_gpus = 1\nqueue\n")
    req = str(ad["Requirements"])
    # SetRequirements wraps the user's text in parentheses: "(%s)" of "(OpSysAndVer ...)"
    assert req.startswith('((OpSysAndVer == "RedHat9")) && (TARGET.Arch == "X86_64")')
    assert "TARGET.OpSys ==" not in req
    assert "(TARGET.Cpus >= RequestCpus)" in req and "(TARGET.Gpus >= RequestGpus)" in req
    assert (ad["RequestCpus"], ad["RequestGpus"]) == (4, 1)


def test_policy_and_accounting_commands_reach_the_job_ad(pool_env, work):
    [ad] = dry_run(pool_env, work, "executable = /bin/true\n"
                                   "periodic_remove = CumulativeSuspensionTime > "
                                   "((RemoteWallClockTime - CumulativeSuspensionTime) / 2.0)\n"
                                   "periodic_hold = NumJobStarts > 3 && JobStatus =?= 2\n"
                                   "periodic_release = HoldReasonCode == 3\non_exit_hold = ExitCode =!= 0\n"
                                   "max_retries = 3\nsuccess_exit_code = 2\nrank = Memory >= 64\npriority = 5\n"
                                   "concurrency_limits = DB, Tape:2\naccounting_group = physics\n"
                                   "notification = Error\nqueue\n")
    assert str(ad["PeriodicRemove"]) == str(classad2.ExprTree(
        "CumulativeSuspensionTime > ((RemoteWallClockTime - CumulativeSuspensionTime) / 2.0)"))
    assert str(ad["PeriodicHold"]) == str(classad2.ExprTree("NumJobStarts > 3 && JobStatus =?= 2"))
    assert str(ad["OnExitHold"]) == str(classad2.ExprTree("ExitCode =!= 0"))
    assert (ad["JobMaxRetries"], ad["JobSuccessExitCode"]) == (3, 2)
    assert str(ad["OnExitRemove"]) == str(classad2.ExprTree(
        "NumJobCompletions > JobMaxRetries || ExitCode =?= JobSuccessExitCode"))
    assert str(ad["Rank"]) == "Memory >= 64" and ad["JobPrio"] == 5 and ad["JobNotification"] == 3
    assert ad["ConcurrencyLimits"] == "db,tape:2"
    assert (ad["AcctGroup"], ad["AccountingGroup"]) == ("physics", f"physics.{ad['Owner']}")
    [ad] = dry_run(pool_env, work, "executable = /bin/true\nnice_user = true\nqueue\n")
    assert ad["NiceUser"] is True and ad["AccountingGroup"].startswith("nice-user.")


@pytest.mark.parametrize("universe", ["grid", "vm", "parallel", "java"])
def test_universes_this_pool_cannot_run_are_held_with_a_reason(pool_env, work, universe):
    [ad] = dry_run(pool_env, work, f"universe = {universe}\nexecutable = /bin/true\nqueue\n")
    assert ad["JobStatus"] == 5 and ad["HoldReasonCode"] == 26
    assert f"cannot run {universe} universe jobs" in ad["HoldReason"]


def test_hold_and_hold_reason(pool_env, work):
    [ad] = dry_run(pool_env, work, "executable = /bin/true\nhold = true\nqueue\n")
    assert (ad["JobStatus"], ad["HoldReasonCode"], ad["HoldReason"]) == (
        5, 15, "submitted on hold at user's request")


def test_bad_lines_are_refused_with_their_line_number(pool_env, work):
    (work / "bad.sub").write_text("executable = /bin/true\nthis is not a command\nqueue\n")
    res = run(pool_env, "condor_submit", "bad.sub", cwd=work)
    assert (res.returncode, res.stderr) == (1, "\nERROR: Failed to parse command file (line 2).\n")
    (work / "loop.sub").write_text("a = $(b)\nb = $(a)\nexecutable = /bin/$(a)\nqueue\n")
    res = run(pool_env, "condor_submit", "loop.sub", cwd=work, timeout=20)
    assert res.returncode == 1 and "loop" in res.stderr
    assert q(pool_env) == []


# ---- the runner honours the policy expressions ------------------------------------------------------

def test_runner_applies_max_retries_on_exit_hold_and_periodic_hold_release(pool_env, work):
    retry = submit(pool_env, work, "executable = /bin/sh\narguments = \"-c 'exit 3'\"\nmax_retries = 2\nqueue\n")
    onexit = submit(pool_env, work, "executable = /bin/false\non_exit_hold = ExitCode =!= 0\n"
                                    "on_exit_hold_reason = strcat(\"exit code \", string(ExitCode))\nqueue\n")
    periodic = submit(pool_env, work, "executable = /bin/sleep\narguments = 30\n"
                                      "periodic_hold = JobStatus == 2 && time() - JobCurrentStartDate >= 1\n"
                                      "periodic_hold_reason = \"ran too long\"\nperiodic_hold_subcode = 7\n"
                                      "periodic_release = NumJobStarts < 2\nqueue\n")
    [done] = wait_for(lambda: history(pool_env, retry[0]), timeout=30, what="retried job done")
    assert (done["NumJobStarts"], done["NumJobCompletions"], done["ExitCode"], done["JobStatus"]) == (3, 3, 3, 4)

    def held(job_id, starts):
        ads = q(pool_env, job_id)
        return ads and ads[0]["JobStatus"] == 5 and ads[0]["NumJobStarts"] == starts and ads[0]
    ad = wait_for(lambda: held(onexit[0], 1), timeout=30, what="on_exit_hold")
    assert (ad["HoldReasonCode"], ad["HoldReason"]) == (3, "exit code 1")
    ad = wait_for(lambda: held(periodic[0], 2), timeout=30, what="held, released, held again")
    assert (ad["HoldReasonCode"], ad["HoldReasonSubCode"], ad["HoldReason"]) == (3, 7, "ran too long")
    assert ad["NumJobReleases"] == 1

    res = run(pool_env, "condor_q", "-hold")
    header, row = [l for l in res.stdout.splitlines() if "HOLD_REASON" in l or "ran too long" in l]
    assert header.split() == ["ID", "OWNER", "HELD_SINCE", "CODE/SUB", "HOLD_REASON"]
    assert row.split()[0] == periodic[0] and "   3/7   ran too long" in row
    res = run(pool_env, "condor_q", "-better-analyze", periodic[0])
    assert f"{periodic[0].split('.')[0]}.000:  Job is held.\n\nHold reason: ran too long" in res.stdout
    assert "The Requirements expression for job" in res.stdout
    res = run(pool_env, "condor_rm", "-held")
    assert (res.returncode, res.stdout) == (0, "All held jobs have been marked for removal\n")
    assert q(pool_env) == []


def test_condor_q_long_reparses_with_classad2_and_prints_old_syntax(pool_env, work):
    pool_env["LOCALPOOL_SLOTS"] = "0"
    ids = submit(pool_env, work, "executable = /bin/true\nperiodic_remove = x =?= 1 &&\\\n"
                                 "  y =!= 2\n+Note = \"a b\"\nqueue\n")
    res = run(pool_env, "condor_q", "-l", ids[0])
    assert "PeriodicRemove = x =?= 1 && y =!= 2\n" in res.stdout
    ad = classad2.parseOne(res.stdout, classad2.ParserType.Old)
    assert str(ad["PeriodicRemove"]) == str(classad2.ExprTree("x =?= 1 && y =!= 2"))
    assert ad["Note"] == "a b" and ad["ClusterId"] == int(ids[0].split(".")[0])


def test_a_released_job_of_a_universe_the_pool_cannot_run_is_held_again(pool_env, work):
    ids = submit(pool_env, work, "universe = vm\nexecutable = /bin/true\nqueue\n")
    assert q(pool_env, ids[0])[0]["HoldReasonCode"] == 26
    assert run(pool_env, "condor_release", ids[0]).returncode == 0
    ad = wait_for(lambda: [a for a in q(pool_env, ids[0]) if a["JobStatus"] == 5 and a.get("NumJobStarts")],
                  what="held again")[0]
    assert ad["HoldReasonCode"] == 26 and "cannot run JobUniverse 13" in ad["HoldReason"]
    assert history(pool_env, ids[0]) == []


def test_dry_run_layout_and_nothing_queued(pool_env, work):
    (work / "two.sub").write_text("executable = /bin/true\narguments = $(Process)\nqueue 2\n")
    res = run(pool_env, "condor_submit", "-dry-run", "-", "two.sub", cwd=work)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith("Dry-Run job(s)\nClusterId=1\n") and "\nCmd=\"/bin/true\"\n" in out
    proc0, proc1 = out.split("\nProcId=")[1:]  # each proc: ProcId, JobStatus, then its own attributes
    assert proc0.startswith("0\nJobStatus=1\n") and '\nArgs="0"\n' in proc0 and proc0.endswith("\n.")
    assert proc1.startswith("1\nJobStatus=1\n") and '\nArgs="1"\n' in proc1
    assert out.endswith('"\n.\n2 job(s) dry-run to cluster 1.\n') and res.stderr == ""
    res = run(pool_env, "condor_submit", "-dry-run", str(work / "ads.txt"), "two.sub", cwd=work)
    assert res.stdout == "Dry-Run job(s)..\n2 job(s) dry-run to cluster 1.\n"
    assert (work / "ads.txt").read_text().startswith("\nClusterId=1\n")
    assert q(pool_env) == []
