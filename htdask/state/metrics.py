"""Operational measurements of the submit-node side, kept in Redis for the exporter (`htdask/exporter/`).

The Celery worker times every schedd command and the delay from a request's enqueue to the
`condor_submit` that serves it. Each measurement is a handful of increments on one bounded hash per
schedd (`htdask:metrics:<schedd>`, see `htdask.state.keys`): a histogram is one counter per fixed bucket
plus a sum, so the hash never grows with jobs, clusters or time. The increments are buffered in the
process (`Recorder`) and written with the next pipeline the store executes anyway (the poll's write,
the release of a round's locks, a cluster's deletion), so measuring costs no extra Redis round trip
on the hot path; `Recorder.flush` writes what is left at the end of a task.

Hash fields (all counters, never reset):

| field | meaning |
|---|---|
| `cmd:<command>:b:<le>` | commands that took ≤ `le` seconds and more than the previous bucket (`+Inf`: the rest) |
| `cmd:<command>:sum` | seconds spent in the command, in total |
| `cmd:<command>:failures` | commands that failed (ScheddError, timeout, refused user) |
| `r2s:b:<le>`, `r2s:sum` | request enqueue → `condor_submit` started, same layout |

`command` is one of `COMMANDS` (HTCondor's program names), so label values are bounded.
"""
from __future__ import annotations

import bisect
import math
import threading
from collections import defaultdict

from htdask.state import keys

#: schedd interface call -> the HTCondor command it stands for (the `command` label)
COMMANDS = {"submit": "condor_submit", "query": "condor_q", "remove": "condor_rm", "hold": "condor_hold",
            "release": "condor_release", "history": "condor_history"}
#: upper bounds (seconds) of the schedd command duration buckets
COMMAND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)
#: upper bounds (seconds) of the request-to-submit buckets
REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, math.inf)


def bucket_label(le: float) -> str:
    """The `le` label of a bucket bound, as Prometheus writes it (`0.5`, `10.0`, `+Inf`)."""
    return "+Inf" if math.isinf(le) else repr(float(le))


def _bucket(bounds: tuple[float, ...], seconds: float) -> str:
    return bucket_label(bounds[min(bisect.bisect_left(bounds, seconds), len(bounds) - 1)])


class Recorder:
    """Measurements of one process, buffered until the next pipeline (thread-safe, bounded)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = defaultdict(int)  # (schedd, field) -> increment
        self._sums: dict[tuple[str, str], float] = defaultdict(float)

    def command(self, schedd: str, call: str, seconds: float, ok: bool) -> None:
        """One schedd command (`call`: a key of COMMANDS) that took `seconds`."""
        command = COMMANDS[call]
        with self._lock:
            self._counts[(schedd, f"cmd:{command}:b:{_bucket(COMMAND_BUCKETS, seconds)}")] += 1
            self._sums[(schedd, f"cmd:{command}:sum")] += max(seconds, 0.0)
            if not ok:
                self._counts[(schedd, f"cmd:{command}:failures")] += 1

    def request_to_submit(self, schedd: str, seconds: float) -> None:
        """Seconds from a request's enqueue to the start of the condor_submit that serves it."""
        seconds = max(seconds, 0.0)
        with self._lock:
            self._counts[(schedd, f"r2s:b:{_bucket(REQUEST_BUCKETS, seconds)}")] += 1
            self._sums[(schedd, "r2s:sum")] += seconds

    def pending(self) -> bool:
        return bool(self._counts or self._sums)

    def drain_into(self, pipe) -> None:
        """Queue the buffered increments on `pipe` (executed by the caller) and forget them.

        Should that pipeline fail, the increments are lost: measurements never block the work.
        """
        with self._lock:
            counts, sums = self._counts, self._sums
            self._counts, self._sums = defaultdict(int), defaultdict(float)
        for (schedd, fld), n in counts.items():
            pipe.hincrby(keys.metrics(schedd), fld, n)
        for (schedd, fld), x in sums.items():
            pipe.hincrbyfloat(keys.metrics(schedd), fld, x)

    def flush(self, client) -> None:
        """Write what is buffered now (one round trip; none when nothing is)."""
        if self.pending():
            pipe = client.pipeline(transaction=False)
            self.drain_into(pipe)
            pipe.execute()


#: the process's recorder (the Celery worker's tasks share it; the store drains it)
RECORDER = Recorder()


def histogram(fields: dict[str, str], prefix: str, bounds: tuple[float, ...]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets [(le, count)] and the sum of one histogram stored under `prefix` in a
    metrics hash (`fields` as read with HGETALL)."""
    total, buckets = 0.0, []
    for le in bounds:
        total += int(fields.get(f"{prefix}:b:{bucket_label(le)}") or 0)
        buckets.append((bucket_label(le), total))
    return buckets, float(fields.get(f"{prefix}:sum") or 0.0)


def known_schedds(client) -> set[str]:
    """Schedds with a poll status or measurements in Redis (SCAN; bounded by the site's schedds)."""
    out = set()
    for kind in (keys.poll(""), keys.metrics("")):
        out.update(k[len(kind):] for k in client.scan_iter(match=kind + "*", count=1000))
    return out


def read_schedds(client, schedds: list[str]) -> dict[str, tuple[dict, dict]]:
    """{schedd: (poll status hash, metrics hash)} of several schedds, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for schedd in schedds:
        pipe.hgetall(keys.poll(schedd))
        pipe.hgetall(keys.metrics(schedd))
    out = pipe.execute()
    return {schedd: (out[2 * i], out[2 * i + 1]) for i, schedd in enumerate(schedds)}
