"""py-spy profiles of the benchmarks' processes (`--profile` of task_throughput and scale_10k).

`Spy(pids, path)` samples the given processes and their children (Celery's pool processes, the pool's
condor_* programs) while its `with` block runs, in py-spy's raw (collapsed stack) format: one line per
stack, `frame;frame;... count`, which flamegraph.pl or speedscope read. `summary(path)` is the text the
benchmark prints: samples per process and the frames with the most samples below them.

py-spy samples wall-clock stacks of running threads: time a process waits for Redis in a socket read
counts, so the shares say where a request's time goes, not only CPU.
"""
from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

#: frames that only say "inside Celery's worker machinery" (left out of the summary's top frames)
_PLUMBING = re.compile(r"frozen |click/|celery/bin|billiard/(process|popen|context|pool)|bootsteps|celery/apps|"
                       r"celery/worker/worker|celery/__main__|concurrency/|runpy")


def py_spy() -> str:
    """The py-spy program of this venv (requirements-dev.txt), else PATH's; RuntimeError if there is none."""
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    return found


class Spy:
    """Record py-spy samples of `pid` and its children into `path` (raw format) during a `with` block."""

    def __init__(self, pid: int, path: Path, rate: int = 250):
        self.argv = [py_spy(), "record", "--format", "raw", "--rate", str(rate), "--subprocesses",
                     "--pid", str(pid), "--output", str(path)]
        self.path = path

    def __enter__(self) -> "Spy":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches before the measured work starts
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        self.proc.wait(60)


def summary(path: Path, top: int = 25) -> str:
    """Samples per process and the `top` frames by inclusive samples (share of all samples)."""
    per_process: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        processes = [f for f in frames if f.startswith("process ")]
        per_process[processes[-1][:100] if processes else "?"] += n
        total += n
        for frame in {re.sub(r":\d+\)", ")", f) for f in frames if not f.startswith("process ")}:
            if not _PLUMBING.search(frame):
                inclusive[frame] += n
    lines = [f"{total} samples in {path}"]
    lines += [f"  {n:6d} {name}" for name, n in per_process.most_common(4)]
    lines += [f"  {100 * n / max(total, 1):5.1f}% {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)
