"""`htdask worker-health`, the check compose and k8s run against kombu's wedge: it fails on a worker that
does not consume (stopped with SIGSTOP: alive, connected, silent) and passes on a healthy one."""
from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from htdask.demo.procs import Process
from htdask.demo.services import REPO
from tests.test_core import make_stack

pytestmark = pytest.mark.stack


def health(stack, node: str, timeout: float = 3.0):
    return stack.cli("worker-health", "--node", node, "--timeout", str(timeout), timeout=60)


def test_the_check_fails_on_a_stopped_worker_and_passes_on_a_healthy_one(service_user):
    with make_stack(service_user) as stack:
        node = f"worker1@{socket.gethostname()}"
        ok = health(stack, node)
        assert ok.returncode == 0 and ok.stdout.startswith(f"worker {node} answered in"), ok
        worker = stack.workers[0]
        worker.kill(signal.SIGSTOP)  # the whole worker: its consumer loop takes neither tasks nor pings
        try:
            start = time.monotonic()
            stuck = health(stack, node, timeout=2.0)
            assert stuck.returncode == 1 and time.monotonic() - start < 30, stuck
            assert stuck.stderr.strip().splitlines() == [f"error: worker {node} did not answer a ping within 2 s"]
        finally:
            worker.kill(signal.SIGCONT)
        assert health(stack, node).returncode == 0  # healthy again: the check is about now, not history
        other = health(stack, f"nobody@{socket.gethostname()}", timeout=1.0)
        assert other.returncode == 1, "a node that does not exist never passes"


def test_the_check_fails_within_its_deadline_when_the_broker_is_gone(service_user):
    with make_stack(service_user) as stack:
        node = f"worker1@{socket.gethostname()}"
        assert health(stack, node).returncode == 0
        stack.redis.stop()
        start = time.monotonic()
        out = health(stack, node, timeout=2.0)
        assert out.returncode == 1 and time.monotonic() - start < 20, out
        assert len(out.stderr.strip().splitlines()) == 1 and node in out.stderr, out.stderr


def test_the_default_finds_a_worker_started_as_the_quick_start_starts_it(service_user):
    """No --node: the README quick start's worker (`celery -A tasks worker -Q local`, node celery@HOST) is
    found by its queue heartbeat; it used to ping worker@HOST, which no such worker is, and fail."""
    host = socket.gethostname()
    with make_stack(service_user) as stack:
        stack.workers.pop().stop()  # the stack's own worker1@HOST: a clean stop withdraws its heartbeat
        celery = str(Path(sys.executable).parent / "celery")
        log = stack.logdir / "quick-start-worker.log"
        worker = Process([celery, "-A", "tasks", "worker", "-Q", "local"], env=stack.env, cwd=str(REPO),
                         log_path=log, name="quick-start worker")
        try:
            # as the quick start waits for it (its log level leaves no "ready." line)
            up = stack.cli("poll", "--timeout", "60", timeout=90)
            assert up.returncode == 0, (up.stderr, worker.tail(40))
            ok = stack.cli("worker-health", "--timeout", "3", timeout=60)
            assert ok.returncode == 0 and ok.stdout.startswith(f"worker celery@{host} answered in"), ok
            worker.kill(signal.SIGSTOP)
            try:
                stuck = stack.cli("worker-health", "--timeout", "2", timeout=60)
                assert stuck.returncode == 1, stuck
                assert stuck.stderr.strip().splitlines() == [
                    f"error: worker celery@{host} did not answer a ping within 2 s"], stuck.stderr
            finally:
                worker.kill(signal.SIGCONT)
            assert stack.cli("worker-health", "--timeout", "3", timeout=60).returncode == 0
        finally:
            worker.stop()
        # no worker of this host consumes the queue now: the usual names are tried, and nobody answers
        gone = stack.cli("worker-health", "--timeout", "1", timeout=60)
        assert gone.returncode == 1, gone
        assert f"celery@{host} or worker@{host} did not answer" in gone.stderr, gone.stderr
        assert "no worker on this host announced consuming queue local" in gone.stderr, gone.stderr
