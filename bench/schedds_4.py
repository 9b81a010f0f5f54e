"""Benchmark `schedds_4`: 4 schedds (4 queues, 4 Celery workers, 4 local pools, one Redis), 1,000 clusters
of 3 workers spread over them, until every cluster has its 3 jobs; against the same work done as one bare
`condor_submit` per cluster, in one run.

setup     One BenchStack (one Redis); for each schedd s0..s3 a Celery worker consuming queue `sK`
          (SCHEDD_NAME=sK) with its own pool (LOCALPOOL_DIR=<workdir>/pool-sK): the product's deployment
          of one worker per submit node. LOCALPOOL_SLOTS=0: jobs stay idle.
ours      `tasks.api.enqueue_scale(store, "cI", 3, schedd="s{I % 4}")` for I in 0..999, as fast as one
          client sends them, until every task's result is in and every schedd's batched rounds have
          ended; then, outside the timing, each cluster's jobs are counted in its schedd's queue: all
          exact means 3 jobs with 3 distinct names for every cluster and no job anywhere else.
bare      for each cluster one `condor_submit -terse FILE` (FILE = the description our reconcile writes
          for its 3 workers, bench.common.bare_description, written before the clock starts) to its
          schedd, as the same user; one thread per schedd, each submitting its clusters one after the
          other (4 streams at once, as 4 submit nodes would).
Reported per schedd: condor_submit and condor_q calls (from its pool's calls.log), the batched rounds its
worker ran (its log's "reconciled N clusters in one round" lines) and condor_q per round.

    python bench/schedds_4.py [--clusters 1000] [--workers 3] [--schedds 4]
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (BenchStack, bare_description, bare_submit, calls_in, figure,  # noqa: E402
                          results_and_rounds, say, wait_worker_ready)
from htdask.demo.services import stop_pool  # noqa: E402

GOAL_RATIO = 0.5


def queue_by_cluster(stack: BenchStack, pool_dir: str, constraint: str) -> dict[str, set[str]]:
    import subprocess
    out = subprocess.run([str(stack.pool_bin / "condor_q"), "-allusers", "-json", "-constraint", constraint,
                          "-attributes", "DaskGatewayCluster,DaskWorkerName"],
                         env={**stack.env, "LOCALPOOL_DIR": pool_dir}, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    by: dict[str, set[str]] = {}
    for ad in json.loads(out.stdout) if out.stdout.strip() else []:
        by.setdefault(ad["DaskGatewayCluster"], set()).add(ad["DaskWorkerName"])
    return by


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--schedds", type=int, default=4)
    a = ap.parse_args(argv)
    schedds = [f"s{k}" for k in range(a.schedds)]
    with BenchStack() as stack:
        pools = {s: str(stack.workdir / f"pool-{s}") for s in schedds}
        try:
            started = [stack.start_worker(name=f"schedd-{s}", wait=False, SCHEDD_NAME=s, LOCALPOOL_DIR=pools[s])
                       for s in schedds]
            for proc in started:
                wait_worker_ready(stack, proc)
            stack.activate()
            from htdask.state import Store, connect
            from tasks import api
            store = Store(connect(stack.env["REDIS_URL"]))
            owner = stack.env["DEFAULT_OWNER"]
            clusters = {s: [f"c{i}" for i in range(a.clusters) if i % a.schedds == k] for k, s in enumerate(schedds)}

            # warm up each schedd's worker and pool outside the measurement
            for s in schedds:
                results_and_rounds(store, [api.enqueue_scale(store, f"warm-{s}", 1, schedd=s).task_id], s, 120)

            # ours
            logs = {s: stack.logdir / f"schedd-{s}.log" for s in schedds}
            log_at = {s: len(logs[s].read_text(errors="replace")) for s in schedds}
            mark = time.time()
            t0 = time.perf_counter()
            ids = [api.enqueue_scale(store, c, a.workers, schedd=s).task_id
                   for i in range(a.clusters) for s in [schedds[i % a.schedds]] for c in [f"c{i}"]]
            enqueue_s = time.perf_counter() - t0
            from tasks.app import app
            for t in ids:
                app.AsyncResult(t).get(timeout=900)
            for s in schedds:
                results_and_rounds(store, [], s, 900)
            ours_s = time.perf_counter() - t0
            end = time.time()

            # bare: one condor_submit per cluster, one stream per schedd
            texts = {s: [bare_description(f"b{c}", owner, [(j, f"b{c}-{j}") for j in range(a.workers)])
                         for c in clusters[s]] for s in schedds}
            errors: list[BaseException] = []

            def stream(s: str) -> None:
                try:
                    for text in texts[s]:
                        if len(bare_submit(stack, text, owner, pools[s])) != a.workers:
                            raise RuntimeError("wrong number of job ids")
                except BaseException as e:  # reported below
                    errors.append(e)
            threads = [threading.Thread(target=stream, args=(s,)) for s in schedds]
            t0 = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            bare_s = time.perf_counter() - t0
            if errors:
                raise errors[0]

            exact = True
            rows = []
            for s in schedds:
                ours_q = queue_by_cluster(stack, pools[s], 'regexp("^c[0-9]+$", DaskGatewayCluster)')
                bare_q = queue_by_cluster(stack, pools[s], 'regexp("^bc[0-9]+$", DaskGatewayCluster)')
                want = set(clusters[s])
                good = (set(ours_q) == want and all(len(v) == a.workers for v in ours_q.values())
                        and len(bare_q) == len(want))
                exact &= good
                calls = [r for r in calls_in(pools[s], mark) if float(r[0]) <= end]
                q = [float(r[0]) for r in calls if r[1] == "condor_q"]
                sub = [float(r[0]) for r in calls if r[1] == "condor_submit"]
                rounds = logs[s].read_text(errors="replace")[log_at[s]:].count("clusters in one round")
                rows.append((s, len(want), len(sub), len(q)))
                say(f"schedd {s}: {len(want)} clusters, {sum(len(v) for v in ours_q.values())} jobs of ours "
                    f"({'exact' if good else 'NOT EXACT'}); {len(sub)} condor_submit, {len(q)} condor_q in "
                    f"{rounds} batched rounds = {len(q) / max(rounds, 1):.2f} condor_q per round")
        finally:
            for s in schedds:
                stop_pool({**stack.env, "LOCALPOOL_DIR": pools[s]})
    ratio = ours_s / bare_s
    say(f"ours: {a.clusters} requests enqueued in {enqueue_s:.2f} s, all at desired after {ours_s:.2f} s; bare: "
        f"{a.clusters} condor_submit in {bare_s:.2f} s ({a.schedds} streams)")
    subs, qs = sum(r[2] for r in rows), sum(r[3] for r in rows)
    figure("schedds_4", f"{ours_s:.2f}s vs {bare_s:.2f}s bare = {ratio:.2f}x, {a.clusters} clusters x {a.workers} "
           f"on {a.schedds} schedds {'all exact' if exact else 'NOT exact'}; {subs} condor_submit, {qs} condor_q "
           f"(per schedd {'/'.join(str(r[3]) for r in rows)})", f"all exact, <= {GOAL_RATIO}x", exact and ratio <= GOAL_RATIO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
