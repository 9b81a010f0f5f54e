"""Benchmark `poll_100k`: a full poll of a 100,000-job queue against a bare `condor_q -json` of it,
and the poller's peak memory growth.

setup     `python -m htdask_localpool seed` puts 100,000 never-started jobs carrying our ClassAds
          (DaskGatewayCluster, DaskWorkerName, DaskWorkerIndex, DaskClusterOwner, JobBatchName) into the
          stack's pool: 200 clusters of 500 jobs, 85% idle, 12% running, 3% held; each cluster is
          recorded in Redis with desired = 500 (so the poll's drift check runs).
bare      `condor_q -json -allusers -constraint 'DaskGatewayCluster =!= undefined' -attributes <POLL_PROJECTION>`
          as a subprocess, output discarded: the cost of just asking the schedd.
ours      `tasks.poll.Poller(store, context.schedd(), "local", settings()).poll(force=True)`: the same
          condor_q streamed through the parser into summaries, 200 summaries and the job records written to
          Redis, ended-job check, drift check.
          steady (the figure): what beat repeats every period. Before each poll, 20 of the 200 clusters
          change (50 jobs of 10 clusters held, the 10 held before released; outside the timing), then a bare
          condor_q and our poll run back to back; the figure is the median of the per-pair ratios (pairs
          keep the load of a shared machine out of the ratio).
          first: the first poll of a fresh process with Redis empty (every job record new), printed.
memory    peak RSS growth of a fresh process during its first poll (ru_maxrss after - RSS before), and
          tracemalloc's peak of one poll in another fresh process.

    python bench/poll_100k.py [--jobs 100000] [--per-cluster 500] [--repeat 7]
    python bench/poll_100k.py --profile      # also writes a py-spy profile of one steady poll
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, BenchStack, bare_query, figure, say, steady_polls  # noqa: E402

GOAL_RATIO = 1.5
GOAL_MB = 200


def seed(stack: BenchStack, jobs: int, per: int, owner: str) -> list[str]:
    """Seed the pool; returns the Dask cluster names (one per HTCondor cluster)."""
    attrs = ['DaskGatewayCluster="bench-$(ClusterId)"', 'DaskWorkerName="bench-$(ClusterId)-$(ProcId)"',
             "DaskWorkerIndex=0", f'DaskClusterOwner="{owner}"', 'JobBatchName="bench-$(ClusterId)"']
    held = jobs * 3 // 100
    running = jobs * 12 // 100
    parts = [(jobs - held - running, 1), (running, 2), (held, 5)]
    for count, status in parts:
        argv = [sys.executable, "-m", "htdask_localpool", "seed", str(count), "--procs-per-cluster", str(per),
                "--status", str(status), "--owner", owner]
        for a in attrs:
            argv += ["--attr", a]
        subprocess.run(argv, env=stack.env, cwd=str(REPO), check=True, stdout=subprocess.DEVNULL)
    clusters = sum((count + per - 1) // per for count, _ in parts)
    first = 1  # a fresh pool numbers clusters from 1
    return [f"bench-{c}" for c in range(first, first + clusters)]


def child(polls: int, mode: str) -> None:
    """In a fresh process with the stack's environment: time polls, measure memory; print JSON."""
    import resource

    import psutil

    from htdask.state import Store, connect
    from tasks import context
    from tasks.config import settings
    from tasks.poll import Poller
    poller = Poller(Store(connect()), context.schedd(), "local", settings())
    poller.store.r.ping()
    out: dict = {"seconds": [], "jobs": None}
    if mode == "tracemalloc":
        import tracemalloc
        tracemalloc.start()
        result = poller.poll(force=True)
        out["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out["jobs"] = result.jobs
    elif mode == "profile":
        from bench.profile import Spy, summary
        path = Path(os.environ["BENCH_PROFILE"])
        with Spy(os.getpid(), path, rate=1000):
            result = poller.poll(force=True)
        path.with_suffix(".summary.txt").write_text(summary(path, top=40))
        out["jobs"] = result.jobs
    else:
        rss0 = psutil.Process().memory_info().rss
        for i in range(polls):
            t0 = time.perf_counter()
            result = poller.poll(force=True)
            out["seconds"].append(time.perf_counter() - t0)
            assert result.state == "ok", result
            out["jobs"], out["clusters"], out["reconcile"] = result.jobs, result.clusters, len(result.reconcile)
            if i == 0:
                out["rss_growth_first"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
        out["rss_growth_all"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
        out["rss0"] = rss0
    print("BENCH-RESULT " + json.dumps(out))


def run_child(stack: BenchStack, polls: int, mode: str, extra_env: dict | None = None) -> dict:
    env = {**stack.env, **(extra_env or {})}
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", mode, "--polls", str(polls)],
                         env=env, cwd=str(REPO), capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"poll child failed: {res.stderr[-3000:]}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("BENCH-RESULT ")][-1]
    return json.loads(line[len("BENCH-RESULT "):])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--per-cluster", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--child", choices=["time", "tracemalloc", "profile"])
    ap.add_argument("--polls", type=int, default=1)
    a = ap.parse_args(argv)
    if a.child:
        child(a.polls, a.child)
        return 0

    mb = 2**20
    with BenchStack() as stack:
        stack.activate()
        from htdask.state import Store, connect
        owner = stack.env["DEFAULT_OWNER"]
        t0 = time.perf_counter()
        names = seed(stack, a.jobs, a.per_cluster, owner)
        store = Store(connect(stack.env["REDIS_URL"]))
        for name in names:
            store.record_request(name, a.per_cluster, schedd="local", owner=owner)
        say(f"seeded {a.jobs} jobs in {len(names)} clusters of {a.per_cluster} and recorded them in Redis "
            f"in {time.perf_counter() - t0:.1f} s")

        bare_first = bare_query(stack)
        first = run_child(stack, polls=1, mode="time")
        assert first["jobs"] == a.jobs, first
        first_s = first["seconds"][0]
        say(f"first poll (Redis empty, fresh process): {first_s:.2f} s against {bare_first:.2f} s bare = "
            f"{first_s / bare_first:.2f}x; {first['clusters']} clusters, {first['jobs']} jobs, "
            f"{first['reconcile']} reconciles asked (clusters with held jobs)")
        traced = run_child(stack, polls=1, mode="tracemalloc")

        pairs, change = steady_polls(stack, store, names, a.jobs, a.repeat)
        if a.profile:
            change()
            path = stack.workdir.parent / "poll_100k-profile.txt"
            run_child(stack, polls=1, mode="profile", extra_env={"BENCH_PROFILE": str(path)})
            say(f"profile of one steady poll: {path}")
    say("steady polls (ours / bare): " + ", ".join(f"{o:.2f}/{b:.2f}" for _, o, b in pairs))
    ratio = statistics.median(r for r, _, _ in pairs)
    growth = first["rss_growth_first"] / mb
    say(f"memory: peak RSS growth {growth:.0f} MB in the first poll (RSS before {first['rss0'] / mb:.0f} MB); "
        f"tracemalloc peak of one poll {traced['tracemalloc_peak'] / mb:.0f} MB")
    ok = ratio <= GOAL_RATIO and growth <= GOAL_MB
    figure("poll_100k", f"steady poll {statistics.median(o for _, o, _ in pairs):.2f}s vs "
           f"{statistics.median(b for _, _, b in pairs):.2f}s bare = {ratio:.2f}x (first poll "
           f"{first_s / bare_first:.2f}x), peak growth {growth:.0f} MB", f"<= {GOAL_RATIO}x, <= {GOAL_MB} MB", ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
