"""Benchmark `lone_request_latency`: how long a lone `scale` request waits before its `condor_submit`
starts, against how long a no-op Celery task waits before it starts, on the same worker, in one run.

ours      `tasks.api.enqueue_scale(store, "loneN", 1)` for a new cluster, nothing else in flight: from
          just before the enqueue (client clock) to the moment the worker starts the `condor_submit`
          that serves it: the worker log's "cluster loneN: submitting" line (ms resolution), written
          just before the call, the point where tasks/reconcile.py records its request-to-submit
          metric. Also printed: to the local pool program's own calls.log line, which adds the start-up
          of the pool's Python `condor_submit` launcher (a real condor_submit is a native program).
          Product defaults (SCHEDD_MIN_INTERVAL=0.1 included).
anchor    `app.send_task("bench.noop")` (bench/noop_tasks.py): from just before the send to the moment the
          task body starts (`started` in its result). Celery's own floor: broker, prefetch, worker pool.
Requests alternate anchor / ours, one at a time, each waited for (result in, batched rounds ended),
then a 0.2 s pause, so each is alone. p50 and p99 (nearest rank; p99 of 30 is the worst) of each.

The same run also sends one `burst` (bench/burst.py: 200 requests to one cluster within a second) to show
that fast lone requests did not cost the coalescing of bursts: queue-changing calls must stay <= 3 and
the cluster exact.

    python bench/lone_request_latency.py [--requests 30] [--burst 200]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchStack, figure, percentile, results_and_rounds, say  # noqa: E402

GOAL_MS = 100.0  # p50 <= anchor p50 + 100 ms
GOAL_BURST = 3


def submit_started(stack: BenchStack, cluster: str) -> float:
    """Epoch time of the worker's "cluster NAME: submitting" log line (Celery's local-time asctime)."""
    needle = f"cluster {cluster}: submitting "
    for proc in stack.workers:
        for line in (stack.logdir / f"{proc.name}.log").read_text(errors="replace").splitlines():
            if needle in line and line.startswith("["):
                stamp = line[1:].split(":", 3)
                return datetime.strptime(":".join(stamp[:3]), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise RuntimeError(f"cluster {cluster}: no 'submitting' line in the worker logs")


def lone_scale(stack: BenchStack, store, i: int) -> tuple[float, float]:
    """Seconds from the enqueue of a lone scale request to the worker starting its condor_submit, and to
    the pool's condor_submit program logging its call."""
    from tasks import api
    cluster = f"lone{i}"
    t0 = time.time()
    task_id = api.enqueue_scale(store, cluster, 1).task_id
    results_and_rounds(store, [task_id], timeout=120)
    submits = [r for r in stack.calls_since(t0, "condor_submit")]
    if len(submits) != 1:
        raise RuntimeError(f"cluster {cluster}: {len(submits)} condor_submit calls for one request")
    return submit_started(stack, cluster) - t0, float(submits[0][0]) - t0


def noop(i: int) -> float:
    """Seconds from sending a no-op task to the start of its body."""
    from tasks.app import app
    t0 = time.time()
    result = app.send_task("bench.noop", kwargs={"cluster": f"n{i}", "n": 0, "seq": i}, queue="local")
    return result.get(timeout=60)["started"] - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--burst", type=int, default=200, help="requests of the burst check (0: skip it)")
    a = ap.parse_args(argv)
    ours: list[float] = []
    program: list[float] = []
    anchor: list[float] = []
    burst = None
    with BenchStack() as stack:
        stack.activate()
        from htdask.state import Store, connect
        store = Store(connect(stack.env["REDIS_URL"]))
        stack.condor("condor_q")  # starts the pool's runner outside the measurement
        noop(-1)
        lone_scale(stack, store, -1)  # warm up: worker processes, connections, the pool's programs
        time.sleep(0.2)
        for i in range(a.requests):
            anchor.append(noop(i))
            time.sleep(0.2)
            started, logged = lone_scale(stack, store, i)
            ours.append(started)
            program.append(logged)
            time.sleep(0.2)
        if a.burst:
            from bench.burst import counts_for, one_burst
            burst = one_burst(stack, "burst1", counts_for(a.burst, 20, 7, seed=1))
            say(f"burst: {a.burst} requests enqueued in {burst['enqueue_s']:.2f} s; schedd calls {burst['by_cmd']}; "
                f"{burst['live']} live jobs for a last request of 7, {'exact' if burst['exact'] else 'NOT EXACT'}")
    ms = 1000.0
    o50, o99 = statistics.median(ours) * ms, percentile(ours, 99) * ms
    a50, a99 = statistics.median(anchor) * ms, percentile(anchor, 99) * ms
    say("enqueue -> condor_submit started (ms): " + ", ".join(f"{x * ms:.0f}" for x in ours))
    say("no-op enqueue -> start (ms):           " + ", ".join(f"{x * ms:.0f}" for x in anchor))
    say(f"to the pool program's calls.log line instead (adds its Python launcher's start-up): p50 "
        f"{statistics.median(program) * ms:.0f} ms, p99 {percentile(program, 99) * ms:.0f} ms")
    ok = o50 <= a50 + GOAL_MS
    value = (f"p50 {o50:.0f} ms, p99 {o99:.0f} ms vs no-op p50 {a50:.0f} ms, p99 {a99:.0f} ms "
             f"({len(ours)} requests)")
    if burst is not None:
        ok = ok and burst["changes"] <= GOAL_BURST and burst["exact"]
        value += f"; burst {burst['changes']} calls, {'exact' if burst['exact'] else 'NOT exact'}"
    figure("lone_request_latency", value, f"p50 <= no-op p50 + {GOAL_MS:.0f} ms, burst <= {GOAL_BURST} calls", ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
