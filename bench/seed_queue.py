"""Benchmark: condor_q -json on a big local-pool queue (what the controller's poll costs).

Seeds N never-started jobs that look like dask-gateway workers into a local pool (a fresh
temporary one unless --pool-dir is given), then times (best of R runs) the controller's query

    condor_q -json -allusers -constraint 'DaskGatewayCluster =!= undefined' -attributes <8 attrs>

through the real htdask_localpool/bin/condor_q program, and prints the result.

    python bench/seed_queue.py [--jobs 100000] [--per-cluster 50] [--repeat 3] [--pool-dir DIR] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POOL_BIN = REPO / "htdask_localpool" / "bin"
ATTRS = "ClusterId,ProcId,JobStatus,Owner,DaskGatewayCluster,DaskWorkerName,DaskWorkerIndex,EnteredCurrentStatus"
GOAL_S = 3.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--per-cluster", type=int, default=50, help="procs per cluster")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pool-dir", help="seed into this pool (default: a fresh temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary pool")
    a = ap.parse_args()

    tmp = None if a.pool_dir else tempfile.mkdtemp(prefix="localpool-bench-")
    env = dict(os.environ)
    env["LOCALPOOL_DIR"] = a.pool_dir or str(Path(tmp) / "pool")
    env["LOCALPOOL_SLOTS"] = "0"  # nothing is started anyway; keep the runner idle
    env["PATH"] = f"{POOL_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "htdask_localpool", "seed", str(a.jobs),
                        "--procs-per-cluster", str(a.per_cluster),
                        "--attr", 'DaskGatewayCluster="bench-$(ClusterId)"',
                        "--attr", 'DaskWorkerName="bench-$(ClusterId)-$(ProcId)"',
                        "--attr", "DaskWorkerIndex=0", "--attr", 'DaskClusterOwner="alice"',
                        "--attr", 'JobBatchName="bench"'],
                       env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        seeded = time.perf_counter() - t0
        argv = ["condor_q", "-json", "-allusers", "-constraint", "DaskGatewayCluster =!= undefined",
                "-attributes", ATTRS]
        times, size, count = [], 0, 0
        for _ in range(max(1, a.repeat)):
            t0 = time.perf_counter()
            res = subprocess.run(argv, env=env, capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
            size = len(res.stdout)
        count = len(json.loads(res.stdout)) if res.stdout else 0
        best = min(times)
        print(f"seeded {a.jobs} jobs in {seeded:.2f}s")
        print(f"condor_q -json -constraint ... -attributes <8>: {count} ads, {size / 1e6:.1f} MB, "
              f"best {best:.2f}s of {len(times)} (all: {', '.join(f'{t:.2f}' for t in times)}) "
              f"-- goal < {GOAL_S:.0f}s: {'OK' if best < GOAL_S else 'SLOW'}")
        return 0 if best < GOAL_S else 1
    finally:
        subprocess.run([sys.executable, "-m", "htdask_localpool", "stop"], env=env, cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if tmp and not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
