"""What a new user met in a first trial of the CLI, through the real path: a Celery worker (as root, as
docs/deploy.md runs it) on the local pool, the CLI in an environment of its own.

- the scheduler address the CLI checked (its DASK_SCHEDULER_ADDRESS) is the one recorded, so a worker
  without the variable submits with it;
- `scale --dry-run` shows what the controller would do given the cluster's record and last poll;
- a request that changes a cluster's recorded options says that running workers keep theirs;
- the worker's log has no Celery SecurityWarning about root, and one line saying why it runs as root.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from htdask.demo import services
from htdask.demo.services import REPO, Stack
from htdask.state import Store, connect
from tests.conftest import live, needs, queue_of, wait_until

ADDRESS = "tcp://127.0.0.1:8786"  # the fake worker never connects


@pytest.fixture(scope="module")
@needs("stack")
def stack(service_user):
    # the Celery worker's environment has no DASK_SCHEDULER_ADDRESS (empty counts as unset)
    with Stack(DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=str(services.FAKE_WORKER), POLL_INTERVAL="60",
               SCHEDD_MIN_INTERVAL="0", DASK_SCHEDULER_ADDRESS="") as s:
        yield s


def cli(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], env={**stack.env, **env}, cwd=str(REPO),
                          capture_output=True, text=True, timeout=120)


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, (res.stdout, res.stderr)
    return res


def test_the_scheduler_address_the_cli_checked_is_the_one_the_worker_submits_with(stack):
    # `export DASK_SCHEDULER_ADDRESS=...; htdask scale q1 1` with a worker that lacks the variable
    ok(cli(stack, "scale", "addr1", "1", DASK_SCHEDULER_ADDRESS=ADDRESS))
    wait_until(lambda: len(live(stack, "addr1")) == 1, timeout=90, message="the job of addr1 submitted")
    out = stack.condor("condor_q", "-allusers", "-json", "-constraint", 'DaskGatewayCluster == "addr1"')
    assert ADDRESS in out.stdout, "the job's arguments name the address the CLI checked"
    assert Store(connect(stack.env["REDIS_URL"])).get("addr1").options == {"scheduler_address": ADDRESS}
    # a later request without the variable keeps the recorded address
    ok(cli(stack, "scale", "addr1", "2"))
    assert Store(connect(stack.env["REDIS_URL"])).get("addr1").options == {"scheduler_address": ADDRESS}


def test_dry_run_shows_what_the_controller_would_do_with_the_cluster_as_it_is(stack):
    store = Store(connect(stack.env["REDIS_URL"]))
    ok(cli(stack, "scale", "dry1", "2", "--scheduler", ADDRESS))
    wait_until(lambda: len(live(stack, "dry1")) == 2, timeout=90, message="2 jobs of dry1")
    ok(cli(stack, "poll"))  # the summary the dry run reads
    seq = store.get("dry1").seq
    up = ok(cli(stack, "scale", "dry1", "3", "--dry-run")).stdout
    assert up.splitlines()[0].startswith("# cluster dry1: 2 live jobs at the last poll") and \
        "1 new jobs to submit to reach 3" in up.splitlines()[0], up
    assert "queue DaskWorkerIndex,DaskWorkerName from (\n2,dry1-2\n)" in up, up  # the name the counter gives next
    down = ok(cli(stack, "scale", "dry1", "0", "--dry-run")).stdout
    assert down.splitlines() == [down.splitlines()[0]] and "nothing to submit; would remove 2 jobs" in down, down
    same = ok(cli(stack, "scale", "dry1", "2", "--dry-run")).stdout
    assert "nothing to submit or remove" in same and "queue " not in same, same
    assert store.get("dry1").seq == seq and store.get("dry1").desired == 2, "a dry run records nothing"
    # Redis not reachable: said plainly, and a new cluster's description
    gone = ok(cli(stack, "scale", "dry1", "2", "--scheduler", ADDRESS, "--dry-run", REDIS_URL="redis://127.0.0.1:1/0"))
    first = gone.stdout.splitlines()[0]
    assert first.startswith("# Redis is not reachable") and "NEW cluster dry1 of 2 workers" in first, gone.stdout
    assert "queue DaskWorkerIndex,DaskWorkerName from (\n0,dry1-0\n1,dry1-1\n)" in gone.stdout


def test_a_request_that_changes_recorded_options_says_running_workers_keep_theirs(stack):
    ok(cli(stack, "scale", "opts1", "1", "--scheduler", ADDRESS))
    same = ok(cli(stack, "scale", "opts1", "1", "--scheduler", ADDRESS))
    assert "note:" not in same.stdout + same.stderr, "unchanged options: no note"
    res = ok(cli(stack, "scale", "opts1", "1", "--universe", "docker", "--image", "ghcr.io/dask/dask:latest"))
    notes = [ln for ln in res.stdout.splitlines() if ln.startswith("note:")]
    assert notes == ["note: cluster opts1: options changed (docker_image, universe): workers already submitted "
                     "keep theirs; only new jobs get the new options"], res.stdout
    doc = json.loads(ok(cli(stack, "scale", "opts1", "1", "--memory", "2GiB", "--json")).stdout)
    assert "options changed (memory_limit)" in doc["options_note"]


def test_the_worker_log_says_why_it_runs_as_root_without_celerys_security_warning(stack):
    if os.geteuid() != 0:
        pytest.skip("about a worker running as root")
    text = (stack.logdir / "worker1.log").read_text(errors="replace")
    assert "SecurityWarning" not in text and "superuser privileges" not in text and "--uid" not in text, text[:2000]
    lines = [ln for ln in text.splitlines() if "running as root on purpose" in ln]
    assert len(lines) == 1 and "INFO" in lines[0] and "never as root" in lines[0], text[:2000]
