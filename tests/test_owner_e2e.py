"""A cluster belongs to a person: e-mail -> Unix user -> jobs owned by that user, end to end.

Real redis-server, real Celery worker, the local pool's condor_* programs (which, like a schedd, let a
non-root user act only on their own jobs and record who removed a job).  Needs root to create users.
"""
from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from htdask.demo.services import REPO, Stack
from htdask.state import connect, keys
from tests.conftest import needs, wait_until
from workers.htcondor.queue_parser import parse_ads_text

FAKE_WORKER = str(REPO / "htdask" / "demo" / "fake_dask_worker")
OWNER = f"htdask-e2e-{os.getpid()}"  # unique: concurrent sessions never share or delete it
EMAIL = "Dana.Owner@Example.org"


@pytest.fixture(scope="module")
@needs("root")
def owner_user():
    """A fresh unprivileged Unix user (uid >= 1000), removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("creating a Unix user needs root (CI runs as root)")
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", OWNER], check=True)
    try:
        assert pwd.getpwnam(OWNER).pw_uid >= 1000
        yield OWNER
    finally:
        subprocess.run(["userdel", OWNER], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def owner_stack(owner_user: str, service_user: str, tmp: Path) -> Stack:
    user_map = tmp / "users.yaml"
    user_map.write_text(f"# e-mail: unix user\n{EMAIL.lower()}: {owner_user}\n"
                        "boss@example.org: root\nsys@example.org: daemon\n")
    env = dict(DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=FAKE_WORKER, USER_MAP_FILE=str(user_map),
               DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786", POLL_INTERVAL="60", SCHEDD_MIN_INTERVAL="0")
    for k in ("CICONNECT_URL", "DENY_USERS", "MIN_SUBMIT_UID"):  # not inherited from the caller
        if os.environ.get(k):
            env[k] = ""
    return Stack(**env)


@pytest.fixture
@needs("stack")
def stack(owner_user, service_user, tmp_path):
    with owner_stack(owner_user, service_user, tmp_path) as s:
        yield s


@pytest.fixture(scope="module")
@needs("stack")
def refusing_stack(owner_user, service_user, tmp_path_factory):
    """One stack for the refusals: each checks that nothing was enqueued, submitted or queued on it, ever."""
    with owner_stack(owner_user, service_user, tmp_path_factory.mktemp("refusals")) as s:
        yield s


def ads(stack: Stack, cluster: str | None = None, history: bool = False) -> list[dict]:
    constraint = f'DaskGatewayCluster == "{cluster}"' if cluster else "true"
    if history:
        out = stack.condor("condor_history", "-json", "-constraint", constraint)
    else:
        out = stack.condor("condor_q", "-allusers", "-json", "-constraint", constraint)
    assert out.returncode == 0, out.stderr
    return parse_ads_text(out.stdout)


def live(stack: Stack, cluster: str) -> list[dict]:
    return [a for a in ads(stack, cluster) if a["JobStatus"] in (1, 2, 5)]


@pytest.mark.parametrize("args,needle", [
    (["--owner", "root"], "'root'"),
    (["--owner", "daemon"], "'daemon'"),
    (["--email", "boss@example.org"], "'root'"),
    (["--email", "sys@example.org"], "'daemon'"),
])
def test_root_and_system_users_are_refused(refusing_stack, args, needle):
    stack = refusing_stack
    out = stack.cli("scale", "c1", "2", *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], out.stderr
    r = connect(stack.redis.url)
    assert r.llen("local") == 0 and not r.exists(keys.seq()), "nothing enqueued"
    assert stack.calls("condor_submit") == [], "nothing submitted"
    assert ads(stack) == []


def test_scale_by_email_submits_and_removes_as_that_user(stack, owner_user, service_user):
    out = stack.cli("scale", "c1", "2", "--email", EMAIL)
    assert out.returncode == 0, out.stderr
    jobs = wait_until(lambda: len(live(stack, "c1")) == 2 and live(stack, "c1"), message="2 jobs of c1")
    assert {j["Owner"] for j in jobs} == {owner_user}, "condor_q shows the e-mail's Unix user as Owner"
    assert {j.get("DaskClusterOwner") for j in jobs} == {owner_user}
    assert connect(stack.redis.url).hget(keys.cluster("c1"), "owner") == owner_user

    # Jobs the controller must never touch: another cluster of the same user, and a job of the same
    # user without our marker.
    for attrs in (["--attr", 'DaskGatewayCluster="c2"', "--attr", "DaskWorkerIndex=0"], []):
        seeded = subprocess.run([sys.executable, "-m", "htdask_localpool", "seed", "1", "--owner", owner_user, *attrs],
                                env=stack.env, cwd=str(REPO), capture_output=True, text=True, timeout=60)
        assert seeded.returncode == 0, seeded.stderr
    others = [a for a in ads(stack) if a.get("DaskGatewayCluster") != "c1"]
    assert len(others) == 2

    assert stack.cli("scale", "c1", "1", "--email", EMAIL).returncode == 0
    wait_until(lambda: len(live(stack, "c1")) == 1, message="c1 down to 1")
    out = stack.cli("delete", "c1", "--wait", "--timeout", "60")
    assert out.returncode == 0, out.stderr
    wait_until(lambda: not live(stack, "c1"), message="c1 gone")

    # Nothing else was touched.
    after = {(a["ClusterId"], a["ProcId"]): a["JobStatus"] for a in ads(stack)
             if a.get("DaskGatewayCluster") != "c1"}
    assert after == {(a["ClusterId"], a["ProcId"]): a["JobStatus"] for a in others}

    # Every condor_rm the controller issued is limited to the marker attribute and this cluster's name.
    rms = [json.loads(row[2]) for row in stack.calls("condor_rm")]
    assert len(rms) >= 2
    for argv in rms:
        assert "-constraint" in argv, argv
        constraint = argv[argv.index("-constraint") + 1]
        assert 'DaskGatewayCluster == "c1"' in constraint, argv
        assert not any(a in ("-all", "-a") or a == owner_user for a in argv), argv

    # The removes ran as the owner (the pool records who removed a job), not as root or the default.
    removed = [a for a in ads(stack, "c1") + ads(stack, "c1", history=True) if a["JobStatus"] == 3]
    assert removed, "removed jobs of c1 are visible"
    assert all(a.get("RemoveReason", "").endswith(f"(by user {owner_user})") for a in removed), \
        [a.get("RemoveReason") for a in removed]
