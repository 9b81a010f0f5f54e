"""Issue 23 item 0: a round SIGKILLed at any step wedges none of its clusters.

The Celery worker (its whole process group: the main process and its pool children) is SIGKILLed while a
batched round holds its lease: before condor_submit (the round's condor_q is held by a wrapper), during
it (the pool's submit-delay fault; the condor_submit is killed too) and after it committed (a wrapper
holds condor_submit's answer after the real one queued the jobs); with one cluster and with several in
one round. Once the dead round's lease has expired, a new worker is started and the clusters must reach
exactly their desired counts, with unique worker names, within LOCK_TTL + one POLL_INTERVAL (+ a margin
for starting processes) of the kill: the
dead round is detected by its lease alone (htdask/state/rounds.py), far below the old lock timeout (2 ×
CONDOR_TIMEOUT + 30 = 150 s) during which its "round queued" mark answered every request and poll.

Real redis-server, Celery worker and beat, the local pool; condor_q / condor_submit wrapped through
CONDOR_BIN_DIR.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from htdask.demo.services import install_pool
from htdask.state import connect, keys
from tests.conftest import live, wait_until
from tests.test_reliability import fault, kill_worker, make_stack

TTL, POLL = 3.0, 1.0
#: starting processes on a loaded 2-core machine (a new worker, the CLI) on top of the bound
MARGIN = 30.0

#: condor_q / condor_submit of the local pool, held at a step of a round while a control file exists:
#: `hold-q` (its text a part of the argv: the round's read, not the poll's) holds condor_q before it runs;
#: `hold-submit` holds condor_submit's answer after the real one committed. `held-*` says it is held (its pid).
HOLDING = r'''#!/usr/bin/env python3
import os, subprocess, sys, time
ctl, real, prog = {ctl!r}, {real!r}, {prog!r}
def hold(flag):
    with open(os.path.join(ctl, ".held-" + flag), "w") as f:
        f.write(str(os.getpid()))
    os.rename(os.path.join(ctl, ".held-" + flag), os.path.join(ctl, "held-" + flag))
    while os.path.exists(os.path.join(ctl, "hold-" + flag)):
        time.sleep(0.05)
if prog == "condor_q":
    flag = os.path.join(ctl, "hold-q")
    if os.path.exists(flag) and open(flag).read() in " ".join(sys.argv):
        hold("q")
    os.execv(real, [real, *sys.argv[1:]])
data = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
out = subprocess.run([real, *sys.argv[1:]], input=data, capture_output=True)
if os.path.exists(os.path.join(ctl, "hold-submit")):
    hold("submit")
sys.stdout.buffer.write(out.stdout)
sys.stderr.buffer.write(out.stderr)
sys.exit(out.returncode)
'''


@pytest.fixture
def holding_bin():
    """(CONDOR_BIN_DIR with condor_q and condor_submit wrapped as HOLDING, its control directory). Outside
    pytest's private tmp dir: condor_submit runs as the service user."""
    base = Path(tempfile.mkdtemp(prefix="htdask-hold-"))
    base.chmod(0o755)
    pool_bin = install_pool(base / "pool")
    ctl = base / "ctl"
    ctl.mkdir()
    ctl.chmod(0o1777)  # the service user's condor_submit writes its held- file here
    bindir = base / "condor-bin"
    bindir.mkdir()
    for prog in os.listdir(pool_bin):
        if prog in ("condor_q", "condor_submit"):
            (bindir / prog).write_text(HOLDING.format(ctl=str(ctl), real=str(pool_bin / prog), prog=prog))
            (bindir / prog).chmod(0o755)
        else:
            (bindir / prog).symlink_to(pool_bin / prog)
    yield str(bindir), ctl
    for flag in ctl.glob("hold-*"):
        flag.unlink()  # a held wrapper goes on and ends by itself
    shutil.rmtree(base, ignore_errors=True)


START_ROUND = """
from htdask.state import Store, connect
from tasks.app import app
store = Store(connect())
wanted = %r
for c, n in wanted.items():
    store.record_new_request(c, n, schedd="local")
store.add_pending("local", *wanted)
app.send_task("tasks.reconcile_pending", kwargs={"schedd": "local"}, queue="local")
"""


def start_round(stack, wanted: dict[str, int]) -> None:
    """One batched round for every cluster of `wanted` (a lone cluster: the CLI's own request)."""
    if len(wanted) == 1:
        [(cluster, n)] = wanted.items()
        out = stack.cli("scale", cluster, str(n))
        assert out.returncode == 0, out.stderr
    else:
        stack.python(START_ROUND % (wanted,))


def submit_pids(stack) -> list[int]:
    return [int(row[3]) for row in stack.calls("condor_submit") if len(row) > 3]


