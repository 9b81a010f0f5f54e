"""Quotas per owner, below the stack: the quota file (parsing, merging, re-reading), the settings that stop
a process at start, and the record script's check against a real redis-server from many processes.

The stack-level proofs (CLI, Celery, the pool) are in tests/test_quota.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from htdask.settings import SettingsError, build
from htdask.settings.quota import QuotaSettings, merge, parse_quota_text, quota_file, unix_groups

REPO = Path(__file__).resolve().parents[1]
SITE = {"clusters": 2, "workers": 10, "cores": 20, "memory": 4096, "gpus": 0}


def test_the_quota_file_parses_owners_and_groups_with_memory_units():
    qf = parse_quota_text("owners:\n  alice: {workers: 200, memory: 8GiB}\n  bob: {clusters: 1}\n"
                          "groups:\n  cms: {gpus: 4, cores: 0}\n")
    assert qf.owners["alice"].values() == {"workers": 200, "memory": 8192}
    assert qf.owners["bob"].values() == {"clusters": 1}
    assert qf.groups["cms"].values() == {"gpus": 4, "cores": 0}
    assert parse_quota_text("") == parse_quota_text("owners:\ngroups:\n")  # empty sections are no entries
    assert parse_quota_text('{"owners": {"a": {"workers": 3}}}').owners["a"].workers == 3  # JSON is YAML


@pytest.mark.parametrize("text,needle", [
    ("owners: [alice]", "owners: Input should be a valid dictionary"),
    ("owners:\n  alice: {cpus: 4}", "owners.alice.cpus: Extra inputs are not permitted"),
    ("owners:\n  alice: {workers: -1}", "owners.alice.workers: Input should be greater than or equal to 0"),
    ("owners:\n  alice: {memory: lots}", "owners.alice.memory"),
    ("owners:\n  alice: {memory: -5}", "owners.alice.memory"),
    ("users: {}", "users: Extra inputs are not permitted"),
    ("- a\n- b", "must be a mapping"),
    ("owners: {alice: [", "is not YAML"),
])
def test_a_bad_quota_file_is_one_line_naming_the_file_and_the_entry(text, needle):
    with pytest.raises(ValueError) as err:
        parse_quota_text(text, "/etc/htdask/quota.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("/etc/htdask/quota.yaml") and needle in message, message


def test_merge_owner_entry_wins_then_the_most_generous_group_then_the_site():
    groups = [{"workers": 30, "gpus": 2}, {"workers": 50}, {"cores": 0}]
    assert merge(SITE, None, groups) == {"clusters": 2, "workers": 50, "cores": 0, "memory": 4096, "gpus": 2}
    assert merge(SITE, {"workers": 5, "clusters": 0}, groups)["workers"] == 5  # lower than its groups: still its own
    assert merge(SITE, {"workers": 5, "clusters": 0}, groups)["clusters"] == 0  # 0: unlimited
    assert merge(SITE, None, [{"workers": 30}, {"workers": 0}])["workers"] == 0  # unlimited is most generous
    assert merge(SITE, None, []) == SITE


def test_an_owners_limits_come_from_its_unix_groups_and_its_own_entry(tmp_path):
    assert "root" in unix_groups("root") and unix_groups("no-such-user-xq") == []
    f = tmp_path / "quota.yaml"
    f.write_text("groups:\n  root: {workers: 7}\nowners:\n  daemon: {cores: 3}\n")
    q = QuotaSettings(QUOTA_MAX_WORKERS=4, QUOTA_MAX_MEMORY="1GiB", QUOTA_FILE=str(f))
    assert q.limits_for("root") == {"clusters": 0, "workers": 7, "cores": 0, "memory": 1024, "gpus": 0}
    assert q.limits_for("daemon") == {"clusters": 0, "workers": 4, "cores": 3, "memory": 1024, "gpus": 0}
    assert q.limits_for("-") == {"clusters": 0, "workers": 4, "cores": 0, "memory": 1024, "gpus": 0}


def test_an_edited_quota_file_is_read_again_and_a_broken_one_refuses(tmp_path):
    f = tmp_path / "quota.yaml"
    f.write_text("owners:\n  alice: {workers: 7}\n")
    q = QuotaSettings(QUOTA_FILE=str(f))
    assert q.limits_for("alice")["workers"] == 7
    f.write_text("owners:\n  alice: {workers: 3}\n")  # a new size: seen at once
    assert q.limits_for("alice")["workers"] == 3
    assert quota_file(str(f)).owners["alice"].workers == 3
    f.write_text("owners:\n  alice: {workerz: 3}\n")
    with pytest.raises(ValueError, match="workerz"):
        q.limits_for("alice")


@pytest.mark.parametrize("env,needle", [
    ({"QUOTA_MAX_WORKERS": "-1"}, "QUOTA_MAX_WORKERS='-1' must be at least 0"),
    ({"QUOTA_MAX_MEMORY": "plenty"}, "QUOTA_MAX_MEMORY='plenty': is not a memory size: give bytes or a number "
                                      "with a unit, e.g. 64GiB"),  # a valid example
    ({"QUOTA_MODE": "maybe"}, "QUOTA_MODE='maybe' must be 'refuse' or 'grant'"),
    ({"QUOTA_FILE": "/nonexistent/quota.yaml"}, "QUOTA_FILE='/nonexistent/quota.yaml': cannot read"),
])
def test_a_bad_quota_setting_is_one_line_naming_it(monkeypatch, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as err:
        build()
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_bad_quota_file_stops_the_cli_at_start_with_one_line(tmp_path):
    f = tmp_path / "quota.yaml"
    f.write_text("owners:\n  alice: {workers: many}\n")
    env = {**os.environ, "QUOTA_FILE": str(f), "REDIS_URL": "redis://127.0.0.1:1/0"}
    out = subprocess.run([sys.executable, str(REPO / "cli.py"), "status"], env=env, capture_output=True,
                         text=True, cwd=str(REPO), timeout=60)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: QUOTA_FILE='{f}'") and "owners.alice.workers" in lines[0]


# --- the record script, against a real redis-server --------------------------------------------------

HAMMER = r"""
import json, os, random, sys
from htdask.state import Store, connect
from htdask.state.quota import QuotaExceeded, quota_arg
owner, seed, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
store = Store(connect(os.environ["REDIS_URL"]))
limits = {"clusters": 3, "workers": 12, "cores": 20, "memory": 0, "gpus": 0}
rnd = random.Random(seed)
done = refused = cut = 0
for i in range(150):
    cluster = f"{owner}-{rnd.randrange(5)}"
    n, cores = rnd.randint(0, 8), rnd.choice([1, 2, 4])
    try:
        rec = store.record_scale_request(cluster, n, schedd="local", keep_schedd=True, owner=owner,
                                         options={"nthreads": cores},
                                         quota=lambda o: quota_arg(o, limits, (cores, 1024, 0), mode))
        done += 1
        cut += rec.granted < n
    except QuotaExceeded:
        refused += 1
