"""Short descriptions of many things for log lines and messages: counts and a few examples, never thousands.

A scale-down of 26,000 jobs must not write a 170 KB log line; every line about a list of jobs, names or
output lines goes through one of these.
"""
from __future__ import annotations

from typing import Iterable

#: examples a description names before it says how many more there are
FEW = 3
#: characters a text is cut to (`text`)
TEXT_MAX = 300


def few(items: Iterable[object], n: int = FEW) -> str:
    """`a, b, c` or `a, b, c and 25897 more` (items in the given order)."""
    items = [str(i) for i in items]
    head = ", ".join(items[:n])
    return head if len(items) <= n else f"{head} and {len(items) - n} more"


def jobs(job_ids: Iterable[str], n: int = FEW) -> str:
    """`3 jobs (12.0, 12.1, 12.2)`, `25900 jobs (12.100, 12.101, 12.102 and 25897 more)`: sorted by
    ClusterId, ProcId (an id that is not `C.P` sorts last, as text)."""
    ids = sorted({str(i) for i in job_ids}, key=_job_key)
    return f"{len(ids)} job{'' if len(ids) == 1 else 's'} ({few(ids, n)})" if ids else "0 jobs"


def names(worker_names: Iterable[str], n: int = FEW) -> str:
    """`2 workers (a-1, a-2)`: sorted, a few named."""
    got = sorted({str(w) for w in worker_names})
    return f"{len(got)} worker{'' if len(got) == 1 else 's'} ({few(got, n)})" if got else "0 workers"


def lines(text_lines: list[str], n: int = FEW) -> str:
    """Output lines joined with `; `, the first `n` and how many more."""
    if len(text_lines) <= n + 1:
        return "; ".join(text_lines)
    return "; ".join(text_lines[:n]) + f"; ... and {len(text_lines) - n} more lines"


def text(value: str, limit: int = TEXT_MAX) -> str:
    """`value` cut to `limit` characters, saying how long it was."""
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value)} characters)"


def _job_key(job_id: str) -> tuple:
    c, _, p = job_id.partition(".")
    return (0, int(c), int(p or -1)) if c.isdigit() and (p.isdigit() or not p) else (1, 0, 0, job_id)