def kill_submits(stack) -> None:
    """SIGKILL this stack's condor_submit processes (by the pids the pool's calls.log names), with their group
    (the run-as-user wrapper they run under)."""
    for pid in submit_pids(stack):
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def exact(stack, wanted: dict[str, int]) -> bool:
    return all(len(live(stack, c)) == n for c, n in wanted.items())


def assert_unique_and_exact(stack, wanted: dict[str, int]) -> None:
    for cluster, n in wanted.items():
        names = [j["DaskWorkerName"] for j in live(stack, cluster)]
        assert len(names) == n, (cluster, len(names), n)
        assert len(set(names)) == n, (cluster, Counter(names).most_common(3))


def lease_expired(stack) -> None:
    """Wait until the dead round's batch lease has expired unrenewed (a worker restart usually takes longer
    than LOCK_TTL; before that, a request that finds the lease held arms a watch, which is not tested here)."""
    r = connect(stack.redis.url)
    wait_until(lambda: not r.exists(keys.batch_lock("local")), timeout=60, interval=0.1,
               message="the dead round's lease to expire")


def kill_round_at(stack, ctl: Path, point: str, wanted: dict[str, int]) -> float:
    """Start a round for `wanted`, SIGKILL the worker at `point`, release what was held, wait out the lease.
    Returns the time of the kill (time.monotonic)."""
    constraint = 'DaskGatewayCluster == "' if len(wanted) == 1 else "member(DaskGatewayCluster"
    if point == "before":
        (ctl / "hold-q").write_text(constraint)
    elif point == "during":
        fault(stack, "submit-delay", "30")
    else:
        (ctl / "hold-submit").write_text("")
    start_round(stack, wanted)
    if point == "before":
        wait_until(lambda: (ctl / "held-q").exists(), timeout=60, message="the round's condor_q")
    elif point == "during":
        wait_until(lambda: submit_pids(stack), timeout=60, message="the round's condor_submit")
        time.sleep(1.0)  # inside its delay, before its commit
    else:
        wait_until(lambda: (ctl / "held-submit").exists(), timeout=60, message="the round's commit")
        assert exact(stack, wanted), "the held condor_submit committed"
    kill_worker(stack)  # SIGKILL the worker's process group: main process and pool children
    killed = time.monotonic()
    if point == "during":
        kill_submits(stack)
    for flag in ctl.glob("hold-*"):
        flag.unlink()
    fault(stack, "clear")
    lease_expired(stack)
    return killed


@pytest.mark.parametrize("point,clusters", [
    ("before", 1), ("after", 1), ("before", 3), ("during", 3), ("after", 3)])
def test_a_round_sigkilled_at_any_step_wedges_none_of_its_clusters(service_user, holding_bin, point, clusters):
    bindir, ctl = holding_bin
    wanted = {"bark": 12} if clusters == 1 else {"k0": 3, "k1": 5, "k2": 7}
    with make_stack(service_user, beat=True, POLL_INTERVAL=str(POLL), LOCK_TTL=str(TTL),
                    CONDOR_BIN_DIR=bindir) as stack:
        killed = kill_round_at(stack, ctl, point, wanted)
        stack.start_worker("replacement")
        if point == "before" and clusters > 1:
            # nothing asks again: the poll finds the clusters short and reconciles them
            after = wanted
        else:  # new requests (a larger count) reach the clusters the dead round held
            after = {c: n + 2 for c, n in wanted.items()}
            for c, n in after.items():
                out = stack.cli("scale", c, str(n))
                assert out.returncode == 0, out.stderr
        wait_until(lambda: exact(stack, after), timeout=TTL + POLL + MARGIN, interval=0.5,
                   message=f"exact counts {after} after the round was killed {point} condor_submit")
        print(f"reconciled {time.monotonic() - killed:.1f}s after the kill")
        time.sleep(2 * POLL)  # a late (wrong) submit or removal would land by now
        assert_unique_and_exact(stack, after)


def test_issue_23_reproduction_a_worker_killed_in_a_slow_submit_then_scale_wait(service_user):
    """The issue's input: scale bark 30, kill 1.5 s in with submit-delay 3, a new worker, scale bark 30 --wait
    --timeout 140 (default LOCK_TTL, a beat polling every 2 s)."""
    with make_stack(service_user, beat=True, POLL_INTERVAL="2") as stack:
        fault(stack, "submit-delay", "3")
        out = stack.cli("scale", "bark", "30")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: submit_pids(stack), timeout=60, message="the condor_submit")
        time.sleep(1.5)
        kill_worker(stack)
        kill_submits(stack)  # the worker's processes, its condor_submit included
        fault(stack, "clear")
        lease_expired(stack)
        stack.start_worker("replacement")
        out = stack.cli("scale", "bark", "30", "--wait", "--timeout", "140", timeout=200)
        assert out.returncode == 0, (out.stdout, out.stderr, stack.logs())
        time.sleep(2)
        assert_unique_and_exact(stack, {"bark": 30})
