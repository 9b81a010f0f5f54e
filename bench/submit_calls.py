"""Benchmark `submit_calls`: scale a cluster 0 -> 100 workers; schedd submit calls and wall time,
ours against one `condor_submit` per worker (dask-jobqueue's way), on one local pool, in one run.

ours      the real Celery path: `tasks.api.enqueue_scale(store, cluster, 100)` on a Stack (Redis, local
          pool, Celery worker), timed from the enqueue until the scale task's result says the jobs were
          submitted; then the queue is checked (100 jobs of that cluster, each with its own name).
baseline  what dask-jobqueue's HTCondorCluster.scale(100) does: 100 `Job.start()`s run concurrently by
          asyncio, each writing its own submit file (HTCondorJob's template: job header, Arguments,
          Executable, `Queue`) and running `condor_submit <file>` through asyncio.create_subprocess_exec,
          as the same non-root user, through the same pool; timed from the first file to the last job id.
          Also measured one after the other (a plain loop), which is faster on a small machine; the wall
          ratio is taken against the faster of the two.

Submit calls are counted from the pool's calls.log. Rounds alternate ours / baseline; medians reported.

    python bench/submit_calls.py [--workers 100] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchStack, against_faster_baseline, figure, say  # noqa: E402

# dask_jobqueue/htcondor.py HTCondorJob._script_template and job_header_dict (dask-jobqueue 0.9).
TEMPLATE = """#!/usr/bin/env bash

MY.DaskWorkerName = "htcondor--$F(MY.JobId)--"
batch_name = {name}
RequestCpus = MY.DaskWorkerCores
RequestMemory = floor(MY.DaskWorkerMemory / 1048576)
RequestDisk = floor(MY.DaskWorkerDisk / 1024)
MY.JobId = "$(ClusterId).$(ProcId)"
MY.DaskWorkerCores = 1
MY.DaskWorkerMemory = 2147483648
MY.DaskWorkerDisk = 1073741824
MY.BenchBaseline = "{tag}"

Arguments = "-c 'exec {worker} {scheduler} --name {name} --nthreads 1 --memory-limit 2.00GiB --nanny --death-timeout 60'"
Executable = /bin/sh

