"""Benchmark `poll_1m`: a poll of a 1,000,000-job queue of which 10,000 jobs are ours, against a bare
`condor_q -json` with the same constraint, in one run; and the poller's peak memory growth.

setup     `python -m htdask_localpool seed` (one SQLite transaction; ~1.5 s per 100,000 jobs on a quiet 2-core
          machine, so 1,000,000 seed in well under a minute: no cached pool is needed) puts into the
          stack's pool 990,000 never-started jobs of other users without our ClassAds (clusters of 10) and
          10,000 jobs carrying them (20 clusters of 500: 85% idle, 12% running, 3% held, as poll_100k);
          each of our clusters is recorded in Redis with desired = 500 (so the drift check runs).
bare      `condor_q -json -allusers -constraint <ours_constraint()> -attributes <POLL_PROJECTION>` as a
          subprocess, output discarded (bench/common.py bare_query).
ours      `tasks.poll.Poller(...).poll(force=True)`: the same condor_q streamed through the parser into
          summaries, written to Redis, ended-job and drift checks. Steady polls (what beat repeats): before
          each, 50 jobs of 10 of our clusters are held and the previous 10 released (outside the timing),
          then bare and ours run back to back; the figure is the median of the per-pair ratios.
memory    peak RSS growth of a fresh process during its first poll (Redis empty), as poll_100k measures it.

    python bench/poll_1m.py [--jobs 1000000] [--ours 10000] [--per-cluster 500] [--repeat 3]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, BenchStack, bare_query, figure, say, steady_polls  # noqa: E402
from bench.poll_100k import run_child  # noqa: E402

GOAL_RATIO = 1.2
GOAL_MB = 100
SEEDED = re.compile(r"clusters (\d+)\.\.(\d+)")


def seed(stack: BenchStack, count: int, per: int, owner: str, status: int = 1, attrs: list[str] = ()) -> range:
    """`python -m htdask_localpool seed`; the HTCondor cluster ids it used."""
    argv = [sys.executable, "-m", "htdask_localpool", "seed", str(count), "--procs-per-cluster", str(per),
            "--status", str(status), "--owner", owner]
    for a in attrs:
        argv += ["--attr", a]
    out = subprocess.run(argv, env=stack.env, cwd=str(REPO), check=True, capture_output=True, text=True)
    m = SEEDED.search(out.stdout)
    return range(int(m[1]), int(m[2]) + 1)


def seed_ours(stack: BenchStack, jobs: int, per: int, owner: str) -> list[str]:
    """Our jobs in clusters of `per`, each cluster in one status share (85% idle, 12% running, 3% held)."""
    attrs = ['DaskGatewayCluster="bench-$(ClusterId)"', 'DaskWorkerName="bench-$(ClusterId)-$(ProcId)"',
             "DaskWorkerIndex=0", f'DaskClusterOwner="{owner}"', 'JobBatchName="bench-$(ClusterId)"']
    held, running = jobs * 3 // 100, jobs * 12 // 100
    names = []
    for count, status in [(jobs - held - running, 1), (running, 2), (held, 5)]:
        if count:
            names += [f"bench-{c}" for c in seed(stack, count, per, owner, status, attrs)]
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the queue, ours included")
    ap.add_argument("--ours", type=int, default=10_000, help="jobs of ours among them")
    ap.add_argument("--per-cluster", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    mb = 2**20
    with BenchStack() as stack:
        stack.activate()
        from htdask.state import Store, connect
        owner = stack.env["DEFAULT_OWNER"]
        t0 = time.perf_counter()
        others = a.jobs - a.ours
        if others:
            seed(stack, others, 10, "someoneelse")
        foreign_s = time.perf_counter() - t0
        names = seed_ours(stack, a.ours, a.per_cluster, owner)
        store = Store(connect(stack.env["REDIS_URL"]))
        for name in names:
            store.record_request(name, a.per_cluster, schedd="local", owner=owner)
        db = Path(stack.env["LOCALPOOL_DIR"]) / "pool.db"
        say(f"seeded {others} jobs of another user in {foreign_s:.1f} s and {a.ours} of ours in {len(names)} "
            f"clusters ({time.perf_counter() - t0:.1f} s in all; pool.db {db.stat().st_size / mb:.0f} MB)")

        bare_first = bare_query(stack)
        first = run_child(stack, polls=1, mode="time")
        if first["jobs"] != a.ours:
            raise RuntimeError(f"first poll saw {first['jobs']} jobs of ours, not {a.ours}")
        first_s = first["seconds"][0]
        say(f"first poll (Redis empty, fresh process): {first_s:.2f} s against {bare_first:.2f} s bare = "
            f"{first_s / bare_first:.2f}x")

        pairs, _ = steady_polls(stack, store, names, a.ours, a.repeat)
    say("steady polls (ours / bare): " + ", ".join(f"{o:.2f}/{b:.2f}" for _, o, b in pairs))
    ratio = statistics.median(r for r, _, _ in pairs)
    growth = first["rss_growth_first"] / mb
    say(f"memory: peak RSS growth {growth:.0f} MB in the first poll (RSS before {first['rss0'] / mb:.0f} MB)")
    ok = ratio <= GOAL_RATIO and growth <= GOAL_MB
    figure("poll_1m", f"steady poll {statistics.median(o for _, o, _ in pairs):.2f}s vs "
           f"{statistics.median(b for _, _, b in pairs):.2f}s bare = {ratio:.2f}x for {a.ours} of {a.jobs} jobs "
           f"(first poll {first_s / bare_first:.2f}x), peak growth {growth:.0f} MB",
           f"<= {GOAL_RATIO}x, <= {GOAL_MB} MB", ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
