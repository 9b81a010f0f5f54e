"""`make bench`: run every benchmark, echo its output, and end with a table and `N/M goals met`.

Each benchmark is a script under bench/ whose last line is its figure:

    NAME: VALUE (goal: GOAL) ok|MISSED

Scripts run one after the other (each starts and stops its own Redis, pool and Celery workers), so their
timings do not disturb each other. `gateway_scale.py` (the gateway issue's benchmark) runs when present.
Exit status: 0 when every script produced its figure, even if goals were missed (benchmarks inform);
1 when a script crashed, timed out or printed no figure line.

    python bench/run_all.py [NAME ...]          # default: all; NAME = script name without .py
    python bench/run_all.py --write docs/benchmarks.md [--note quiet]   # all, then the table into the file

`--write FILE` (`make bench` writes docs/benchmarks.md) replaces the figures table of FILE, between its
markers (bench/table.py), with this run's: only after a run of every benchmark, so the table is one run's.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

#: (script, required): the issue's figures in order, then the existing parser benchmark.
SCRIPTS = [
    ("submit_calls", True),
    ("poll_calls", True),
    ("burst", True),
    ("poll_100k", True),
    ("task_throughput", True),
    ("lone_request_latency", True),  # issue 18
    ("gateway_scale", False),  # written with the gateway issue; counted when present
    ("scale_10k", True),  # issue 18
    ("schedds_4", True),  # issue 18
    ("poll_1m", True),  # issue 18
    ("parse_queue", True),
    ("soak", True),  # the reliability issue's bounded soak: its figure is the invariants that held
    ("soak_sentinel", True),  # the same on Redis Sentinel with the master SIGKILLed half-way (issue 18)
]
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "900"))
FIGURE = re.compile(r"^(?P<name>[\w.-]+): (?P<value>.*) \(goal: (?P<goal>.*)\) (?P<result>ok|MISSED)\s*$")


def run(script: Path) -> tuple[int | None, str, float]:
    """Run one script, echoing its stdout as it comes; (exit status or None on timeout, last line, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script)], cwd=str(REPO), stdout=subprocess.PIPE, text=True,
                            bufsize=1, start_new_session=True)
    last = ""
    deadline = t0 + TIMEOUT
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.strip():
                last = line.strip()
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(proc.args, TIMEOUT)
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        print(f"run_all: {script.name} exceeded {TIMEOUT:.0f}s; stopping it", flush=True)
        try:
            os.killpg(proc.pid, 15)
            proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait()
        rc = None
    return rc, last, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    ap.add_argument("--write", type=Path, metavar="FILE",
                    help="write the figures table into FILE between its markers (a full run only)")
    ap.add_argument("--note", default="", help="with --write: a word on the run in the table's header, e.g. quiet")
    a = ap.parse_args(argv)
    from bench.common import machine
    from bench import table as figures_table
    wanted = set(a.names)
    unknown = wanted - {name for name, _ in SCRIPTS}
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if a.write and wanted:
        ap.error("--write writes one full run's table: give no benchmark names")
    if a.write:
        try:
            figures_table.check(a.write)  # refused now, not after the run
        except figures_table.TableError as e:
            ap.error(str(e))
    started = time.monotonic()

    rows, crashed = [], []
    for name, required in SCRIPTS:
        if wanted and name not in wanted:
            continue
        script = BENCH / f"{name}.py"
        if not script.exists():
            if required:
                crashed.append(name)
                rows.append((name, "script missing", "", "CRASHED", 0.0))
            else:
                print(f"\n=== {name}: bench/{name}.py not present, skipped", flush=True)
            continue
        print(f"\n=== {name} (bench/{name}.py)", flush=True)
        rc, last, seconds = run(script)
        m = FIGURE.match(last)
        if rc != 0 or not m:
            why = "timed out" if rc is None else (f"exit status {rc}" if rc != 0 else "no figure line")
            crashed.append(name)
            rows.append((name, f"{why}: {last[:80]}", "", "CRASHED", seconds))
        else:
            rows.append((m["name"], m["value"], m["goal"], m["result"], seconds))

    met = sum(1 for r in rows if r[3] == "ok")
    print("\n=== summary")
    print(f"machine: {machine()}")
    header = ("figure", "value", "goal", "result", "time")
    table = [header] + [(n, v, g, r, f"{s:.0f}s") for n, v, g, r, s in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if crashed:
        print(f"crashed: {', '.join(crashed)}")
    print(f"{met}/{len(rows)} goals met", flush=True)
    if a.write:
        figures_table.write(a.write, figures_table.render(rows, machine(), time.monotonic() - started,
                                                          note=a.note))
        print(f"wrote the table into {a.write}", flush=True)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