print(json.dumps({"done": done, "refused": refused, "cut": cut}))
"""


@pytest.fixture
def script_env(redis_server):
    env = {**os.environ, "REDIS_URL": redis_server.url, "PYTHONPATH": str(REPO)}
    for k in [k for k in env if k.startswith("QUOTA_")]:
        del env[k]
    return env


def test_many_processes_recording_at_once_never_pass_an_owners_limits_together(script_env, redis_server):
    """8 processes, two owners (one refusing, one granting up to the limit), 1,200 requests with random
    counts and per-worker cores: the recorded state never passes 3 clusters, 12 workers, 20 cores."""
    procs = [subprocess.Popen([sys.executable, "-c", HAMMER, owner, str(seed), mode], env=script_env,
                              stdout=subprocess.PIPE, text=True, cwd=str(REPO))
             for seed, (owner, mode) in enumerate([("ann", "refuse"), ("bea", "grant")] * 4)]
    results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(r["refused"] for r in results) > 0 and sum(r["cut"] for r in results) > 0  # limits were hit
    from htdask.state import Store, connect
    store = Store(connect(redis_server.url))
    records = store.get_many(store.cluster_names())
    use = store.quota_use()
    for owner in ("ann", "bea"):
        mine = [r for r in records.values() if r.owner == owner]
        assert 0 < len(mine) <= 3
        assert sum(r.desired for r in mine) <= 12
        assert sum(r.desired * r.options["nthreads"] for r in mine) <= 20
        assert use[owner]["workers"] == sum(r.desired for r in mine)  # the counters match the records
        assert use[owner]["cores"] == sum(r.desired * r.options["nthreads"] for r in mine)


def test_a_lowered_quota_stops_growth_but_keeps_what_a_cluster_has(redis_server):
    from htdask.state import Store, connect
    from htdask.state.quota import QuotaExceeded, quota_arg
    store = Store(connect(redis_server.url))

    def rec(n, workers, mode="refuse", cluster="c1"):
        return store.record_scale_request(cluster, n, schedd="local", keep_schedd=True, owner="cat", options={},
                                          quota=lambda o: quota_arg(o, {"workers": workers}, (1, 1024, 0), mode))
    assert rec(5, 10).granted == 5
    assert rec(5, 2).granted == 5  # the same count under a lowered quota: kept
    with pytest.raises(QuotaExceeded, match="workers quota of owner cat is 2: 0 in use by its other clusters"):
        rec(6, 2)
    assert store.get("c1").desired == 5  # refused: nothing written
    got = rec(6, 2, "grant")
    assert got.granted == 5 and "5 of the 6 workers asked fit" in got.note  # granted: no growth, nothing cut
    assert store.get("c1").quota_note == got.note
    assert rec(3, 2).granted == 3 and store.get("c1").quota_note is None  # a scale-down always passes
    with pytest.raises(QuotaExceeded, match="0 of the 1 workers asked fit"):
        rec(1, 2, cluster="c2")  # the owner is over its quota: no other cluster grows
    store.record_new_request("c1", 0, schedd="local")  # a delete's desired 0 releases the workers at once
    assert store.quota_use()["cat"]["workers"] == 0
    assert rec(2, 2, cluster="c2").granted == 2
    assert store.delete_cluster("c1") and set(store.quota_use()["cat"]["members"]) == {"c2"}


def test_the_gateways_named_workers_are_refused_or_cut_down_keeping_the_names_it_has(redis_server, monkeypatch):
    """The gateway's controller (named workers): a refusal raises to the worker start (dask-gateway reports it),
    a grant keeps the names already wanted and adds new ones in order up to the quota."""
    import asyncio

    from htdask.gateway.controller import Controller
    from htdask.settings import load
    from htdask.state.quota import QuotaExceeded
    for k in [k for k in os.environ if k.startswith("QUOTA_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("QUOTA_MAX_WORKERS", "3")
    controller = Controller.connect(redis_server.url, "local", 5.0, load())
    opts = {"scheduler_address": "tcp://127.0.0.1:8786"}

    def scale(names):
        return asyncio.run(controller.scale("gw1", len(names), owner=None, options=opts, names=names))
    assert scale(["w-b", "w-c"]).granted == 2
    with pytest.raises(QuotaExceeded, match="refused: workers quota of owner - is 3"):
        scale(["w-a", "w-b", "w-c", "w-d"])
    assert controller.store.get("gw1").names == {"w-b", "w-c"}
    monkeypatch.setenv("QUOTA_MODE", "grant")
    got = scale(["w-a", "w-b", "w-c", "w-d"])
    assert got.granted == 3 and "3 of the 4 workers asked fit" in got.note
    record = controller.store.get("gw1")
    assert record.names == {"w-b", "w-c", "w-a"} and record.desired == 3  # kept b, c; then a, the first new one
