"""Redis Sentinel: the whole controller on one master, one replica and three sentinels (Debian's
redis-server and redis-sentinel on free loopback ports), and the master SIGKILLed during a burst.

A client process sends scale requests for 20 clusters through `tasks.api.enqueue_scale`, retrying a
request that failed (as a user re-runs a command that printed an error); every request it was told was
taken is printed. The master is SIGKILLed part-way through. After the failover every cluster must have
exactly its last taken request's count of jobs in the pool's own condor_q, no worker name twice, and its
record must hold that request (no taken request lost).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from htdask.demo import services
from harness.sentinel import SentinelSet
from htdask.demo.services import REPO, Stack
from htdask.state import Store, connect, connection
from tests.conftest import queue_of

# on the stack test only: the others need no server and run in the unit tier
needs_sentinel = pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-sentinel")),
                                    reason="redis-server / redis-sentinel not installed (apt-get install redis-sentinel)")

CLUSTERS = [f"fo{i:02d}" for i in range(20)]
ROUNDS = 5
KILL_AFTER = 30  # taken requests before the master is killed

# The client: ROUNDS rounds of one request per cluster (random counts 0..6, the last round >= 1), each
# retried until taken; prints {"cluster", "n", "seq"} per taken request.
CLIENT = f"""
import json, random, sys, time
from htdask.state import Store, connect
from tasks.api import enqueue_scale
random.seed(18)
store = Store(connect())
for rnd in range({ROUNDS}):
    for cluster in {CLUSTERS!r}:
        n = random.randint(1 if rnd == {ROUNDS} - 1 else 0, 6)
        deadline = time.monotonic() + 60
        while True:
            try:
                got = enqueue_scale(store, cluster, n)
                break
            except Exception as exc:  # Redis or the broker away during the failover: try again
                if time.monotonic() > deadline:
                    raise
                print(json.dumps({{"retry": type(exc).__name__}}), flush=True)
                time.sleep(0.2)
        print(json.dumps({{"cluster": cluster, "n": n, "seq": got.seq}}), flush=True)
