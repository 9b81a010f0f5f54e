"""Issue 23 item 3: liveness and freshness do not depend on hosts' clocks agreeing.

A Celery worker whose clock is 30 s behind (or ahead of) everyone else's (libfaketime on the worker process only, a
real offset of its `time.time()`, nothing mocked in our code) takes over the queue from a worker with the
right time. Heartbeats, poll times, staleness, `scale --wait`, `delete` and the poll throttle all use
Redis' clock (`TIME`), so for the CLI, beat and the exporter that worker is alive and its polls are fresh:

- beat's polls run on it (before: "polled less than half a period ago; skipping" for 30 s when behind; when
  ahead, every beat poll was discarded as expired: `expires` is judged by the worker's clock);
- `scale sk 1 --wait` reaches 1 running job (before: exit 1 at once, "no worker consumes queue local");
- `status` and the exporter call the summary fresh (before: stale);
- `delete --wait` deletes (before: refused), and `delete --force` of a cluster whose worker is alive deletes
  through that worker instead of forgetting the record while its job runs on ("0 jobs left").
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from htdask.demo.services import REPO, Stack
from htdask.exporter import snapshot
from htdask.state import Store, connect
from tests.conftest import live, wait_until
from tests.test_core import FAKE_WORKER

SKEW = 30  # seconds the worker's clock is behind (or ahead)
pytestmark = pytest.mark.skipif(shutil.which("faketime") is None, reason="faketime is not installed "
                                "(apt-get install faketime; `make deps` does)")


def _row(stack, cluster: str) -> dict:
    out = stack.cli("status", cluster, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["clusters"][0]


@pytest.mark.parametrize("skew", [-SKEW, SKEW], ids=["behind", "ahead"])
def test_a_worker_30s_off_is_alive_fresh_and_polled(service_user, skew):
    with Stack(beat=True, DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=FAKE_WORKER, POLL_INTERVAL="2",
               SCHEDD_MIN_INTERVAL="0", DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786") as stack:
        store = Store(connect(stack.redis.url))
        wait_until(lambda: store.poll_status("local").get("ok_at"), message="a first poll by the right-clock worker")
        stack.workers.pop().stop()
        # the schedd lives on the worker's host, with its clock: the pool's runner restarts under the new worker
        subprocess.run([sys.executable, "-m", "htdask_localpool", "stop"], env=stack.env, cwd=REPO, check=True,
                       capture_output=True, timeout=60)
        site = stack.workdir / "skewsite"  # time.sleep despite a libfaketime bug (see its docstring)
        shutil.copytree(Path(__file__).parent / "skewsite", site)
        for path in (site, site / "sitecustomize.py"):
            path.chmod(0o755)
        worker = stack.start_worker("skewed", prefix=["faketime", "-f", f"{skew:+d}"],
                                    FAKETIME_DONT_FAKE_MONOTONIC="1",
                                    PYTHONPATH=f"{site}{os.pathsep}{stack.env['PYTHONPATH']}")
        # the offset is real: the worker's processes (and the condor_* they run) live 30 s in the past
        probe = subprocess.run(["faketime", "-f", f"{skew:+d}", "python3", "-c", "import time; print(time.time())"],
                               capture_output=True, text=True, check=True)
        sec, usec = store.r.time()
        assert abs(float(probe.stdout) - (sec + usec / 1e6) - skew) < 5

        # beat's polls run on the skewed worker: the poll throttle compares Redis' times with Redis' clock
        # (a beat poll queued while no worker ran may still be skipped: it comes right after another)
        for _ in range(2):
            before = float(store.poll_status("local")["ok_at"])
            wait_until(lambda: float(store.poll_status("local")["ok_at"]) > before, timeout=12,
                       message="a beat poll run by the skewed worker")

        out = stack.cli("scale", "sk", "1", "--wait", "--timeout", "90")
        assert out.returncode == 0, (out.stderr, stack.logs())
        assert len(live(stack, "sk")) == 1
        row = _row(stack, "sk")
        assert not row["stale"] and row["stale_reason"] is None, row
        assert 0 <= row["age"] < 10, row  # not 30 s in the past
        assert "(stale)" not in stack.cli("status", "sk").stdout
        view = {c.name: c for c in snapshot.read(store, 2.0).clusters}["sk"]  # the exporter's view
        assert not view.stale and view.age < 10, view
        jobs = json.loads(stack.cli("jobs", "sk", "--json").stdout)["jobs"]
        assert jobs and all(0 <= j["seconds_in_state"] < 20 for j in jobs), jobs  # job ads' times: the schedd's clock

        out = stack.cli("delete", "sk", "--wait", "--timeout", "60")
        assert out.returncode == 0, (out.stderr, stack.logs())
        assert live(stack, "sk") == [] and store.get("sk") is None

        # --force on a cluster whose worker is alive deletes through the worker: the job goes, the record goes
        assert stack.cli("scale", "sk2", "1", "--wait", "--timeout", "90").returncode == 0
        out = stack.cli("delete", "sk2", "--force")
        assert out.returncode == 0, out.stderr
        assert "record removed" not in out.stdout and "delete enqueued" in out.stdout, out.stdout
        wait_until(lambda: live(stack, "sk2") == [] and store.get("sk2") is None, timeout=60,
                   message="sk2 deleted through the worker")
        assert worker.alive()


def test_delete_force_never_reports_no_jobs_without_a_poll(service_user):
    with Stack(DEFAULT_OWNER=service_user, SCHEDD_MIN_INTERVAL="0",
               DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786") as stack:
        out = stack.cli("scale", "ghost", "2", "--schedd", "nowhere")  # no worker consumes queue nowhere
        assert out.returncode == 0, out.stderr
        out = stack.cli("delete", "ghost", "--force")
        assert out.returncode == 0, out.stderr
        assert "record removed" in out.stdout
        assert "no poll has read its jobs" in out.stdout and "unknown" in out.stdout, out.stdout
        assert "condor_q -constraint" in out.stdout
        assert Store(connect(stack.redis.url)).get("ghost") is None
