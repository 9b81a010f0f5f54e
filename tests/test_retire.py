"""Issue 12 item 7: a CLI scale-down retires running workers through their Dask scheduler first.

Real Dask workers run as jobs of the local pool against a real scheduler; data held only by the worker
that goes must survive the scale-down (retire_workers moves it to the worker that stays).
"""
from __future__ import annotations

import sys

import pytest

from demo.procs import Process, free_port, wait_for_port
from demo.services import Stack
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
        assert "retired workers ['ret-1']" in log
        assert "Retire worker" in (stack.logdir / "scheduler.log").read_text(errors="replace")
