"""workers: SubmitDescription, summaries, ScheddError, condor_rm result reading, backend choice."""
from __future__ import annotations


import pytest

from workers.htcondor.cli import Completed, CliSchedd, interpret_act
from htdask.domain.jobstatus import JobStatus
from workers.htcondor import get_schedd
from workers.htcondor.schedd import ActResult, ParseError, ScheddError, ScheddTimeout
from htdask.domain.submitdesc import SubmitDescription
from htdask.domain.summary import AdCounts, JobRecord, summarize
from htdask.domain.validation import ValidationError


# --- SubmitDescription -------------------------------------------------------------------------

def test_render_count_and_attrs():
    d = SubmitDescription({"executable": "/bin/sleep", "arguments": '"300"'})
    d["+Foo"] = '"x"'
    d.set_attr("Bar", "3").set("request_cpus", "1")
    assert d.render() == ('executable = /bin/sleep\narguments = "300"\nMY.Foo = "x"\nMY.Bar = 3\n'
                          'request_cpus = 1\nqueue\n')
    d.queue(3)
    assert d.render().endswith("request_cpus = 1\nqueue 3\n") and d.num_jobs == 3
    assert d.attrs() == {"Foo": '"x"', "Bar": "3"}
    assert d["+foo"] == '"x"' and "my.bar" in d and "Executable" in d


def test_keys_are_case_insensitive_and_replaced_in_place():
    d = SubmitDescription()
    d["Executable"] = "/bin/a"
    d["request_cpus"] = "1"
    d["executable"] = "/bin/b"
    assert list(d.commands()) == ["request_cpus", "executable"]
    del d["EXECUTABLE"]
    assert "executable" not in d


def test_with_items_is_a_copy():
    d = SubmitDescription({"executable": "/bin/true"})
    d2 = d.with_items(["i", "n"], [(1, "a"), (2, "b")])
    assert d.render() == "executable = /bin/true\nqueue\n"
    assert d2.render() == "executable = /bin/true\nqueue i,n from (\n1,a\n2,b\n)\n"
    assert d2.num_jobs == 2
    assert d2.queue_args() == "i,n from (\n1,a\n2,b\n)"


@pytest.mark.parametrize("key,value", [
    ("executable", "/bin/a\nqueue 100"), ("executable", "/bin/a\r"), ("x", "a\x00"),
    ("bad key", "1"), ("queue", "3"), ("a=b", "1"), ("x", "trailing\\"), ("x", " padded"),
])
def test_bad_commands(key, value):
    with pytest.raises(ValidationError):
        SubmitDescription()[key] = value


@pytest.mark.parametrize("vars,rows", [
    ([], [(1,)]), (["a b"], [(1,)]), (["a"], []), (["a"], [("x y",)]), (["a"], [("x,y",)]),
    (["a"], [(")",)]), (["a"], [("$(X)",)]), (["a", "b"], [(1,)]), (["a"], [("",)]), (["a"], [('"',)]),
])
def test_bad_items(vars, rows):
    with pytest.raises(ValidationError):
        SubmitDescription().with_items(vars, rows)


def test_bad_queue_counts():
    for n in (-1, True, 1.5, "3"):
        with pytest.raises(ValidationError):
            SubmitDescription().queue(n)


# --- summaries ---------------------------------------------------------------------------------

def ad(c, p, status, cluster="demo", **kw):
    base = {"ClusterId": c, "ProcId": p, "JobStatus": status, "DaskGatewayCluster": cluster,
            "DaskWorkerName": f"{cluster}-{p}", "DaskWorkerIndex": p, "DaskClusterOwner": "alice",
            "EnteredCurrentStatus": 1700000000 + p, "Owner": "alice"}
    base.update(kw)
    return base


