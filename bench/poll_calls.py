"""Benchmark `poll_calls`: 50 clusters; condor_q calls per beat tick and poll wall time, ours against
one query per cluster, on one local pool and a real Redis, in one run.

setup     50 clusters of 2 workers each, created through the real Celery path (`enqueue_scale`).
ours      calls: Celery beat (POLL_INTERVAL=2) sends `tasks.poll_queue` to the worker for a few ticks;
          every schedd call logged in the pool's calls.log during those ticks, divided by the ticks.
          wall time: `tasks.poll.Poller(...).poll(force=True)` in this process with the worker's schedd
          (context.schedd()) and the stack's Redis: condor_q, parse, summaries, job records written.
baseline  one `condor_q -allusers -json -constraint 'DaskGatewayCluster == "cN"' -attributes <POLL_PROJECTION>`
          per cluster (50 calls), each output parsed with json.loads, nothing written anywhere; run one
          after the other and all at once (asyncio); the wall ratio is taken against the faster.

    python bench/poll_calls.py [--clusters 50] [--per-cluster 2] [--ticks 4] [--repeat 3]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (BenchStack, against_faster_baseline, figure, results_and_rounds, say,  # noqa: E402
                          wait_until)
from htdask.demo import services  # noqa: E402

SCHEDD_CALLS = ("condor_q", "condor_history", "condor_submit", "condor_rm", "condor_hold", "condor_release")


def setup_clusters(stack: BenchStack, clusters: int, per: int) -> list[str]:
    from htdask.state import Store, connect
    from tasks import api
    store = Store(connect(stack.env["REDIS_URL"]))
    names = [f"c{i}" for i in range(clusters)]
    results_and_rounds(store, [api.enqueue_scale(store, name, per).task_id for name in names], timeout=300)
    return names


def beat_ticks(stack: BenchStack, ticks: int) -> tuple[int, dict[str, int], list[float]]:
    """Run beat for `ticks` sends of poll-local; (ticks seen, schedd calls by command, poll seconds)."""
    from tasks.app import app
    log = stack.logdir / "beat-bench.log"
    mark = time.time()
    beat = services.celery_beat(stack.env, stack.logdir, name="beat-bench")
    try:
        def sent() -> int:
            return log.read_text(errors="replace").count("Sending due task poll-") if log.exists() else 0
        wait_until(lambda: sent() >= ticks, timeout=ticks * 2 * 2 + 30, interval=0.1, what=f"{ticks} beat ticks")
    finally:
        beat.stop()
    seen = sent()
    # Let the last poll finish: the worker's queue empty and no task running.
    insp = app.control.inspect(timeout=1.0)
    wait_until(lambda: not any((insp.active() or {}).values()), timeout=30, what="idle worker")
    time.sleep(0.5)
    by_cmd: dict[str, int] = {}
    for row in stack.calls_since(mark, SCHEDD_CALLS):
        by_cmd[row[1]] = by_cmd.get(row[1], 0) + 1
    worker_log = "\n".join((stack.logdir / f"{w.name}.log").read_text(errors="replace") for w in stack.workers)
    seconds = [float(x.split("polled")[1].split(" in ")[1].split("s")[0])
               for x in worker_log.splitlines() if "schedd local: polled" in x]
    return seen, by_cmd, seconds[-seen:]


def ours_poll(stack: BenchStack) -> tuple[float, int, int]:
    from htdask.state import Store, connect
    from tasks import context
    from tasks.config import settings
    from tasks.poll import Poller
    poller = Poller(Store(connect(stack.env["REDIS_URL"])), context.schedd(), "local", settings())
    mark = time.time()
    t0 = time.perf_counter()
    result = poller.poll(force=True)
    seconds = time.perf_counter() - t0
    assert result.state == "ok", result
    return seconds, len(stack.calls_since(mark, SCHEDD_CALLS)), result.jobs


async def _one_query(cluster: str, projection: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        "condor_q", "-allusers", "-json", "-constraint", f'DaskGatewayCluster == "{cluster}"',
        "-attributes", projection, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err.decode())
    return len(json.loads(out)) if out.strip() else 0


def baseline_poll(stack: BenchStack, names: list[str], concurrent: bool) -> tuple[float, int, int]:
    from htdask.domain.jobspec import POLL_PROJECTION
    projection = ",".join(POLL_PROJECTION)

    async def run():
        if concurrent:
            return await asyncio.gather(*(_one_query(n, projection) for n in names))
        return [await _one_query(n, projection) for n in names]

    mark = time.time()
    t0 = time.perf_counter()
    counts = asyncio.run(run())
    seconds = time.perf_counter() - t0
    return seconds, len(stack.calls_since(mark, SCHEDD_CALLS)), sum(counts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=50)
    ap.add_argument("--per-cluster", type=int, default=2)
    ap.add_argument("--ticks", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    jobs_total = a.clusters * a.per_cluster
    with BenchStack(POLL_INTERVAL="2") as stack:
        stack.activate()
        t0 = time.perf_counter()
        names = setup_clusters(stack, a.clusters, a.per_cluster)
        say(f"setup: {a.clusters} clusters x {a.per_cluster} jobs through Celery in {time.perf_counter() - t0:.1f} s")

        ticks, by_cmd, tick_seconds = beat_ticks(stack, a.ticks)
        total = sum(by_cmd.values())
        per_tick = total / ticks
        say(f"beat: {ticks} ticks of tasks.poll_queue, schedd calls {by_cmd} = {per_tick:.2f} per tick"
            + (f"; the worker's polls took {', '.join(f'{s:.2f}' for s in tick_seconds)} s" if tick_seconds else ""))

        os.environ["PATH"] = stack.env["PATH"]
        times = {"ours": [], "sequential": [], "concurrent": []}
        calls = {k: [] for k in times}
        for r in range(a.repeat):
            for kind in times:
                if kind == "ours":
                    t, c, n = ours_poll(stack)
                else:
                    t, c, n = baseline_poll(stack, names, concurrent=kind == "concurrent")
                assert n == jobs_total, (kind, n, jobs_total)
                times[kind].append(t)
                calls[kind].append(c)
                say(f"round {r + 1} {kind:<10}: {c:3d} schedd calls, {n} jobs, {t:6.3f} s")
    med, base, to, tb = against_faster_baseline(times)
    say(f"median poll wall time: ours {to:.3f} s (full poll, Redis written); one query per cluster "
        f"{med['sequential']:.3f} s sequential, {med['concurrent']:.3f} s concurrent; ratio against the faster "
        f"({base}) {to / tb:.3f}x, {tb / to:.0f}x faster")
    # A tick whose poll finds the previous one under half a period old skips itself (0 calls): at most 1.
    ok = 1 <= by_cmd.get("condor_q", 0) and total <= ticks and max(calls["ours"]) == 1
    figure("poll_calls", f"{per_tick:g} vs {a.clusters} condor_q per tick; poll {to:.2f}s vs {tb:.2f}s = {to / tb:.3f}x",
           "1 call", ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
