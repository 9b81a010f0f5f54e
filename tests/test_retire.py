"""Issue 12 item 7: a CLI scale-down retires running workers through their Dask scheduler first;
issue 23 item 7: off the round's path, so a scheduler that never answers holds up no other cluster.

Real Dask workers run as jobs of the local pool against a real scheduler; data held only by the worker
that goes must survive the scale-down (retire_workers moves it to the worker that stays).
"""
from __future__ import annotations

import socket
import sys
import threading
import time

import pytest

from htdask.demo.procs import Process, free_port, wait_for_port
from htdask.demo.services import FAKE_WORKER, Stack
from tests.conftest import live, wait_until

pytestmark = pytest.mark.stack


def test_scale_down_retires_running_workers_before_removing_their_jobs(service_user):
    from distributed import Client
    with Stack(DEFAULT_OWNER=service_user, POLL_INTERVAL="60", SCHEDD_MIN_INTERVAL="0",
               RETIRE_TIMEOUT="60") as stack:
        port = free_port()
        scheduler = Process([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                             "--port", str(port), "--dashboard-address", "127.0.0.1:0"],
                            env=stack.env, log_path=stack.logdir / "scheduler.log", name="dask-scheduler")
        stack.others.append(scheduler)
        wait_for_port(port, timeout=60)
        address = f"tcp://127.0.0.1:{port}"
        out = stack.cli("scale", "ret", "2", "--scheduler", address, "--memory", "512MiB")
        assert out.returncode == 0, out.stderr
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            by_name = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
            assert set(by_name) == {"ret-0", "ret-1"}
            data = client.scatter(list(range(10000)), workers=[by_name["ret-1"]])  # only on the one that goes
            out = stack.cli("scale", "ret", "1")
            assert out.returncode == 0, out.stderr
            wait_until(lambda: [j["DaskWorkerName"] for j in live(stack, "ret")] == ["ret-0"], timeout=90,
                       message="ret-1's job gone")
            assert sum(client.gather(data)) == sum(range(10000))  # moved to ret-0 before ret-1 closed
            assert {w["name"] for w in client.scheduler_info()["workers"].values()} == {"ret-0"}
        log = (stack.logdir / "worker1.log").read_text(errors="replace")
        assert "retired 1 worker (ret-1)" in log
        assert "Retire worker" in (stack.logdir / "scheduler.log").read_text(errors="replace")


class SilentScheduler:
    """A TCP server that accepts every connection and never replies (a hung Dask scheduler)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)  # held open, never answered

    def close(self):
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def test_a_scheduler_that_never_answers_does_not_hold_up_other_clusters(service_user):
    """Issue 23 item 7: three scale-downs of clusters whose scheduler accepts TCP and never replies, then
    `scale fast 1`: fast's job is submitted at once (before any of the slow clusters' running jobs is
    removed, which waits for their retirement to time out), and the slow clusters still end at their
    desired counts. Ordering from the pool's calls.log, not a timed assertion."""
    hung = SilentScheduler()
    try:
        with Stack(DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=str(FAKE_WORKER), POLL_INTERVAL="60",
                   SCHEDD_MIN_INTERVAL="0", RETIRE_TIMEOUT="10",
                   DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786") as stack:
            slow = ["slow1", "slow2", "slow3"]
            for c in slow:
                out = stack.cli("scale", c, "2", "--scheduler", hung.address)
                assert out.returncode == 0, out.stderr
            wait_until(lambda: all(sum(j["JobStatus"] == 2 for j in live(stack, c)) == 2 for c in slow),
                       timeout=90, message="2 running jobs per slow cluster")
            mark = time.time()
            for c in slow:
                out = stack.cli("scale", c, "1")
                assert out.returncode == 0, out.stderr
            out = stack.cli("scale", "fast", "1")
            assert out.returncode == 0, out.stderr
            wait_until(lambda: len(live(stack, "fast")) == 1, timeout=60, message="fast's job")
            wait_until(lambda: all(len(live(stack, c)) == 1 for c in slow), timeout=120,
                       message="each slow cluster down to 1 job")
            assert all([j["DaskWorkerIndex"] for j in live(stack, c)] == [0] for c in slow)
            after = [row for row in stack.calls() if float(row[0]) >= mark]
            submits = [float(r[0]) for r in after if r[1] == "condor_submit"]
            removals = [float(r[0]) for r in after if r[1] == "condor_rm"]
            assert len(submits) == 1 and len(removals) >= 1
            assert submits[0] < min(removals), "fast's submit waited for the slow clusters' retirements"
            assert len(hung.accepted) >= 3, "each slow cluster's scheduler was asked to retire its worker"
            log = "\n".join(p.read_text(errors="replace") for p in stack.logdir.glob("worker*.log"))
            assert log.count("removing 1 running workers without retirement") == 3, log[-3000:]
    finally:
        hung.close()