def test_summarize_counts_reasons_and_records():
    ads = [
        ad(1, 0, 1), ad(1, 1, 2), ad(1, 2, 2), ad(1, 3, 5, HoldReason="memory exceeded", HoldReasonCode=34),
        ad(1, 4, 5, HoldReason="memory exceeded", HoldReasonCode=34),
        ad(1, 5, 5, HoldReason="via condor_hold (by user alice)", HoldReasonCode=1),
        ad(1, 6, 4, ExitCode=0), ad(1, 7, 3), ad(1, 8, 7), ad(1, 9, 6), ad(1, 10, 99),
        ad(2, 0, 1, cluster="other"), {"ClusterId": 3, "ProcId": 0, "JobStatus": 2, "Owner": "bob"},
    ]
    s = summarize(iter(ads))
    assert set(s) == {"demo", "other"}
    d = s["demo"]
    assert (d.idle, d.running, d.held, d.completed, d.removed, d.suspended, d.transferring_output, d.unknown) == \
        (1, 2, 3, 1, 1, 1, 1, 1)
    assert d.total == 11 and d.active == 5
    assert d.held_reasons == {"memory exceeded": 2, "via condor_hold (by user alice)": 1}
    assert d.held_reason_codes == {"memory exceeded": 34, "via condor_hold (by user alice)": 1}
    assert d.max_index == 10 and d.owner == "alice"
    assert d.jobs[3] == JobRecord("1.3", "demo-3", 3, JobStatus.HELD, 1700000003, "memory exceeded", 34, None)
    assert d.jobs[6].exit_code == 0
    assert s["other"].idle == 1 and s["other"].max_index == 0
    as_dict = d.to_dict()
    assert as_dict["total"] == 11 and as_dict["jobs"][0][0] == "1.0"
    assert "jobs" not in d.to_dict(jobs=False)


def test_summarize_tolerates_missing_and_odd_values():
    counts = AdCounts()
    s = summarize([{"DaskGatewayCluster": "x", "JobStatus": "/Expr(1)/", "DaskWorkerIndex": "/Expr(y)/",
                    "HoldReason": None},  # no ClusterId/ProcId, JobStatus not an integer: skipped
                   {"DaskGatewayCluster": "x", "ClusterId": 1, "ProcId": 0, "JobStatus": 9,
                    "DaskWorkerIndex": "/Expr(y)/"}], counts=counts)  # unknown status, odd index: kept
    x = s["x"]
    assert x.unknown == 1 and x.max_index == -1 and x.jobs[0].index is None and len(x.jobs) == 1
    assert (counts.unparsed, counts.degraded) == (1, 1)
    held = summarize([{"DaskGatewayCluster": "x", "ClusterId": 1, "ProcId": 0, "JobStatus": 5}])["x"]
    assert held.held_reasons == {"(no HoldReason)": 1}


def test_summarize_without_jobs_and_empty():
    assert summarize([]) == {}
    s = summarize((ad(1, i, 2) for i in range(100)), keep_jobs=False)
    assert s["demo"].running == 100 and s["demo"].jobs == []


def test_summary_shares_reason_strings():
    ads = (ad(1, i, 5, HoldReason="".join(["memory ", "exceeded"]), HoldReasonCode=34) for i in range(10))
    jobs = summarize(ads)["demo"].jobs
    assert all(j.hold_reason is jobs[0].hold_reason for j in jobs)


# --- ScheddError and friends -------------------------------------------------------------------

def test_schedd_error_one_line_with_meaningful_stderr():
    e = ScheddError("condor_submit exited with status 1", ["condor_submit", "-terse", "x.sub"], 1,
                    "\nERROR: Failed to parse command file (line 3).\n\nmore\n")
    assert str(e) == "condor_submit exited with status 1: ERROR: Failed to parse command file (line 3)."
    assert e.argv == ["condor_submit", "-terse", "x.sub"] and e.returncode == 1
    e2 = ScheddError("condor_rm exited with status 1", None, 1, "\nCouldn't find/remove all jobs in cluster 42\n")
    assert str(e2).endswith(": Couldn't find/remove all jobs in cluster 42")
    assert str(ScheddError("plain")) == "plain"
    assert issubclass(ScheddTimeout, ScheddError) and issubclass(ParseError, ScheddError)