"""


def _alive_jobs(stack, cluster):
    jobs = queue_of(stack, cluster)
    return [j for j in jobs if j["JobStatus"] in (1, 2, 5)], jobs


def _exact(stack, last: dict[str, int]) -> list[str]:
    """Clusters whose live job count differs from their last taken request."""
    return [c for c, n in last.items() if len(_alive_jobs(stack, c)[0]) != n]


@pytest.mark.stack
@needs_sentinel
def test_master_sigkilled_during_a_burst_of_scale_requests(service_user, monkeypatch):
    sentinels = SentinelSet(password=secrets.token_hex(8))
    with Stack(redis=sentinels, beat=True, DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=services.FAKE_WORKER,
               DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786", SCHEDD_MIN_INTERVAL="0", POLL_INTERVAL="2") as stack:
        assert stack.env["REDIS_URL"].startswith("sentinel://")
        monkeypatch.setenv("REDIS_SENTINEL_MASTER", sentinels.master_name)  # not the default: the setting works
        client = subprocess.Popen([sys.executable, "-c", CLIENT], env=stack.env, cwd=str(REPO),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        last: dict[str, int] = {}
        last_seq: dict[str, int] = {}
        retries = taken = 0
        killed_at = old_port = None
        failover_s: list[float] = []
        for line in client.stdout:
            doc = json.loads(line)
            if "retry" in doc:
                retries += 1
                continue
            last[doc["cluster"]], last_seq[doc["cluster"]] = doc["n"], doc["seq"]
            taken += 1
            if taken == KILL_AFTER:
                old_port = sentinels.kill_master()
                killed_at = time.monotonic()
                failover = threading.Thread(target=lambda: failover_s.append(sentinels.wait_failover(old_port)))
                failover.start()
        assert client.wait(60) == 0, client.stderr.read()[-3000:]
        assert killed_at is not None and taken == ROUNDS * len(CLUSTERS)
        failover.join(60)
        deadline = time.monotonic() + 75
        while (wrong := _exact(stack, last)) and time.monotonic() < deadline:
            time.sleep(1)
        recovery = time.monotonic() - killed_at
        print(f"sentinel failover: {failover_s[0]:.1f}s after the SIGKILL; every cluster at its last desired count "
              f"{recovery:.1f}s after it ({taken} requests taken, {retries} client retries)")
        assert not wrong, f"clusters not at their last desired count: {wrong}\n{stack.logs()}"
        # beat (its polls reconcile what a failover lost) runs on a list of sentinels: it died at start once
        beats = [p for p in stack.others if p.name == "beat"]
        assert beats and all(p.popen.poll() is None for p in beats), stack.logs()
        store = Store(connect(stack.env["REDIS_URL"]))
        for cluster, n in last.items():
            alive, jobs = _alive_jobs(stack, cluster)
            names = [j["DaskWorkerName"] for j in jobs]
            assert len(names) == len(set(names)), (cluster, Counter(names).most_common(3))
            record = store.get(cluster)
            assert (record.desired, record.seq) == (n, last_seq[cluster]), (cluster, record)


# ---- the settings: one URL, parsed in one place ----------------------------------------------------------
def test_plain_url_is_left_as_it_was():
    target = connection.parse("redis://:pw@127.0.0.1:6379/3", env={})
    assert not target.is_sentinel and target.db == 3 and target.password == "pw"
    assert target.celery_url() == "redis://:pw@127.0.0.1:6379/3" and target.transport_options() == {}


def test_sentinel_url_gives_kombu_and_celery_their_options():
    env = {"REDIS_SENTINEL_MASTER": "site", "REDIS_PASSWORD": "p@ss", "REDIS_SENTINEL_PASSWORD": "sp"}
    target = connection.parse("sentinel://h1:26379;sentinel://h2/2", env=env)
    assert target.sentinels == (("h1", 26379), ("h2", 26379)) and target.db == 2
    assert target.master_name == "site" and target.password == "p@ss"
    assert target.celery_url() == "sentinel://:p%40ss@h1:26379;sentinel://:p%40ss@h2/2"
    assert target.transport_options() == {"master_name": "site", "sentinel_kwargs": {"password": "sp"}}
    from celery import Celery
    app = Celery("t")
    app.conf.broker_transport_options = {"visibility_timeout": 7}
    connection.configure_celery(app, "sentinel://h1:26379/0")
    assert app.conf.broker_url == "sentinel://h1:26379/0" == app.conf.result_backend
    assert app.conf.broker_transport_options == {"visibility_timeout": 7, "master_name": "mymaster"}
    assert app.conf.result_backend_transport_options["master_name"] == "mymaster"


@pytest.mark.parametrize("url, env, setting", [
    ("localhost:6379", {}, "REDIS_URL"),
    ("http://h:1/0", {}, "REDIS_URL"),
    ("sentinel://h1:26379;redis://h2:6379/0", {}, "REDIS_URL"),
    ("redis://h1:6379;redis://h2:6379", {}, "REDIS_URL"),
    ("sentinel://h1:notaport/0", {}, "REDIS_URL"),
    ("sentinel://:26379/0", {}, "REDIS_URL"),
    ("redis://h1:6379/zero", {}, "REDIS_URL"),
    ("redis://127.0.0.1:notaport/0", {}, "REDIS_URL"),  # every scheme's port, not only sentinel://'s
    ("rediss://:pw@h1:99999/0", {}, "REDIS_URL"),
    ("redis://h1:0/0", {}, "REDIS_URL"),
    ("rediss://h1:6379/x", {}, "REDIS_URL"),
    ("sentinel://h1:26379/0", {"REDIS_SENTINEL_MASTER": " "}, "REDIS_SENTINEL_MASTER"),
    ("redis://:a@h1:6379/0", {"REDIS_PASSWORD": "b"}, "REDIS_PASSWORD"),
])
def test_an_unusable_setting_is_named(url, env, setting):
    with pytest.raises(connection.RedisSettingError) as e:
        connection.parse(url, env=env)
    assert str(e.value).startswith(setting) and "\n" not in str(e.value)


def test_redact_hides_every_password():
    assert connection.redact("sentinel://:a@h1:1;sentinel://:b@h2:2/0") == "sentinel://***@h1:1;sentinel://***@h2:2/0"


GATEWAY_SERVER = Path(sys.executable).parent / "dask-gateway-server"


@pytest.mark.parametrize("argv", [
    [sys.executable, "cli.py", "status"],
    [sys.executable, "-m", "celery", "-A", "tasks", "worker"],
    [sys.executable, "cli.py", "operator", "--instance", "x", "--api-url", "http://gw:8000/api"],
    [str(GATEWAY_SERVER), "-f", "htdask/gateway/config.py"],
], ids=["cli", "celery-worker", "operator", "gateway"])
def test_a_bad_redis_setting_stops_the_process_at_start_with_one_line(argv):
    if not Path(argv[0]).exists():
        pytest.skip(f"{argv[0]} is not installed")
    env = {**os.environ, "REDIS_URL": "sentinel://h1:26379;redis://h2/0", "PYTHONPATH": str(REPO),
           "GATEWAY_ALLOW_ANY_PASSWORD": "1"}
    out = subprocess.run(argv, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    # the gateway logs its start before it reads its config file
    lines = [ln for ln in out.stderr.strip().splitlines() if "Starting dask-gateway-server" not in ln]
    assert len(lines) == 1 and "REDIS_URL" in lines[0] and "sentinel://" in lines[0], out.stderr
