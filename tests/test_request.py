"""Issue 24 item 2: one typed request (htdask/domain/request.py).

A scale/delete request is checked once where it enters (tasks.api), carried in its task's message as its
JSON and parsed once by the task; its desired state is written once per request (the enqueue's record
script), the task only joins the round.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest

from htdask.domain.request import DeleteRequest, ScaleRequest
from htdask.domain.validation import ValidationError
from htdask.state import Store, connect, keys
from htdask.state.requests import _RECORD_REQUEST
from htdask.state.store import _JOIN_RECORDED, _RECORD_AND_ENQUEUE, _RECORD_AND_JOIN
from tests.conftest import live, wait_until
from tests.test_cli import cli, env, one_error_line  # noqa: F401 (env: the fixture)
from tests.test_core import module_stack, scale, shared  # noqa: F401 (fixtures)

BAD = [
    ({"cluster": "Bad_Name", "n": 1}, "invalid cluster name 'Bad_Name'"),
    ({"cluster": "", "n": 1}, "invalid cluster name '': must not be empty"),
    ({"cluster": "a" * 64, "n": 1}, "invalid cluster name"),
    ({"cluster": 7, "n": 1}, "invalid cluster name 7: must be a string"),
    ({"cluster": "ok", "n": -1}, "invalid worker count -1"),
    ({"cluster": "ok", "n": "-1"}, "invalid worker count '-1'"),
    ({"cluster": "ok", "n": 11}, "invalid worker count 11: exceeds the maximum of 10"),
    ({"cluster": "ok", "n": "3x"}, "invalid worker count '3x'"),
    ({"cluster": "ok", "n": 2.0}, "invalid worker count 2.0"),
    ({"cluster": "ok", "n": True}, "invalid worker count True"),
    ({"cluster": "ok"}, "invalid request field 'n': is missing"),
    ({"cluster": "ok", "n": 1, "extra": 1}, "invalid request field 'extra'"),
    ({"cluster": "ok", "n": 1, "owner": "-x"}, "invalid user name '-x'"),
    ({"cluster": "ok", "n": 1, "options": {"bogus": 1}}, "invalid job option 'bogus'"),
    ({"cluster": "ok", "n": 1, "seq": 0}, "invalid request number 0"),
]


@pytest.mark.parametrize("fields,line", BAD, ids=[str(i) for i in range(len(BAD))])
def test_the_request_model_refuses_bad_values_with_one_line(fields, line):
    with pytest.raises(ValidationError) as e:
        ScaleRequest.build(10, **fields)
    assert str(e.value).startswith(line) and "\n" not in str(e.value)


def test_a_request_round_trips_through_its_message_and_count_strings_become_ints():
    req = ScaleRequest.build(10, cluster="ok", n="3", owner="alice", options={"nthreads": 2}, names=["ok-1"])
    assert req.n == 3 and isinstance(req.n, int)
    message = req.model_copy(update={"seq": 4}).as_message()
    assert set(message) == {"request"} and isinstance(message["request"], str)
    assert ScaleRequest.parse_message(message["request"], {}, 10) == req.model_copy(update={"seq": 4})
    assert ScaleRequest.parse_message(None, {"cluster": "ok", "n": 3, "seq": 4}, 10).seq == 4  # older versions
    assert DeleteRequest.parse_message(DeleteRequest.build(cluster="ok").as_message()["request"], {}).cluster == "ok"


@pytest.mark.parametrize("message", ["{", "[]", '{"cluster": "ok"}', '{"kind": "delete", "cluster": "ok", "n": 1}',
                                     '{"cluster": "ok", "n": 1001}'])
def test_a_malformed_message_is_one_validation_error(message):
    with pytest.raises(ValidationError) as e:
        ScaleRequest.parse_message(message, {}, 1000)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("args,line", [(("Bad_Name", "3"), "invalid cluster name 'Bad_Name'"),
                                       (("ok", "-1"), "invalid worker count '-1'"),
                                       (("ok", "100000"), "exceeds the maximum"),
                                       (("ok", "2", "--schedd", "a b"), "invalid schedd name 'a b'")])
def test_the_cli_refuses_a_bad_request_with_exit_2_and_records_nothing(env, redis_server, args, line):
    res = cli({**env, "DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:8786"}, "scale", *args)
    assert line in one_error_line(res, 2)
    r = connect(redis_server.url)
    assert r.keys("*") == [], "a refused request must leave Redis untouched"


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def test_one_request_runs_one_recording_script_and_the_task_writes_no_desired_state(shared):
    """MONITOR (Redis' own log of every command, those run by scripts included) over one scale request,
    from `htdask scale` until its job is in the queue: the desired state is recorded by one script call."""
    stack = shared
    scale(stack, "warm", 1)  # loads the scripts into Redis (a first EVALSHA fails, then is sent again)
    wait_until(lambda: len(live(stack, "warm")) == 1, message="1 job")
    time.sleep(0.5)
    log = stack.workdir / "monitor.log"
    with open(log, "w") as out:
        mon = subprocess.Popen(["redis-cli", "-u", stack.redis.url, "monitor"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "OK" in log.read_text(), message="MONITOR started")
        scale(stack, "rho", 1)
        wait_until(lambda: len(live(stack, "rho")) == 1, message="1 job")
        time.sleep(1.0)  # the round's last commands
    finally:
        mon.terminate()
        mon.wait(10)
    lines = log.read_text().splitlines()
    evals = [ln for ln in lines if '"EVALSHA"' in ln.upper() or '"EVAL"' in ln.upper()]
    recording = [ln for ln in evals if any(_sha(x) in ln for x in (_RECORD_REQUEST, _RECORD_AND_JOIN,
                                                                     _RECORD_AND_ENQUEUE))]
    assert len(recording) == 1 and _sha(_RECORD_AND_ENQUEUE) in recording[0], recording
    assert not any(_sha(_JOIN_RECORDED) in ln for ln in evals), "joined where it entered: the task does not join"
    desired = [ln for ln in lines if '"desired"' in ln and f'"{keys.cluster("rho")}"' in ln and "HSET" in ln.upper()]
    assert len(desired) == 1, desired


def _send(stack, task: str, kwargs: dict) -> dict:
    out = stack.python("import json\nfrom tasks.app import app\n"
                       f"print(json.dumps(app.send_task({task!r}, kwargs={kwargs!r}, queue='local').get(timeout=60)))")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_malformed_task_message_is_refused_without_side_effects(shared):
    stack = shared
    store = Store(connect(stack.redis.url))
    clusters = store.cluster_names()  # the module's other tests' (a fresh stack has none)
    bad = [("tasks.scale_cluster", {"request": '{"cluster": "Bad_Name", "n": 1, "seq": 5}'}),
           ("tasks.scale_cluster", {"request": "not json"}),
           ("tasks.scale_cluster", {"request": '{"cluster": "sigma", "n": 99999, "seq": 5}'}),
           ("tasks.scale_cluster", {"cluster": "sigma", "n": "1; rm -rf /", "seq": 5}),
           ("tasks.scale_cluster", {"request": '{"cluster": "sigma", "n": 1}', "cluster": "sigma"}),
           ("tasks.delete_cluster", {"request": '{"cluster": "../sigma", "seq": 5}'})]
    for task, kwargs in bad:
        result = _send(stack, task, kwargs)
        assert result["state"] == "refused" and "\n" not in result["error"], (kwargs, result)
    assert store.cluster_names() == clusters and store.get("sigma") is None
    assert not store.has_pending("local") and store.batches_done("local")
    assert stack.calls("condor_submit") == []


def test_a_request_whose_record_was_lost_is_recorded_by_its_task_but_never_after_a_delete(shared):
    """The enqueue's record lost (a failover before a replica held it): the task records its request from
    the message. A message at or below the cluster's tombstone (re-delivered after a delete) does not."""
    stack = shared
    store = Store(connect(stack.redis.url))
    seq = store.next_seq()  # numbered, never recorded
    msg = ScaleRequest.build(cluster="tau", n=1, seq=seq).as_message()
    assert _send(stack, "tasks.scale_cluster", msg)["state"] != "refused"
    assert store.get("tau").desired == 1 and store.get("tau").seq == seq
    wait_until(lambda: len(live(stack, "tau")) == 1, message="1 job")
    out = stack.cli("delete", "tau", "--wait")
    assert out.returncode == 0, out.stderr
    assert store.get("tau") is None and store.tombstone("tau") > seq
    _send(stack, "tasks.scale_cluster", msg)  # re-delivered after the delete
    time.sleep(1.0)
    assert store.get("tau") is None and live(stack, "tau") == []