def done(rc, out="", err="", prog="condor_rm"):
    return Completed([prog, "-constraint", "x"], rc, out, err)


def test_interpret_act():
    r = interpret_act(done(0, "All jobs matching constraint (x) have been marked for removal\n"))
    assert r == ActResult(True, "All jobs matching constraint (x) have been marked for removal", True)
    r = interpret_act(done(0, "", "condor_rm:0:There are no jobs in the queue\n"))
    assert r.ok and not r.matched
    r = interpret_act(done(1, "", "\nCouldn't find/remove all jobs matching constraint (x)\n"))
    assert r.ok and not r.matched
    r = interpret_act(done(1, "Job 5.0 marked for removal\n", "Job 5.1 not found\n"))
    assert r.ok and r.matched and "5.1 not found" in r.message
    r = interpret_act(done(1, "", "Job 5.1 already held\n", "condor_hold"))
    assert r.ok and not r.matched
    with pytest.raises(ScheddError) as e:
        interpret_act(done(1, "", "Permission denied to remove job 5.0\n"))
    assert "Permission denied" in str(e.value)
    with pytest.raises(ScheddError):
        interpret_act(done(1, "", "SCHEDD:1:Permission denied\nCouldn't find/remove all jobs matching constraint (x)\n"))
    with pytest.raises(ScheddError) as e:
        interpret_act(done(1, "", "DCSchedd::actOnJobs:1:Can't insert constraint into ClassAd\n"
                                  "Couldn't find/remove all jobs matching constraint ((()\n"))
    assert "Can't insert constraint" in str(e.value)
    with pytest.raises(ScheddError):
        interpret_act(done(2, "", "Error: unknown option\n"))
    # one line per job id: a message about thousands of jobs names a few and counts the rest
    out = "".join(f"Job 5.{p} marked for removal\n" for p in range(2000))
    r = interpret_act(done(0, out))
    assert r.ok and r.matched and r.message.startswith("Job 5.0 marked for removal; Job 5.1")
    assert r.message.endswith("and 1997 more lines") and len(r.message) < 200


def test_get_schedd_by_backend(monkeypatch):
    monkeypatch.delenv("CONDOR_BACKEND", raising=False)
    assert isinstance(get_schedd(), CliSchedd)
    monkeypatch.setenv("CONDOR_BACKEND", "bindings")
    from workers.htcondor.bindings import BindingsSchedd
    assert isinstance(get_schedd(), BindingsSchedd)
    monkeypatch.setenv("CONDOR_BACKEND", "slurm")
    from htdask.settings import SettingsError
    with pytest.raises(SettingsError, match="^CONDOR_BACKEND='slurm' must be 'cli' or 'bindings'"):
        get_schedd()


def test_schedd_name():
    assert CliSchedd("local").name is None and CliSchedd(None).name is None
    assert CliSchedd("schedd01.example.org").name == "schedd01.example.org"
    with pytest.raises(ValidationError):
        CliSchedd("bad name")


def test_program_not_found(monkeypatch, tmp_path):
    monkeypatch.setenv("CONDOR_BIN_DIR", str(tmp_path))
    with pytest.raises(ScheddError, match="condor_q not found in CONDOR_BIN_DIR"):
        CliSchedd().query()
    monkeypatch.delenv("CONDOR_BIN_DIR")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ScheddError, match="not found on PATH"):
        CliSchedd().query()


def test_act_needs_exactly_one_selection():
    s = CliSchedd()
    with pytest.raises(ValidationError):
        s.remove()
    with pytest.raises(ValidationError):
        s.remove(ids=["1.0"], constraint="true")
    with pytest.raises(ValidationError):
        s.remove(ids="1.0")
    with pytest.raises(ValidationError):
        s.hold(ids=["1.0; rm -rf /"])
    with pytest.raises(ValidationError):
        s.remove(constraint="true\n")
    with pytest.raises(ValidationError):
        s.release(ids=["1.0"], reason="bad\nreason")
