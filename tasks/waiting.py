"""`scale --wait`: wait for a cluster to reach its target from beat's summaries, and fail fast.

The wait reads what beat's polls write (summaries, the cluster's error, worker heartbeats) and sends
at most one poll request of its own (at the start, so a fresh summary comes without waiting a whole
period). It ends early, with the cause, when
- no worker consumes the cluster's queue (nobody will ever act on the request), or
- the cluster records an error for good after the request was made (a retrying error is not final);
and its progress counts toward the target in both directions: jobs running on the way up, live jobs
gone on the way down. It waits for exactly N running jobs and no other job of the cluster in the queue
(idle, held, suspended, transferring output: `htdask.domain.jobstatus.QUEUED`); every line it prints says
what it waits for and counts every state.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from htdask.domain.jobstatus import QUEUED, counts_text
from htdask.state import Store
from tasks import health

log = logging.getLogger(__name__)

#: seconds between two reads of the state
INTERVAL = 0.5
#: errors that say a retry is still coming (tasks.cluster_tasks.ClusterTask.on_retry)
RETRYING = "retrying after error"


class WaitFailed(Exception):
    """The wait ended without the target: str() is the one line to show."""


@dataclass
class Progress:
    cluster: str
    target: int
    done: int  # steps toward the target so far (0..total)
    total: int  # steps from where the cluster was when the wait began
    running: int
    live: int
    direction: str  # "up" | "down"
    others: str = ""  # the other queued states, counted: "1 idle, 0 held, 1 suspended, 0 transferring output"

    def line(self) -> str:
        what = f"{self.running} running" if self.direction == "up" else f"{self.live} live"
        moved = "started" if self.direction == "up" else "gone"
        line = f"cluster {self.cluster}: {what}, target {self.target} ({self.done} of {self.total} {moved})"
        if self.others and self.live != self.running:
            line += f"; waiting for {self.target} running and no other job ({self.others})"
        return line


def _counts(summary: dict) -> tuple[int, int]:
    """(running jobs, jobs in any queued state: idle, running, held, suspended, transferring output)."""
    running = int(summary.get("running") or 0)
    return running, sum(int(summary.get(s.key) or 0) for s in QUEUED)


def wait_for(store: Store, cluster: str, n: int, timeout: float, queue: str, since: float,
             poll: Callable[[], object] | None = None, on_progress: Callable[[Progress], None] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> Progress:
    """Wait until `cluster` runs exactly `n` jobs and nothing else is live, as beat's polls report.

    `since` is when the request was made (epoch s, Redis' clock: `Store.now()`, as poll times and errors are
    written): only a summary polled after it counts, and only an error recorded after it ends the wait. `poll` sends the one extra poll request (called once).
    Returns the final Progress; raises WaitFailed (no worker consumes the queue, a final error, timeout).
    """
    deadline = time.monotonic() + timeout
    start_running, start_live = _counts(store.summary(cluster))
    direction = "up" if n >= start_live else "down"
    total = max(1, n - start_running if direction == "up" else start_live - n)
    if not health.consumed(store, queue):
        raise WaitFailed(f"{health.no_consumer_message(queue)}: cluster {cluster} cannot reach {n} workers")
    if poll is not None:
        poll()
    shown = None
    while True:
        summary = store.summary(cluster)
        running, live = _counts(summary)
        moved = running - start_running if direction == "up" else start_live - live
        progress = Progress(cluster, n, max(0, min(total, moved)), total, running, live, direction,
                            counts_text(summary))
        fresh = (summary.get("polled_at") or 0) >= since
        if fresh and running == n and live == n:
            progress.done = total
            if on_progress:
                on_progress(progress)
            return progress
        if on_progress and (progress.done, running, live) != shown:
            shown = (progress.done, running, live)
            on_progress(progress)
        record = store.get(cluster)
        if record is not None and record.error and (record.error_at or 0) >= since \
                and not record.error.startswith(RETRYING):
            raise WaitFailed(f"cluster {cluster}: {record.error}")
        if not health.consumed(store, queue):
            raise WaitFailed(f"{health.no_consumer_message(queue)}: cluster {cluster} cannot reach {n} workers")
        if time.monotonic() >= deadline:
            held = summary.get("held_reasons") or {}
            reasons = "; ".join(f"{r} ({c})" for r, c in held.items())
            raise WaitFailed(f"timed out after {timeout:.0f}s waiting for {n} running jobs and no other: cluster "
                             f"{cluster} runs {running} of {n} ({counts_text(summary)}"
                             f"{': ' + reasons if reasons else ''})")
        sleep(INTERVAL)
