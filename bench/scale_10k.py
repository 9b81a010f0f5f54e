"""Benchmark `scale_10k`: one cluster 0 -> 10,000 workers, request -> all 10,000 jobs in the queue,
against a bare `condor_submit` of the same submit description, in one run; and the Redis memory the
cluster costs.

The pool has no free slots (LOCALPOOL_SLOTS=0, BenchStack's default): the jobs stay idle, so the
figure is the controller and the schedd, not process starts. MAX_WORKERS_PER_CLUSTER is raised to the
cluster size (the product default is 1,000).

ours      `tasks.api.enqueue_scale(store, "bigN", 10000)` through the Celery worker: from the enqueue
          until the scale task's result says every job was submitted (`condor_submit` has returned:
          the jobs are in the queue), then checked outside the timing: condor_submit calls counted in
          calls.log, condor_q shows the 10,000 jobs with distinct names.
bare      `condor_submit -terse FILE` as the same user, FILE = the description our reconcile writes for
          10,000 (index, name) items (bench.common.bare_description), written before the clock starts.
Rounds run bare, ours, ours, bare, ... (each cluster is new, the queue grows by 10,000 per run, so
the order alternates); medians are compared.
Redis: the sum of `MEMORY USAGE ... SAMPLES 0` over the cluster's keys (htdask.state.keys.per_cluster) after the
request, and after one poll (which writes the per-job records and the summary); the latter is the figure.

    python bench/scale_10k.py [--workers 10000] [--rounds 2] [--profile]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchStack, bare_description, bare_submit, figure, say  # noqa: E402

GOAL_RATIO = 1.2


def queued(stack: BenchStack, cluster: str) -> list[dict]:
    out = stack.condor("condor_q", "-allusers", "-json", "-constraint", f'DaskGatewayCluster == "{cluster}"',
                       "-attributes", "ClusterId,ProcId,DaskWorkerName")
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout) if out.stdout.strip() else []


def run_ours(stack: BenchStack, store, cluster: str, n: int) -> tuple[float, int]:
    from tasks import api
    from tasks.app import app
    mark = time.time()
    t0 = time.perf_counter()
    task_id = api.enqueue_scale(store, cluster, n).task_id
    result = app.AsyncResult(task_id).get(timeout=900)
    seconds = time.perf_counter() - t0
    submits = len(stack.calls_since(mark, "condor_submit"))
    if len(result.get("submitted") or []) != n:
        raise RuntimeError(f"cluster {cluster}: result {str(result)[:300]}")
    return seconds, submits


def run_bare(stack: BenchStack, cluster: str, n: int, owner: str) -> float:
    text = bare_description(cluster, owner, [(i, f"{cluster}-{i}") for i in range(n)])
    t0 = time.perf_counter()
    ids = bare_submit(stack, text, owner)
    seconds = time.perf_counter() - t0
    if len(ids) != n:
        raise RuntimeError(f"bare condor_submit: {len(ids)} job ids for {n}")
    return seconds


def redis_bytes(store, cluster: str) -> dict[str, int]:
    from htdask.state import keys
    usage = {}
    for key in keys.per_cluster(cluster):
        used = store.r.memory_usage(key, samples=0)  # samples=0: every element of a collection
        if used:
            usage[key] = int(used)
    return usage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--profile", action="store_true",
                    help="after the rounds, one more cluster under py-spy (the worker, its pool, condor_*)")
    a = ap.parse_args(argv)
    n = a.workers
    times: dict[str, list[float]] = {"ours": [], "bare": []}
    submits: list[int] = []
    exact = True
    with BenchStack(MAX_WORKERS_PER_CLUSTER=str(max(n, 1000))) as stack:
        stack.activate()
        from htdask.state import Store, connect
        store = Store(connect(stack.env["REDIS_URL"]))
        owner = stack.env["DEFAULT_OWNER"]
        stack.condor("condor_q")  # starts the pool's runner outside the measurement
        for r in range(1, a.rounds + 1):
            order = ("bare", "ours") if r % 2 else ("ours", "bare")
            for kind in order:
                cluster = f"{'big' if kind == 'ours' else 'bare'}{r}"
                if kind == "ours":
                    t, calls = run_ours(stack, store, cluster, n)
                    submits.append(calls)
                else:
                    t = run_bare(stack, cluster, n, owner)
                times[kind].append(t)
                ads = queued(stack, cluster)
                names = {ad["DaskWorkerName"] for ad in ads}
                exact &= len(ads) == n == len(names)
                say(f"round {r} {kind:<4}: {len(ads)} jobs in the queue ({len(names)} distinct names) in {t:.2f} s"
                    + (f", {calls} condor_submit" if kind == "ours" else ""))
        if a.profile:
            from bench.profile import Spy, summary
            path = stack.workdir.parent / "scale_10k-profile.txt"
            with Spy(stack.workers[0].popen.pid, path):
                t, _ = run_ours(stack, store, "profiled", n)
            say(f"profiled cluster: {t:.2f} s (not in the figure)\n{summary(path)}")
        requested = sum(redis_bytes(store, f"big{a.rounds}").values())
        import os

        from tasks import context
        from tasks.config import settings
        from tasks.poll import Poller
        os.environ["PATH"] = stack.env["PATH"]
        t0 = time.perf_counter()
        polled = Poller(store, context.schedd(), "local", settings()).poll(force=True)
        say(f"one poll of the queue ({polled.jobs} jobs of ours): {time.perf_counter() - t0:.2f} s")
        usage = redis_bytes(store, f"big{a.rounds}")
    total = sum(usage.values())
    say(f"Redis memory of cluster big{a.rounds} ({n} workers): {requested / 1024:.1f} KiB after the request, "
        f"{total / 2**20:.2f} MiB = {total / max(n, 1):.0f} bytes per worker after a poll; by key: "
        + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sorted(usage.items())))
    mo, mb = statistics.median(times["ours"]), statistics.median(times["bare"])
    ratio = mo / mb
    ok = max(submits) == 1 and exact and ratio <= GOAL_RATIO
    figure("scale_10k", f"{max(submits)} submit call; {mo:.2f}s vs {mb:.2f}s bare condor_submit = {ratio:.2f}x "
           f"for {n} workers, {'exact' if exact else 'NOT exact'}; Redis {total / 2**20:.2f} MiB for the cluster",
           f"1 call, <= {GOAL_RATIO}x", ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
