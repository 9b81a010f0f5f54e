"""Benchmark `burst`: 200 scale requests to one cluster within a second; schedd calls and final exactness.

The requests come from one client through the real enqueue path (`tasks.api.enqueue_scale`) as fast as
it can send them (the enqueue time is printed and must be under a second), with counts jumping around
in 0..20 (a fixed pseudo-random sequence, as an over-eager adaptive scaler would send) and the last one
at 7. A Celery worker of concurrency 2 consumes them. When every task has finished, the cluster must have
exactly the last request's count of live jobs, all with distinct names, and must still have it 2 s
later. The call count is read from the pool's calls.log: the figure counts the calls that change the
queue (condor_submit, condor_rm, condor_hold, condor_release); condor_q reads are printed as well.

Without reconciliation (one schedd call per request, as a per-request submitter does), the same burst
costs one call per request that changes the count: printed as the baseline.

    python bench/burst.py [--requests 200] [--max 20] [--last 7] [--rounds 3]
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchStack, figure, results_and_rounds, say  # noqa: E402

CHANGES = ("condor_submit", "condor_rm", "condor_hold", "condor_release")


def counts_for(requests: int, top: int, last: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(0, top) for _ in range(requests - 1)] + [last]


def live_jobs(stack: BenchStack, cluster: str) -> list[dict]:
    import json
    out = stack.condor("condor_q", "-allusers", "-json", "-constraint", f'DaskGatewayCluster == "{cluster}"',
                       "-attributes", "ClusterId,ProcId,JobStatus,DaskWorkerName")
    ads = json.loads(out.stdout) if out.stdout.strip() else []
    return [a for a in ads if a["JobStatus"] in (1, 2, 5, 7)]


def one_burst(stack: BenchStack, cluster: str, counts: list[int]) -> dict:
    from htdask.state import Store, connect
    from tasks import api
    store = Store(connect(stack.env["REDIS_URL"]))
    mark = time.time()
    t0 = time.perf_counter()
    ids = [api.enqueue_scale(store, cluster, n).task_id for n in counts]
    enqueue_s = time.perf_counter() - t0
    results = results_and_rounds(store, ids, timeout=300)
    settle_s = time.perf_counter() - t0
    end = time.time()
    rows = [r for r in stack.calls() if mark <= float(r[0]) <= end]
    changes = sum(1 for r in rows if r[1] in CHANGES)
    queries = sum(1 for r in rows if r[1] == "condor_q")
    by_cmd: dict[str, int] = {}
    for r in rows:
        by_cmd[r[1]] = by_cmd.get(r[1], 0) + 1
    jobs = live_jobs(stack, cluster)
    time.sleep(2.0)
    later = live_jobs(stack, cluster)
    names = [j["DaskWorkerName"] for j in later]
    exact = len(jobs) == counts[-1] == len(later) and len(set(names)) == len(names)
    queued = sum(1 for r in results if r.get("state") == "queued")
    return {"enqueue_s": enqueue_s, "settle_s": settle_s, "changes": changes, "queries": queries,
            "by_cmd": by_cmd, "live": len(later), "exact": exact, "queued": queued,
            "naive": sum(1 for prev, n in zip([0] + counts, counts) if n != prev)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--max", type=int, default=20)
    ap.add_argument("--last", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    worst, max_enqueue = None, 0.0
    with BenchStack() as stack:
        stack.activate()
        stack.condor("condor_q")  # starts the pool's runner outside the measurement
        for r in range(1, a.rounds + 1):
            counts = counts_for(a.requests, a.max, a.last, seed=r)
            res = one_burst(stack, f"burst{r}", counts)
            say(f"round {r}: {a.requests} requests enqueued in {res['enqueue_s']:.2f} s, all done after "
                f"{res['settle_s']:.2f} s ({res['queued']} returned at once, left to a batched round); "
                f"schedd calls {res['by_cmd']}; {res['live']} live jobs for a last request of {counts[-1]}, "
                f"{'exact' if res['exact'] else 'NOT EXACT'}; one call per changing request would be "
                f"{res['naive']} calls")
            if worst is None or (res["changes"], not res["exact"]) > (worst["changes"], not worst["exact"]):
                worst = res
            max_enqueue = max(max_enqueue, res["enqueue_s"])
    ok = worst["changes"] <= 3 and worst["exact"] and max_enqueue < 1.0
    figure("burst", f"{worst['changes']} queue-changing calls (+{worst['queries']} condor_q) for {a.requests} "
           f"requests vs {worst['naive']} one-per-request, {'exact' if worst['exact'] else 'NOT exact'}",
           "<= 3 calls, exact", ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
