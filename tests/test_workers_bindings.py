"""workers.htcondor.bindings: what can be tested without a schedd daemon.

There is no condor_schedd here (htcondor2.Schedd() raises "Unable to locate local daemon."), so
these tests cover the translation into htcondor2.Submit, ad conversion, act results, and that
the missing daemon is reported as a clear ScheddError.
"""
from __future__ import annotations


import classad2
import htcondor2
import pytest

from workers import runas
from workers.htcondor.bindings import BindingsSchedd, act_result, ad_to_dict, to_submit
from htdask.domain.jobspec import WorkerJobSpec, worker_submit_description
from workers.htcondor.queue_parser import parse_ads_text
from workers.htcondor import get_schedd
from workers.htcondor.schedd import ScheddError
from htdask.domain.submitdesc import SubmitDescription


def worker_desc():
    spec = WorkerJobSpec(cluster="demo", owner="alice", scheduler_address="tcp://10.0.0.1:8786",
                         worker_command=["/opt/venv/bin/python", "-m", "distributed.cli.dask_worker"],
                         environment={"NOTE": "it's \"fine\""}, extra_submit={"+ProjectName": '"phys"'})
    return worker_submit_description(spec, [(5, "demo-5"), (6, "demo-6")])


def test_submit_translation_round_trip():
    desc = worker_desc()
    sub = to_submit(desc)
    assert isinstance(sub, htcondor2.Submit)
    assert dict(sub) == desc.commands()
    assert list(sub.itemdata()) == [{"DaskWorkerIndex": "5", "DaskWorkerName": "demo-5"},
                                    {"DaskWorkerIndex": "6", "DaskWorkerName": "demo-6"}]
    text = str(sub)
    # str(Submit) shows the commands in order and the queue line (it leaves inline items out)
    assert text.startswith("".join(f"{k} = {v}\n" for k, v in desc.items()))
    assert "queue DaskWorkerIndex,DaskWorkerName from (" in text
    # and parsing our rendering gives the same Submit
    again = htcondor2.Submit(desc.render())
    assert dict(again) == dict(sub) and list(again.itemdata()) == list(sub.itemdata())


def test_submit_translation_count():
    desc = SubmitDescription({"executable": "/bin/sleep", "arguments": '"300"', "+Foo": '"x"'}).queue(3)
    sub = to_submit(desc)
    assert str(sub) == 'executable = /bin/sleep\narguments = "300"\nMY.Foo = "x"\nqueue 3\n'
    assert sub.getQArgs() == "3"
    one = to_submit(SubmitDescription({"executable": "/bin/true"}))
    assert str(one) == "executable = /bin/true\nqueue\n"


def test_missing_daemon_is_a_clear_schedd_error(monkeypatch):
    monkeypatch.setenv("CONDOR_BACKEND", "bindings")
    schedd = get_schedd()
    with pytest.raises(ScheddError) as e:
        list(schedd.query("true"))
    msg = str(e.value)
    assert "cannot reach the local schedd through htcondor2" in msg
    assert "Unable to locate local daemon" in msg and "\n" not in msg
    with pytest.raises(ScheddError):
        schedd.submit(worker_desc())
    with pytest.raises(ScheddError):
        schedd.remove(constraint="true")
    with pytest.raises(ScheddError):
        list(schedd.history())


def test_ad_conversion_matches_condor_q_json():
    ad = classad2.ClassAd({"ClusterId": 4, "ProcId": 0, "Owner": "alice", "L": [1, 2], "N": None})
    ad["Requirements"] = classad2.ExprTree("TARGET.Memory > 100")
    d = ad_to_dict(ad)
    assert d == parse_ads_text("[\n" + ad.printJson() + "\n]\n")[0]
    assert d["Requirements"] == "/Expr(TARGET.Memory > 100)/" and d["N"] is None


def test_act_result():
    ok = classad2.ClassAd({"TotalSuccess": 2, "TotalNotFound": 0, "TotalError": 0,
                           "TotalPermissionDenied": 0, "TotalBadStatus": 0, "TotalAlreadyDone": 0})
    r = act_result("remove", ok)
    assert r.ok and r.matched and "2 succeeded" in r.message
    none = classad2.ClassAd({"TotalSuccess": 0, "TotalNotFound": 3})
    assert act_result("remove", none).ok and not act_result("remove", none).matched
    denied = classad2.ClassAd({"TotalSuccess": 0, "TotalPermissionDenied": 1})
    with pytest.raises(ScheddError, match="1 permission denied"):
        act_result("hold", denied)


def test_other_user_refused_in_process(tmp_path, unix_user):
    schedd = BindingsSchedd()
    with pytest.raises(runas.UserRefused):
        schedd.submit(worker_desc(), user="root")
    # an account this test created (another test's may vanish meanwhile)
    with pytest.raises(runas.UserRefused, match="cannot act as another user"):
        schedd.remove(constraint="true", user=unix_user.pw_name)
