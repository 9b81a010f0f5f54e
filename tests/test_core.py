"""The Celery core end to end: real redis-server, real Celery workers, the local pool's condor_* programs.

Each test counts schedd calls in the pool's calls.log and checks jobs with the pool's own condor_q.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from htdask.demo import services
from htdask.demo.redis_server import RedisServer
from htdask.demo.services import REPO, Stack
from htdask.state import Store, connect, keys
from tests.conftest import live, needs, queue_of, since_start, wait_until
from workers.htcondor.queue_parser import parse_ads_text

FAKE_WORKER = str(services.FAKE_WORKER)


def make_stack(service_user, **env) -> Stack:
    env.setdefault("POLL_INTERVAL", "60")
    env.setdefault("SCHEDD_MIN_INTERVAL", "0")
    env.setdefault("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:8786")  # the fake worker never connects
    return Stack(DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=FAKE_WORKER, **env)


@pytest.fixture
@needs("stack")
def stack(service_user):
    with make_stack(service_user) as s:
        yield s


@pytest.fixture(scope="module")
@needs("stack")
def module_stack(service_user):
    with make_stack(service_user) as s:
        yield s


@pytest.fixture
def shared(module_stack):
    """`module_stack` as this test sees it (tests/conftest.py, since_start): its own calls only."""
    return since_start(module_stack)



def scale(stack: Stack, cluster: str, n: int, *args: str):
    out = stack.cli("scale", cluster, str(n), *args)
    assert out.returncode == 0, out.stderr
    return out


def store_of(stack: Stack) -> Store:
    return Store(connect(stack.redis.url))


def test_scale_up_is_one_submit_with_consecutive_indexes(shared, service_user):
    stack = shared
    scale(stack, "alpha", 5)
    jobs = wait_until(lambda: len(live(stack, "alpha")) == 5 and live(stack, "alpha"), message="5 jobs")
    assert sorted(j["DaskWorkerIndex"] for j in jobs) == [0, 1, 2, 3, 4]
    assert sorted(j["DaskWorkerName"] for j in jobs) == [f"alpha-{i}" for i in range(5)]
    assert {j["Owner"] for j in jobs} == {service_user}
    assert len({j["ClusterId"] for j in jobs}) == 1, "one condor_submit makes one HTCondor cluster"
    time.sleep(1.0)  # let any further (wrong) submit land before counting
    assert len(stack.calls("condor_submit")) == 1
    assert store_of(stack).counter("alpha") == 5
    # The controller read the queue once, before submitting; condor_submit's answer confirms the change
    # (no second condor_q to read it back). The test's own reads project "Owner", the controller's do not.
    reads = [argv for argv in (json.loads(row[2]) for row in stack.calls("condor_q"))
             if 'DaskGatewayCluster == "alpha"' in argv and not any("Owner" in a for a in argv)]
    assert len(reads) == 1, reads


def test_scale_down_removes_surplus_highest_indexes_first(shared):
    stack = shared
    scale(stack, "beta", 5)
    wait_until(lambda: sum(j["JobStatus"] == 2 for j in live(stack, "beta")) == 5, message="5 running")
    scale(stack, "beta", 2)
    jobs = wait_until(lambda: len(live(stack, "beta")) == 2 and live(stack, "beta"), message="2 jobs left")
    assert sorted(j["DaskWorkerIndex"] for j in jobs) == [0, 1]
    assert len(stack.calls("condor_rm")) == 1


def test_a_scale_down_removes_jobs_by_id_never_every_job_of_a_shared_index(shared, service_user):
    """Issue 23 item 1 (its removal part): two live jobs carry worker index 1 (pz-1 twice, as a lease
    holder that stalled past its lease left them). The surplus one is removed by ClusterId.ProcId; the
    running pz-1 stays (removing by DaskWorkerIndex took both)."""
    stack = shared
    scale(stack, "pz", 2)
    running = wait_until(lambda: (lambda j: len(j) == 2 and all(a["JobStatus"] == 2 for a in j) and j)(
        live(stack, "pz")), message="2 running")
    keep = sorted(f"{a['ClusterId']}.{a['ProcId']}" for a in running)
    seeded = subprocess.run([sys.executable, "-m", "htdask_localpool", "seed", "1", "--owner", service_user,
                             "--attr", 'DaskGatewayCluster="pz"', "--attr", "DaskWorkerIndex=1",
                             "--attr", 'DaskWorkerName="pz-1"'], env=stack.env, cwd=str(REPO),
                            capture_output=True, text=True, timeout=60)
    assert seeded.returncode == 0, seeded.stderr
    assert len(live(stack, "pz")) == 3
    scale(stack, "pz", 2)  # a request: the round finds 3 live jobs for 2 wanted
    wait_until(lambda: len(live(stack, "pz")) == 2, message="the surplus job removed")
    time.sleep(1.0)  # let any further (wrong) removal land
    assert sorted(f"{a['ClusterId']}.{a['ProcId']}" for a in live(stack, "pz")) == keep
    [rm] = [json.loads(row[2]) for row in stack.calls("condor_rm")]
    constraint = rm[rm.index("-constraint") + 1]
    assert "ClusterId ==" in constraint and "DaskWorkerIndex" not in constraint, constraint


@pytest.mark.stack
def test_idle_jobs_are_removed_before_running_ones(service_user):
    with make_stack(service_user, LOCALPOOL_SLOTS="2") as stack:
        scale(stack, "gamma", 4)
        wait_until(lambda: Counter(j["JobStatus"] for j in live(stack, "gamma")) == {2: 2, 1: 2},
                   message="2 running + 2 idle")
        running = {j["DaskWorkerIndex"] for j in live(stack, "gamma") if j["JobStatus"] == 2}
        scale(stack, "gamma", 2)
        jobs = wait_until(lambda: len(live(stack, "gamma")) == 2 and live(stack, "gamma"), message="2 left")
        assert {j["DaskWorkerIndex"] for j in jobs} == running


def test_burst_collapses_into_few_schedd_calls(shared):
    stack = shared
    counts = [(i % 7) + (3 if i % 2 else 0) for i in range(49)] + [6]
    # 50 requests from one client within a fraction of a second.
    stack.python("from htdask.state import Store, connect; from tasks import api; store = Store(connect())\n"
                 f"for n in {counts!r}: api.enqueue_scale(store, 'burst', n)")
    wait_until(lambda: len(live(stack, "burst")) == 6, timeout=60, message="the last request's count")
    time.sleep(1.5)
    assert len(live(stack, "burst")) == 6
    changes = len(stack.calls("condor_submit")) + len(stack.calls("condor_rm"))
    assert changes < 25, f"{changes} submit/rm calls for 50 requests"
    names = [j["DaskWorkerName"] for j in live(stack, "burst")]
    assert len(names) == len(set(names))


def test_two_workers_on_one_queue_never_duplicate_a_name(stack):
    stack.start_worker("second")
    for i, n in enumerate([3, 8, 5, 12, 9, 15, 10, 20]):
        stack.cli("scale", "dup", str(n))
        stack.cli("scale", "dup2", str(n))
    for cluster in ("dup", "dup2"):
        wait_until(lambda: len(live(stack, cluster)) == 20, timeout=60, message=f"{cluster} at 20")
        jobs = queue_of(stack, cluster)
        names = [j["DaskWorkerName"] for j in jobs]
        assert len(names) == len(set(names)), Counter(names).most_common(3)
        indexes = [j["DaskWorkerIndex"] for j in jobs]
        assert len(indexes) == len(set(indexes))


def test_delete_leaves_no_job_and_no_state(shared):
    stack = shared
    scale(stack, "delta", 3)
    wait_until(lambda: len(live(stack, "delta")) == 3, message="3 jobs")
    out = stack.cli("delete", "delta", "--wait", "--timeout", "60")
    assert out.returncode == 0, out.stderr
    wait_until(lambda: not queue_of(stack, "delta"), message="queue empty of delta")
    r = connect(stack.redis.url)
    # only the tombstone is left: the delete is final against every older request (issue 12)
    assert [k for k in r.scan_iter(match="*delta*")] == [keys.tombstone("delta")]
    assert "delta" not in r.smembers(keys.clusters())


@pytest.mark.stack
def test_poll_summary_matches_condor_q(service_user):
    with make_stack(service_user, LOCALPOOL_SLOTS="3") as stack:
        scale(stack, "eps", 5)
        wait_until(lambda: Counter(j["JobStatus"] for j in live(stack, "eps")) == {2: 3, 1: 2},
                   message="3 running + 2 idle")
        out = stack.cli("poll")
        assert out.returncode == 0, out.stderr
        status = json.loads(stack.cli("status", "eps", "--json").stdout)["clusters"][0]
        ads = queue_of(stack, "eps")
        by_status = Counter(a["JobStatus"] for a in ads)
        assert (status["idle"], status["running"], status["held"]) == (by_status[1], by_status[2], by_status[5])
        assert status["desired"] == 5 and status["polled_at"] > time.time() - 30
        jobs = json.loads(stack.cli("jobs", "eps", "--json").stdout)["jobs"]
        assert sorted(j["job_id"] for j in jobs) == sorted(f"{a['ClusterId']}.{a['ProcId']}" for a in ads)
        assert {j["state"] for j in jobs} == {"Idle", "Running"}


@pytest.mark.stack
def test_beat_triggers_the_poll(service_user):
    with make_stack(service_user, POLL_INTERVAL="1") as stack:
        stack.others.append(__import__("htdask.demo.services", fromlist=["celery_beat"]).celery_beat(
            stack.env, stack.logdir))
        scale(stack, "zeta", 2)
        wait_until(lambda: len(live(stack, "zeta")) == 2, message="2 jobs")
        before = len(stack.calls("condor_q"))
        row = wait_until(lambda: (store_of(stack).summary("zeta").get("running") == 2
                                  and store_of(stack).summary("zeta")), timeout=30, message="beat poll")
        assert row["polled_at"] > time.time() - 10
        wait_until(lambda: len(stack.calls("condor_q")) >= before + 2, timeout=20, message="repeated polls")


def test_counter_restarts_only_when_cluster_is_empty(shared):
    stack = shared
    store = store_of(stack)
    scale(stack, "eta", 3)
    wait_until(lambda: len(live(stack, "eta")) == 3, message="3 jobs")
    scale(stack, "eta", 1)
    wait_until(lambda: len(live(stack, "eta")) == 1, message="1 job")
    scale(stack, "eta", 2)
    jobs = wait_until(lambda: len(live(stack, "eta")) == 2 and live(stack, "eta"), message="2 jobs")
    assert sorted(j["DaskWorkerIndex"] for j in jobs) == [0, 3], "index 0 still live: the counter went on"
    scale(stack, "eta", 0)
    wait_until(lambda: not queue_of(stack, "eta"), message="no job of eta in the queue")
    scale(stack, "eta", 2)
    jobs = wait_until(lambda: len(live(stack, "eta")) == 2 and live(stack, "eta"), message="2 jobs again")
    assert sorted(j["DaskWorkerIndex"] for j in jobs) == [0, 1], "empty cluster: the counter restarted at 0"
    assert store.counter("eta") == 2


def test_duplicate_and_stale_deliveries_change_nothing(shared):
    stack = shared
    scale(stack, "theta", 3)
    wait_until(lambda: len(live(stack, "theta")) == 3, message="3 jobs")
    store = store_of(stack)
    seq = store.get("theta").seq
    submits = len(stack.calls("condor_submit"))
    # The same request delivered twice more, and an older request (smaller seq) delivered late.
    deliveries = [{"cluster": "theta", "n": 3, "seq": seq}, {"cluster": "theta", "n": 3, "seq": seq},
                  {"cluster": "theta", "n": 9, "seq": seq - 1}]
    stack.python("from tasks.app import app\n"
                 f"for kw in {deliveries!r}: app.send_task('tasks.scale_cluster', kwargs=kw, queue='local')"
                 ".get(timeout=60)")
    assert store.get("theta").desired == 3
    assert len(live(stack, "theta")) == 3
    assert len(stack.calls("condor_submit")) == submits


def test_schedd_option_routes_to_that_queue(stack):
    out = stack.cli("scale", "iota", "2", "--schedd", "other")
    assert out.returncode == 0, out.stderr
    time.sleep(1.5)
    assert live(stack, "iota") == [], "no worker consumes queue 'other': nothing may be submitted"
    r = connect(stack.redis.url)
    assert r.llen("other") == 1
    stack.start_worker("other-node", SCHEDD_NAME="other")
    wait_until(lambda: len(live(stack, "iota")) == 2, message="the other schedd's worker ran the task")
    out = stack.cli("scale", "iota", "3", "--schedd", "local")
    assert out.returncode == 2 and "runs on schedd 'other'" in out.stderr


@pytest.mark.stack
def test_max_idle_per_cluster_caps_queued_jobs(service_user):
    with make_stack(service_user, LOCALPOOL_SLOTS="1", MAX_IDLE_PER_CLUSTER="2") as stack:
        scale(stack, "kappa", 6)
        wait_until(lambda: len(live(stack, "kappa")) >= 2, message="first jobs")
        time.sleep(1.0)
        jobs = live(stack, "kappa")
        assert sum(j["JobStatus"] == 1 for j in jobs) <= 2
        assert len(jobs) < 6


def test_visibility_timeout_is_far_above_the_task_time_limit(shared):
    stack = shared
    from tasks.app import app
    with app.connection_for_write(stack.redis.url) as conn:
        channel = conn.default_channel
        effective = channel.visibility_timeout
    assert effective == app.conf.broker_transport_options["visibility_timeout"]
    assert effective >= 2 * app.conf.task_time_limit
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1


@pytest.fixture(scope="module")
@needs("redis", "pool")
def cli_env(service_user, pool_bin):
    """The stack's environment (same settings, same Redis URL form) on one redis-server for the module and
    without a Celery worker: what the bad-input tests check is that the CLI sends and writes nothing."""
    workdir = Path(tempfile.mkdtemp(prefix="htdask-cli-"))
    redis = RedisServer(workdir / "redis").start()
    try:
        yield services.base_env(workdir, redis.url, pool_bin, DEFAULT_OWNER=service_user,
                                DASK_WORKER_COMMAND=FAKE_WORKER, POLL_INTERVAL="60", SCHEDD_MIN_INTERVAL="0",
                                DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786")
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("args,needle", [
    (["scale", "ok", "-1"], "worker count"),
    (["scale", "ok", "1001"], "worker count"),
    (["scale", "ok", "two"], "worker count"),
    (["scale", "ok", "1.5"], "worker count"),
    (["scale", "Bad_Name", "1"], "cluster name"),
    (["scale", "bad name", "1"], "cluster name"),
    (["scale", 'x"y', "1"], "cluster name"),
    (["scale", "-x", "1"], ""),
    (["scale", "a" * 64, "1"], "cluster name"),
    (["scale", "ok", "1", "--owner", "root"], "root"),
    (["scale", "ok", "1", "--owner", "no-such-user-xyz"], "no-such-user-xyz"),
    (["scale", "ok", "1", "--schedd", "bad queue"], "schedd"),
    (["scale", "ok"], "Missing argument"),
    (["delete", "UPPER"], "cluster name"),
    (["jobs", "x$(y)"], "cluster name"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_enqueued(cli_env, args, needle):
    out = subprocess.run([sys.executable, str(REPO / "cli.py"), *args], env=cli_env, cwd=str(REPO),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert needle in lines[0]
    # no Celery worker consumes the queue here: a task sent would still be in it; and no key was written
    r = connect(cli_env["REDIS_URL"])
    assert r.llen("local") == 0 and not r.exists(keys.seq())
    assert r.dbsize() == 0, sorted(r.scan_iter())


def test_redis_down_is_one_line_exit_1(tmp_path):
    from htdask.demo.services import base_env
    import subprocess
    import sys
    from htdask.demo.procs import free_port
    env = base_env(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    out = subprocess.run([sys.executable, str(REPO / "cli.py"), "status"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1 and "cannot reach Redis" in out.stderr



@pytest.mark.redis
@pytest.mark.parametrize("password", ["wrong-password", ""], ids=["wrong", "missing"])
def test_a_refused_redis_password_is_one_line_naming_the_login_exit_1(tmp_path, password):
    """A first trial's finding: a Redis that refused the password was reported as "cannot reach Redis"; it was
    reached. The line says the login was refused, and never prints a password."""
    from htdask.demo.redis_server import RedisServer
    from htdask.demo.services import base_env
    server = RedisServer(tmp_path / "redis", password="right-password-1234").start()
    try:
        auth = f":{password}@" if password else ""
        env = base_env(tmp_path, f"redis://{auth}127.0.0.1:{server.port}/0")
        env.pop("REDIS_PASSWORD", None)
        out = subprocess.run([sys.executable, str(REPO / "cli.py"), "status"], env=env, capture_output=True,
                             text=True, timeout=60)
    finally:
        server.stop()
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the login" in lines[0] and "cannot reach" not in lines[0], out.stderr
    assert "right-password-1234" not in out.stderr and (not password or password not in out.stderr)

def test_summary_counts_jobs_that_left_the_queue(shared):
    stack = shared
    scale(stack, "lam", 3)
    wait_until(lambda: len(live(stack, "lam")) == 3, message="3 jobs")
    assert stack.cli("poll").returncode == 0
    scale(stack, "lam", 1)
    wait_until(lambda: not [a for a in queue_of(stack, "lam") if a["JobStatus"] != 2], message="2 jobs gone")
    assert stack.cli("poll").returncode == 0
    row = json.loads(stack.cli("status", "lam", "--json").stdout)["clusters"][0]
    assert (row["running"], row["removed"], row["completed"]) == (1, 2, 0)
    history = stack.condor("condor_history", "-json", "-constraint", 'DaskGatewayCluster == "lam"')
    assert len(parse_ads_text(history.stdout)) == 2


def test_named_workers_are_submitted_once_each(shared):
    """Gateway clusters name their workers; a worker whose job ended is replaced by the gateway, not us."""
    stack = shared
    stack.python("from htdask.state import Store, connect; from tasks import api; store = Store(connect())\n"
                 "api.enqueue_scale(store, 'named', 2, names=['w-a', 'w-b'])")
    jobs = wait_until(lambda: len(live(stack, "named")) == 2 and live(stack, "named"), message="2 named jobs")
    assert sorted(j["DaskWorkerName"] for j in jobs) == ["w-a", "w-b"]
    assert sorted(j["DaskWorkerIndex"] for j in jobs) == [0, 1]
    gone = next(j for j in jobs if j["DaskWorkerName"] == "w-a")
    assert stack.condor("condor_rm", f"{gone['ClusterId']}.{gone['ProcId']}").returncode == 0
    wait_until(lambda: len(live(stack, "named")) == 1, message="w-a ended")
    assert stack.cli("poll").returncode == 0  # drift: the poller asks for a reconcile...
    time.sleep(2)
    assert [j["DaskWorkerName"] for j in live(stack, "named")] == ["w-b"]  # ...which resubmits nothing
    stack.python("from htdask.state import Store, connect; from tasks import api; store = Store(connect())\n"
                 "api.enqueue_scale(store, 'named', 2, names=['w-b', 'w-c'])")
    jobs = wait_until(lambda: len(live(stack, "named")) == 2 and live(stack, "named"), message="w-c")
    assert sorted(j["DaskWorkerName"] for j in jobs) == ["w-b", "w-c"]
    assert len(stack.calls("condor_submit")) == 2


@pytest.mark.stack
def test_two_beats_never_double_the_poll(service_user):
    from htdask.demo.services import celery_beat
    with make_stack(service_user, POLL_INTERVAL="1", BEAT_LOCK_TIMEOUT="10") as stack:
        first = celery_beat(stack.env, stack.logdir, name="beat1")
        second = celery_beat(stack.env, stack.logdir, name="beat2")
        stack.others += [first, second]
        # celery-redbeat: the beat holding its Redis lock sends; the other waits for the lock
        wait_until(lambda: "Acquired lock" in second.tail(200) + first.tail(200), message="one beat holds the lock")
        time.sleep(6)
        sent = [p.tail(400).count("Sending due task") for p in (first, second)]
        assert min(sent) == 0 and max(sent) >= 4, sent  # one beat sends every period, the other none
        active = first if sent[0] else second
        standby = second if active is first else first
        assert "Acquired lock" not in standby.tail(400)
        active.kill()  # the active beat dies: the standby takes over once the lock expires
        wait_until(lambda: "Sending due task" in standby.tail(400), timeout=60, message="takeover")