Queue
"""
CLUSTER_ID = re.compile(r"submitted to cluster (\d+)")  # HTCondorJob._job_id_from_submit_output


async def _jobqueue_start(i: int, tag: str, tmpdir: str, worker: str, scheduler: str, user) -> str:
    """One dask-jobqueue Job.start(): write the job file, condor_submit it, parse the job id."""
    name = f"{tag}-{i}"
    fd, path = tempfile.mkstemp(suffix=".sh", dir=tmpdir)  # Job.job_file(): one temp file per job
    with os.fdopen(fd, "w") as f:
        f.write(TEMPLATE.format(name=name, tag=tag, worker=worker, scheduler=scheduler))
    os.chmod(path, 0o644)
    try:
        kw = {}
        if user is not None:
            kw = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": tmpdir}
        proc = await asyncio.create_subprocess_exec("condor_submit", path, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, **kw)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"condor_submit exited {proc.returncode}: {err.decode()}")
        m = CLUSTER_ID.search(out.decode())
        if m is None:
            raise ValueError(f"no cluster id in {out.decode()!r}")
        return f"{m.group(1)}.0"
    finally:
        os.unlink(path)


def run_baseline(stack: BenchStack, n: int, tag: str, concurrent: bool = True) -> tuple[float, int, int]:
    """(seconds, submit calls, jobs in the queue) of n one-job condor_submits.

    concurrent: all Job.start()s at once, as SpecCluster starts new workers (asyncio.gather);
    else one after the other (a plain loop; faster on a 2-core machine, so it is measured too).
    """
    tmpdir = stack.workdir / f"jobqueue-{tag}"
    tmpdir.mkdir()
    os.chmod(tmpdir, 0o755)
    owner = stack.env["DEFAULT_OWNER"]
    user = pwd.getpwnam(owner) if os.geteuid() == 0 else None
    worker = stack.env["DASK_WORKER_COMMAND"]
    scheduler = stack.env["DASK_SCHEDULER_ADDRESS"]

    async def scale():
        if concurrent:
            return await asyncio.gather(*(_jobqueue_start(i, tag, str(tmpdir), worker, scheduler, user)
                                          for i in range(n)))
        return [await _jobqueue_start(i, tag, str(tmpdir), worker, scheduler, user) for i in range(n)]

    mark = time.time()
    saved = dict(os.environ)
    os.environ.update({k: stack.env[k] for k in ("PATH", "LOCALPOOL_DIR", "PYTHONPATH")})
    try:
        t0 = time.perf_counter()
        ids = asyncio.run(scale())
        seconds = time.perf_counter() - t0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    calls = len(stack.calls_since(mark, "condor_submit"))
    jobs = queue_count(stack, f'BenchBaseline == "{tag}"')
    assert len(set(ids)) == n, f"{len(set(ids))} distinct job ids"
    return seconds, calls, jobs


def run_ours(stack: BenchStack, n: int, cluster: str) -> tuple[float, int, int]:
    from htdask.state import Store, connect
    from tasks import api
    from tasks.app import app
    store = Store(connect(stack.env["REDIS_URL"]))
    mark = time.time()
    t0 = time.perf_counter()
    enq = api.enqueue_scale(store, cluster, n)
    result = app.AsyncResult(enq.task_id).get(timeout=120)
    seconds = time.perf_counter() - t0
    calls = len(stack.calls_since(mark, "condor_submit"))
    ads = queue_ads(stack, f'DaskGatewayCluster == "{cluster}"')
    names = {a["DaskWorkerName"] for a in ads}
    assert len(names) == len(ads), "duplicate worker names"
    assert len(result["submitted"]) == n, result
    return seconds, calls, len(ads)


def queue_ads(stack: BenchStack, constraint: str) -> list[dict]:
    out = stack.condor("condor_q", "-allusers", "-json", "-constraint", constraint,
                       "-attributes", "ClusterId,ProcId,DaskWorkerName,Owner")
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout) if out.stdout.strip() else []


def queue_count(stack: BenchStack, constraint: str) -> int:
    return len(queue_ads(stack, constraint))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    n = a.workers
    times: dict[str, list[float]] = {"ours": [], "concurrent": [], "sequential": []}
    calls: dict[str, list[int]] = {k: [] for k in times}
    exact = True
    with BenchStack() as stack:
        stack.activate()
        queue_count(stack, "true")  # starts the pool's runner outside the measurements
        for r in range(1, a.rounds + 1):
            for kind in times:
                if kind == "ours":
                    t, c, jobs = run_ours(stack, n, f"ours-r{r}")
                else:
                    t, c, jobs = run_baseline(stack, n, f"jq{kind[0]}-r{r}", concurrent=kind == "concurrent")
                times[kind].append(t)
                calls[kind].append(c)
                exact &= jobs == n
                say(f"round {r} {kind:<10}: {c:3d} condor_submit, {jobs} jobs in the queue, {t:6.2f} s")
    med, base, to, tb = against_faster_baseline(times)
    say(f"median wall time: ours {to:.2f} s; one submit per worker: {med['concurrent']:.2f} s concurrent "
        f"(dask-jobqueue), {med['sequential']:.2f} s sequential; ratio against the faster ({base}) "
        f"{to / tb:.3f}x, {tb / to:.0f}x faster")
    co, cb = max(calls["ours"]), min(calls["concurrent"] + calls["sequential"])
    ok = co == 1 and exact
    figure("submit_calls", f"{co} vs {cb} submit calls; wall {to:.2f}s vs {tb:.2f}s = {to / tb:.3f}x", "1 call", ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
