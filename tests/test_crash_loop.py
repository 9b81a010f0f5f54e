"""Issue 12 item 5: worker logs are kept, ended jobs are recorded from condor_history, crash loops are
seen, slowed and explained.

The worker command here fails at once, as a Dask worker does whose scheduler is unreachable
(it prints to stderr and exits 1); beat polls every second.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from htdask.demo.services import Stack
from htdask.state import Store, connect
from tests.conftest import wait_until

pytestmark = pytest.mark.stack

FAILING_WORKER = '''#!/bin/sh
echo "worker $DASK_GATEWAY_WORKER_NAME starting"
echo "OSError: Timed out trying to connect to $1" >&2
exit 1
'''


@pytest.fixture
def failing_worker():
    """The failing worker command, readable by the job's user (not under pytest's private tmp dir)."""
    d = Path(tempfile.mkdtemp(prefix="htdask-crash-"))
    d.chmod(0o755)
    path = d / "failing_worker"
    path.write_text(FAILING_WORKER)
    path.chmod(0o755)
    yield str(path)
    shutil.rmtree(d)


def _row(stack, cluster: str) -> dict:
    return json.loads(stack.cli("status", cluster, "--json").stdout)["clusters"][0]


def test_crash_loop_is_recorded_slowed_and_explained_and_logs_are_kept(service_user, failing_worker):
    with Stack(beat=True, DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=failing_worker, POLL_INTERVAL="1",
               SCHEDD_MIN_INTERVAL="0", DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:9",
               CRASH_LOOP_JOBS="3", CRASH_LOOP_WINDOW="120", CRASH_BACKOFF_BASE="60") as stack:
        out = stack.cli("scale", "crashy", "2")
        assert out.returncode == 0, out.stderr
        store = Store(connect(stack.redis.url))
        # the first 2 exit and are replaced once; when 3 exits are recorded within 2 min the loop is seen
        row = wait_until(lambda: (r := _row(stack, "crashy"))["note"] and r, timeout=60, message="the note")
        assert re.fullmatch(r"[34] workers exited within 2 min \(exit code 1\), next try in \d+ s", row["note"])
        ended = store.ended_records("crashy")
        assert len(ended) in (3, 4) and {(e["status"], e["exit_code"]) for e in ended} == {(4, 1)}
        submits = len(stack.calls("condor_submit"))
        assert submits == 2
        time.sleep(4)  # several polls ask for a reconcile: the backoff holds (60 s x 2)
        assert len(stack.calls("condor_submit")) == submits
        assert "next try in" in stack.cli("status").stdout
        jobs = stack.cli("jobs", "crashy")
        assert "workers exited within 2 min (exit code 1)" in jobs.stdout, jobs.stdout
        assert "workers exited" in json.loads(stack.cli("jobs", "crashy", "--json").stdout)["note"]

        # the jobs' output and error are in LOG_DIR/<cluster>, a directory of the job's user
        logdir = Path(stack.env["LOG_DIR"]) / "crashy"
        assert pwd.getpwuid(os.stat(logdir).st_uid).pw_name == service_user
        # (the job event log `crashy.log` is in the submit description; the local pool does not write one)
        out = stack.cli("logs", "crashy", "crashy-0", "--tail", "5")
        assert out.returncode == 0, out.stderr
        assert "worker crashy-0 starting" in out.stdout
        assert "OSError: Timed out trying to connect to tcp://127.0.0.1:9" in out.stdout
        everyone = stack.cli("logs", "crashy").stdout
        assert re.search(r"crashy-0\.\d+\.\d+\.err", everyone) and re.search(r"crashy-1\.\d+\.\d+\.out", everyone)
        # one error file per job: the replacement that reused the name crashy-0 kept the crashed job's error
        errs = sorted(logdir.glob("crashy-0.*.err"), key=lambda p: [int(x) for x in p.name.split(".")[1:3]])
        assert len(errs) >= 2, errs
        assert "OSError: Timed out trying to connect" in errs[0].read_text()
        assert "(the job before)" in out.stdout
        missing = stack.cli("logs", "crashy", "crashy-99")
        assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1


def test_crash_loop_is_shown_while_it_lasts_and_ends_are_split_by_how(service_user, failing_worker):
    """Issue 23 item 9: a cluster whose scheduler address nothing listens on. Its workers exit with code 1:
    they are counted by how they ended (never as plain "completed"), and the crash-loop note and metric
    stay in every status read while the loop goes on, not only while a submission waits."""
    import requests

    from tests.test_exporter import samples, value
    with Stack(beat=True, exporter=True, DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=failing_worker,
               POLL_INTERVAL="1", SCHEDD_MIN_INTERVAL="0", DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:9",
               CRASH_LOOP_JOBS="3", CRASH_LOOP_WINDOW="120", CRASH_BACKOFF_BASE="1",
               CRASH_BACKOFF_MAX="2") as stack:
        out = stack.cli("scale", "loop", "1")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: _row(stack, "loop")["note"], timeout=90, message="the crash loop")
        submits = len(stack.calls("condor_submit"))
        reads = []
        for _ in range(12):  # the backoff is 1-2 s: the loop goes on, submitting again and again
            row = _row(stack, "loop")
            metric = value(samples(requests.get(stack.exporter_url + "metrics", timeout=10).text),
                           "htdask_cluster_crash_loop", cluster="loop", schedd="local")
            reads.append((row["note"], row["crash_loop"], metric))
            time.sleep(0.7)
        assert len(stack.calls("condor_submit")) > submits, "the loop went on during the reads"
        assert all(note and crash and metric == 1 for note, crash, metric in reads), reads
        row = _row(stack, "loop")
        assert set(row["ended"]) == {"exit_code_1"} and row["ended"]["exit_code_1"] >= 3, row
        assert f"ended: {row['ended']['exit_code_1']} exit code 1" in row["notes"], row["notes"]
        assert row["owner"] == service_user
        text = stack.cli("status", "loop").stdout
        assert "crash loop: " in text and "exit code 1" in text and "completed" not in text.split("\n", 1)[1]
        m = samples(requests.get(stack.exporter_url + "metrics", timeout=10).text)
        assert value(m, "htdask_jobs_ended_total", cluster="loop", schedd="local", reason="exit_code_1") >= 3
