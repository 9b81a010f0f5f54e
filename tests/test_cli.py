"""The `htdask` command line as a user meets it: help, parse errors, option merging, managed clusters,
output (durations, columns, --json everywhere), `status --watch`, `poll` of a queue nobody consumes.

Real processes against a real redis-server; no Celery worker runs here (tasks only wait on their queue).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from htdask.demo.services import REPO, base_env
from htdask.base import duration
from htdask.state import Store, connect
from htdask.state.managed import set_manager

COMMANDS = ["scale", "delete", "status", "jobs", "logs", "poll", "demo", "operator"]


@pytest.fixture
def env(tmp_path, redis_server):
    e = base_env(tmp_path, redis_server.url)
    for k in ("DASK_SCHEDULER_ADDRESS", "DEFAULT_OWNER", "SCHEDDS"):
        e.pop(k, None)
    return e


def cli(env, *args, timeout=60):
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(res, code: int) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize("seconds,text", [(None, "-"), (0, "0s"), (42.4, "42s"), (192, "3m12s"), (3600, "1h"),
                                          (18180, "5h3m"), (86400, "1d"), (187200, "2d4h"), (-3, "0s")])
def test_human_durations(seconds, text):
    assert duration(seconds) == text


def test_no_arguments_prints_the_help_and_every_help_has_examples():
    res = cli({}, )
    assert res.returncode == 0 and res.stdout.startswith("Usage: htdask") and "Commands:" in res.stdout
    assert "_HTDASK_COMPLETE" in res.stdout
    for command in COMMANDS:
        out = cli({}, command, "--help")
        assert out.returncode == 0, out.stderr
        assert "Examples:\n" in out.stdout and f"htdask {command}" in out.stdout.split("Examples:")[1], command
        if command not in ("demo", "operator"):
            assert "--json" in out.stdout, command


def test_version():
    from htdask import __version__
    res = cli({}, "--version")
    assert res.returncode == 0 and res.stdout.strip() == f"htdask, version {__version__}"


def test_parse_errors_are_one_line_with_did_you_mean(env):
    line = one_error_line(cli(env, "scale", "c", "2", "--sheduler", "x"), 2)
    assert "No such option '--sheduler'" in line and "--scheduler" in line and "Did you mean" in line
    line = one_error_line(cli(env, "scale", "c", "-1"), 2)
    assert "count" in line and "-1" in line
    line = one_error_line(cli(env, "scale", "c", "2", "--memory", "4", "--scheduler", "tcp://h:1"), 2)
    assert "--memory 4" in line and "unit" in line
    assert connect(env["REDIS_URL"]).llen("local") == 0, "nothing enqueued"


def test_later_options_merge_with_recorded_ones_and_json_output(env):
    res = cli(env, "scale", "c1", "2", "--scheduler", "tcp://10.0.0.5:8786", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["cluster"] == "c1" and doc["n"] == 2 and doc["queue"] == "local" and doc["task_id"]
    res = cli(env, "scale", "c1", "3", "--memory", "4GiB", "--json")
    assert res.returncode == 0, res.stderr
    record = Store(connect(env["REDIS_URL"])).get("c1")
    assert record.desired == 3
    assert record.options == {"scheduler_address": "tcp://10.0.0.5:8786", "memory_limit": 4 * 2**30}
    res = cli(env, "delete", "c1", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["cluster"] == "c1"


def test_status_columns_owner_schedd_user_and_json(env):
    store = Store(connect(env["REDIS_URL"]))
    assert cli(env, "scale", "plain", "1", "--scheduler", "tcp://h:1").returncode == 0
    assert cli(env, "scale", "ab" * 16, "2", "--scheduler", "tcp://h:1").returncode == 0
    set_manager(store, "ab" * 16, "gateway", "alice")
    res = cli(env, "status")
    assert res.returncode == 0, res.stderr
    header, *rows = res.stdout.splitlines()
    assert header.split()[:5] == ["CLUSTER", "OWNER", "SCHEDD", "USER", "DESIRED"]
    by_name = {r.split()[0]: r.split() for r in rows}
    assert by_name["ab" * 16][2:5] == ["local", "alice", "2"] and "managed by the gateway" in res.stdout
    assert by_name["plain"][2:5] == ["local", "-", "1"]
    doc = json.loads(cli(env, "status", "--json").stdout)
    assert {c["name"]: c["user"] for c in doc["clusters"]} == {"ab" * 16: "alice", "plain": None}
    doc = json.loads(cli(env, "jobs", "plain", "--json").stdout)
    assert (doc["cluster"], doc["jobs"]) == ("plain", [])


def test_a_cluster_the_gateway_or_operator_manages_is_not_scaled_without_force(env):
    store = Store(connect(env["REDIS_URL"]))
    for name, kind, user in (("gw1", "gateway", "alice"), ("op1", "operator", None)):
        assert cli(env, "scale", name, "2", "--scheduler", "tcp://h:1").returncode == 0
        set_manager(store, name, kind, user)
        before = store.get(name).seq
        line = one_error_line(cli(env, "scale", name, "5"), 2)
        assert f"managed by the {kind}" in line and "--force" in line
        assert store.get(name).desired == 2 and store.get(name).seq == before, "nothing recorded"
        res = cli(env, "scale", name, "5", "--force")
        assert res.returncode == 0, res.stderr
        assert store.get(name).desired == 5


def test_poll_of_a_queue_nobody_consumes_is_one_line(env):
    res = cli(env, "poll", "--schedd", "nobodyhome", "--timeout", "1")
    line = one_error_line(res, 1)
    assert "nobodyhome" in line and "Traceback" not in res.stderr and "Exception ignored" not in res.stderr


def test_status_watch_prints_again_until_interrupted(env):
    assert cli(env, "scale", "w1", "1", "--scheduler", "tcp://h:1").returncode == 0
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "status", "--watch", "--interval", "0.5",
                             "--json"], env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        docs = [json.loads(proc.stdout.readline()) for _ in range(3)]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert [c["name"] for d in docs for c in d["clusters"]] == ["w1"] * 3
    assert docs[0]["time"] < docs[1]["time"] < docs[2]["time"]
    assert proc.returncode == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("url", ["redis://127.0.0.1:notaport/0", "rediss://127.0.0.1:99999/0", "redis://127.0.0.1:6379/x"])
def test_a_redis_url_whose_port_or_db_is_not_a_number_is_one_line_naming_it(url):
    """README: a port or db that is not a number stops the process with one line naming the setting, exit 2
    (for every scheme, not only sentinel://)."""
    import os
    res = cli({**os.environ, "REDIS_URL": url, "PYTHONPATH": str(REPO)}, "status")
    line = one_error_line(res, 2)
    assert line.startswith("error: REDIS_URL") and "not a number" in line and "Traceback" not in res.stderr


def test_a_request_cut_down_by_quota_is_one_note_line(env):
    """QUOTA_MODE=grant: one `note:` line on stderr, not also a timestamped log line of tasks.api."""
    res = cli({**env, "QUOTA_MODE": "grant", "QUOTA_MAX_WORKERS": "2", "DEFAULT_OWNER": "nobody"},
              "scale", "cut1", "5", "--scheduler", "tcp://h:1")
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == ["note: cluster cut1: 2 of 5 workers granted: workers quota of owner nobody "
                                       "is 2: 0 in use by its other clusters, 1 per worker; 2 of the 5 workers asked "
                                       "fit"], res.stderr
