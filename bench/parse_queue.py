"""Benchmark: streaming condor_q -json parser + summarize vs json.loads of the same bytes.

Builds a 100,000-ad `condor_q -json` output in HTCondor's layout ("[\\n", ads as "{\\n  \\"A\\": v,...\\n}"
with attributes sorted case-insensitively, separated by "\\n,\\n", then "\\n]\\n"; strings escaped
with "\\/" as the ClassAd JSON unparser does), then measures wall time (best of N, without tracing)
and peak traced memory (tracemalloc) of
  a) json.loads(data)                                  -- every ad at once
  b) summarize(parse_ads(BytesIO(data)))              -- one ad at a time into per-cluster summaries
A benchmark, not a test:  python bench/parse_queue.py [--ads N] [--repeat R]
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from workers.htcondor.queue_parser import parse_ads  # noqa: E402
from htdask.domain.summary import summarize  # noqa: E402

GOAL_TIME = 1.5
GOAL_MEM = 0.5

HOLD_REASONS = [
    "Error from slot1_3@node17.example.org: Job has gone over cgroup memory limit of 4096 megabytes. "
    "Peak usage: 4102 megabytes.  Consider resubmitting with a higher request_memory.",
    "via condor_hold (by user alice)",
]


def _value(v) -> str:
    """A JSON value as the ClassAd unparser writes it ('/' escaped as '\\/')."""
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("/", "\\/")
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


def job_ad(i: int) -> dict:
    cluster_no = i // 500
    cluster = f"c{cluster_no:04d}-7f3a9d"
    proc = i % 500
    status = (1, 2, 2, 2, 5, 4, 1, 2)[i % 8]
    ad = {
        "ClusterId": 1000 + cluster_no, "ProcId": proc, "JobStatus": status, "Owner": f"user{cluster_no % 40}",
        "DaskGatewayCluster": cluster, "DaskWorkerName": f"{cluster}-{proc}", "DaskWorkerIndex": proc,
        "DaskClusterOwner": f"user{cluster_no % 40}", "EnteredCurrentStatus": 1767000000 + i,
        "QDate": 1766990000 + i, "NumJobStarts": 1 if status in (2, 4) else 0,
        "JobBatchName": cluster, "GlobalJobId": f"submit01.example.org#{1000 + cluster_no}.{proc}#{1766990000 + i}",
        "RequestCpus": 2, "RequestMemory": 4096, "RemoteHost": f"slot1_{i % 48}@node{i % 300:03d}.example.org",
        "Requirements": "/Expr(TARGET.Arch == \"X86_64\" && TARGET.Memory >= RequestMemory)/",
        "Iwd": f"/home/user{cluster_no % 40}",
    }
    if status == 5:
        ad["HoldReason"] = HOLD_REASONS[i % 2]
        ad["HoldReasonCode"] = 34 if i % 2 == 0 else 1
    if status == 4:
        ad["ExitCode"] = 0
    return ad


def condor_q_json(n: int) -> bytes:
    """n ads in condor_q -json layout (nothing at all for n == 0, as condor_q prints)."""
    if n == 0:
        return b""
    parts = []
    for i in range(n):
        ad = job_ad(i)
        body = ",\n".join(f'  "{k}": {_value(ad[k])}' for k in sorted(ad, key=str.lower))
        parts.append("{\n" + body + "\n}")
    return ("[\n" + "\n,\n".join(parts) + "\n]\n").encode()


def run_json(data: bytes):
    return json.loads(data)


def run_stream(data: bytes):
    return summarize(parse_ads(io.BytesIO(data)))


def best_time(fn, data: bytes, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = fn(data)
        best = min(best, time.perf_counter() - t0)
        del result
    return best


def peak_memory(fn, data: bytes) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        result = fn(data)
        _, peak = tracemalloc.get_traced_memory()
        del result
    finally:
        tracemalloc.stop()
    return peak


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ads", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    data = condor_q_json(args.ads)
    check = run_stream(data)
    assert sum(s.total for s in check.values()) == args.ads == len(run_json(data))
    del check
    print(f"input: {args.ads} ads, {len(data) / 2**20:.1f} MiB of condor_q -json")

    t_json = best_time(run_json, data, args.repeat)
    t_ours = best_time(run_stream, data, args.repeat)
    m_json = peak_memory(run_json, data)
    m_ours = peak_memory(run_stream, data)
    print(f"json.loads          : {t_json:7.3f} s  peak {m_json / 2**20:8.1f} MiB")
    print(f"parse_ads+summarize : {t_ours:7.3f} s  peak {m_ours / 2**20:8.1f} MiB")
    t_ratio = t_ours / t_json
    m_ratio = m_ours / m_json
    ok = t_ratio <= GOAL_TIME and m_ratio <= GOAL_MEM
    print(f"parse_queue: {t_ratio:.2f}x time, {m_ratio:.2f}x memory "
          f"(goal: <= {GOAL_TIME}x time, <= {GOAL_MEM}x memory) {'ok' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
