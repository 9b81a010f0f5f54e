"""Bounded soak: random scale requests under random faults, then the invariants.

    python bench/soak.py [--seconds 120] [--clusters 5] [--seed N] [--sentinel]

Runs a Stack (redis-server, local pool, two Celery workers, beat polling every 2 s) and for --seconds
sends random scale requests to a few clusters while injecting faults: failing and slow condor_submit,
failing condor_q, held jobs, jobs removed behind our back, and a Celery worker SIGKILLed and replaced.
Then it clears the faults, lets the controller converge, and checks from the pool's own condor_q:

- count = desired: every cluster runs exactly its last requested count;
- no duplicate names: no two jobs in the queue share a cluster's worker name;
- no orphan job: every job with our marker belongs to a cluster we know;
- no lost request: every cluster's recorded desired count is the last one sent.

With --sentinel (bench/soak_sentinel.py) Redis is a Sentinel set (a master, a replica, three sentinels,
harness/sentinel.py) and, half-way, the master is SIGKILLed; it comes back 10 s later and rejoins as a
replica. A request that fails meanwhile is sent again (as a user re-runs a command that printed an
error); only requests that were taken count as sent.

Stops by itself; stops every process it started.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.sentinel import SentinelSet  # noqa: E402
from htdask.demo.services import FAKE_WORKER, REPO, Stack  # noqa: E402
from htdask.demo.users import ensure_user  # noqa: E402

SOAK_USER = "htdask-soak"


def soak_user() -> str | None:
    """As root, jobs run as an unprivileged account (the controller never submits as root)."""
    if os.geteuid() != 0:
        return None
    ensure_user(SOAK_USER)
    return SOAK_USER


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--clusters", type=int, default=5)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--sentinel", action="store_true", help="Redis Sentinel; SIGKILL the master half-way")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    user = soak_user()
    env = dict(POLL_INTERVAL="2", SCHEDD_MIN_INTERVAL="0.05", TASK_MAX_RETRIES="8", RETRY_BACKOFF_MAX="2",
               ERROR_RETRY_INTERVAL="3", CONDOR_TIMEOUT="20", DASK_WORKER_COMMAND=str(FAKE_WORKER),
               DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786", HOLD_RELEASE_LIMIT="1")
    if user:
        env["DEFAULT_OWNER"] = user
    figure = "soak_sentinel" if a.sentinel else "soak"
    print(f"{figure}: seed {a.seed}, {a.seconds:.0f}s, {a.clusters} clusters", flush=True)
    sentinels = SentinelSet(password=f"soak{a.seed}") if a.sentinel else None
    with Stack(beat=True, redis=sentinels, **env) as stack:
        stack.start_worker("worker2")
        os.environ.update(stack.env)
        from htdask.state import Store, connect
        from tasks import api
        store = Store(connect(stack.redis.url))
        names = [f"soak-{i}" for i in range(a.clusters)]
        last: dict[str, int] = {}
        stats = Counter()
        master_kill = time.monotonic() + a.seconds / 2 if sentinels else None
        killed_port = rejoin_at = None
        failover: list[float] = []

        def fault(*args: str) -> None:
            subprocess.run([sys.executable, "-m", "htdask_localpool", "fault", *args], env=stack.env, cwd=REPO,
                           check=True, capture_output=True, timeout=30)
            stats["faults"] += 1

        deadline = time.monotonic() + a.seconds
        next_kill = time.monotonic() + a.seconds / 3
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < 0.70:
                cluster, n = rng.choice(names), rng.randint(0, 12)
                if _send(api, store, cluster, n, stats):
                    last[cluster] = n
                    stats["requests"] += 1
            elif roll < 0.78:
                fault("submit-fail", str(rng.randint(1, 2)))
            elif roll < 0.84:
                fault("query-fail", str(rng.randint(1, 3)))
            elif roll < 0.88:
                fault("submit-delay", rng.choice(["0", "0", "1.5"]))
            elif roll < 0.92:
                fault("hold-next", "1")
            else:
                _remove_one_behind_our_back(stack, rng, stats)
            if master_kill and time.monotonic() > master_kill:
                killed_port, master_kill, rejoin_at = sentinels.kill_master(), None, time.monotonic() + 10
                threading.Thread(target=lambda: failover.append(sentinels.wait_failover(killed_port)),
                                 daemon=True).start()
                stats["master kills"] += 1
            if rejoin_at and time.monotonic() > rejoin_at:
                sentinels.server(killed_port).start()  # the sentinels make it a replica of the new master
                rejoin_at = None
            if time.monotonic() > next_kill:
                victim = stack.workers.pop(0)
                victim.kill(signal.SIGKILL)
                victim.popen.wait(10)
                stack.start_worker(f"worker{stats['kills'] + 3}")
                stats["kills"] += 1
                next_kill = time.monotonic() + a.seconds / 3
            time.sleep(rng.uniform(0.05, 0.4))
        fault("clear")
        print(f"{figure}: {stats['requests']} requests, {stats['faults']} faults, {stats['kills']} worker kills, "
              f"{stats['removed']} jobs removed behind our back, {stats['master kills']} Redis master kills "
              f"(failover {failover[0] if failover else float('nan'):.1f}s), {stats['retries']} requests sent "
              "again; converging", flush=True)
        converged = _converge(stack, store, last, timeout=180)
        results = _invariants(stack, store, last)
    for name, ok, detail in results:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")
    passed = sum(ok for _, ok, _ in results)
    status = "ok" if passed == len(results) and converged else "MISSED"
    extra = (f", master SIGKILLed {stats['master kills']}x, failover {failover[0] if failover else float('nan'):.1f}s"
             if a.sentinel else "")
    print(f"{figure}: {passed}/{len(results)} invariants after {stats['requests']} requests and "
          f"{stats['faults']} faults{extra} (goal: {len(results)}/{len(results)} invariants, 0 lost requests) {status}")
    return 0


def _send(api, store, cluster: str, n: int, stats: Counter, patience: float = 60.0) -> bool:
    """Send a scale request until it is taken (True); a Redis or broker error means not taken: again."""
    deadline = time.monotonic() + patience
    while True:
        try:
            api.enqueue_scale(store, cluster, n)
            return True
        except Exception as exc:
            if time.monotonic() > deadline:
                print(f"soak: request {cluster}={n} not taken for {patience:.0f}s: {exc}", flush=True)
                return False
            stats["retries"] += 1
            time.sleep(0.2)


def _jobs(stack: Stack) -> list[dict]:
    from workers.htcondor.queue_parser import parse_ads_text
    out = stack.condor("condor_q", "-allusers", "-json", "-constraint", "DaskGatewayCluster =!= undefined",
                       "-attributes", "ClusterId,ProcId,JobStatus,DaskGatewayCluster,DaskWorkerName")
    if out.returncode != 0:
        return []
    return parse_ads_text(out.stdout)


def _remove_one_behind_our_back(stack: Stack, rng: random.Random, stats: Counter) -> None:
    jobs = [j for j in _jobs(stack) if j["JobStatus"] == 2]
    if jobs:
        j = rng.choice(jobs)
        stack.condor("condor_rm", f"{j['ClusterId']}.{j['ProcId']}")
        stats["removed"] += 1


def _live_by_cluster(stack: Stack) -> Counter:
    return Counter(j["DaskGatewayCluster"] for j in _jobs(stack) if j["JobStatus"] in (1, 2, 5))


def _converge(stack: Stack, store, last: dict[str, int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = _live_by_cluster(stack)
        if all(live.get(c, 0) == n for c, n in last.items()):
            time.sleep(3)  # and it stays there
            if _live_by_cluster(stack) == live:
                return True
        time.sleep(1)
    return False


def _invariants(stack: Stack, store, last: dict[str, int]) -> list[tuple[str, bool, str]]:
    jobs = _jobs(stack)
    live = Counter(j["DaskGatewayCluster"] for j in jobs if j["JobStatus"] in (1, 2, 5))
    wrong = {c: (live.get(c, 0), n) for c, n in last.items() if live.get(c, 0) != n}
    names = Counter((j["DaskGatewayCluster"], j["DaskWorkerName"]) for j in jobs)
    dups = [k for k, v in names.items() if v > 1]
    orphans = [j for j in jobs if j["DaskGatewayCluster"] not in last]
    recorded = {c: (store.get(c).desired if store.get(c) else None) for c in last}
    lost = {c: (recorded[c], n) for c, n in last.items() if recorded[c] != n}
    return [
        ("count = desired", not wrong, f"{sum(live.values())} live jobs" + (f"; wrong (live, desired): {wrong}"
                                                                             if wrong else "")),
        ("no duplicate names", not dups, f"{len(names)} names" + (f"; duplicated: {dups[:5]}" if dups else "")),
        ("no orphan job", not orphans, f"{len(orphans)} orphans"),
        ("no lost request", not lost, f"{len(last)} clusters" + (f"; (recorded, sent): {lost}" if lost else "")),
    ]


if __name__ == "__main__":
    sys.exit(main())
