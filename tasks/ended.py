"""Jobs that left the queue: how each ended (from condor_history), and crash loops.

The poller records every ended job of our clusters once (state key `ended:<cluster>`): the jobs the
last poll saw and this one does not, and, for clusters short of their target, every job that ended
since the last poll (a worker that dies within one poll period is never seen in the queue). A
cluster whose jobs keep exiting on their own is in a crash loop (a scheduler that is gone, a broken
environment): when CRASH_LOOP_JOBS jobs exited within CRASH_LOOP_WINDOW seconds, the reconcile
waits CRASH_BACKOFF_BASE x 2^(exits beyond the limit) seconds (at most CRASH_BACKOFF_MAX) after the
last exit before submitting again, and `status`/`jobs` say why.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass

from htdask.domain.jobspec import CONSTRAINT_MAX, clusters_constraint, job_id_terms, ours_constraint
from htdask.domain.jobend import HISTORY_ATTRIBUTES, how, record_of
from htdask.domain.jobstatus import JobStatus
from htdask.domain.retry import delay
from workers.htcondor.schedd import ScheddError

log = logging.getLogger(__name__)

PROJECTION = ["DaskGatewayCluster", *HISTORY_ATTRIBUTES]
#: most history ads one poll reads
HISTORY_LIMIT = 2000
#: clusters named in one history constraint that is too long to name their jobs (more: all of ours)
MEMBER_LIST_MAX = 200


def history_constraint(vanished: dict[str, set[str]], short: list[str], since: float | None) -> str | None:
    """One constraint for the vanished job ids and the jobs of `short` clusters that ended after `since`.

    It is one argv word: when the exact one would be longer than CONSTRAINT_MAX (thousands of jobs left
    at once, by no range of ProcIds; thousands of short clusters), it asks instead for every job of these
    clusters (of ours, past MEMBER_LIST_MAX clusters) that ended since the last poll, a superset: the
    vanished jobs left the queue since then, and HISTORY_LIMIT bounds the answer."""
    terms = job_id_terms([job_id for ids in vanished.values() for job_id in ids])
    if short and since is not None:
        terms.append(f"{clusters_constraint(short)} && EnteredCurrentStatus >= {int(since)}")
    if not terms:
        return None
    exact = f"{ours_constraint()} && ({' || '.join(f'({t})' for t in terms)})"
    if len(exact) <= CONSTRAINT_MAX:
        return exact
    names = sorted(set(vanished) | set(short))
    out = ours_constraint()
    if len(names) <= MEMBER_LIST_MAX:
        out += f" && {clusters_constraint(names)}"
    if since is not None:
        out += f" && EnteredCurrentStatus >= {int(since)}"
    return out


def fetch(schedd, constraint: str, schedd_name: str) -> dict[str, dict[str, str]]:
    """History records by cluster: {cluster: {job id: JSON record}}; {} when the history is unavailable."""
    out: dict[str, dict[str, str]] = {}
    try:
        for ad in schedd.history(constraint, PROJECTION, limit=HISTORY_LIMIT):
            cluster = ad.get("DaskGatewayCluster")
            if type(cluster) is not str or type(ad.get("ClusterId")) is not int or type(ad.get("ProcId")) is not int:
                continue  # an odd ad counts for nobody
            rec = record_of(ad)
            out.setdefault(cluster, {})[rec["job_id"]] = json.dumps(rec, sort_keys=True)
    except ScheddError as err:
        log.warning("schedd %s: history of ended jobs unavailable: %s", schedd_name, err)
    return out


@dataclass
class CrashLoop:
    exits: int
    window: float
    cause: str  # the most common way they ended, e.g. "exit code 1"
    until: float  # no submission before this time (epoch s)
    #: the loop lasts until then (epoch s) unless more workers exit: the time the CRASH_LOOP_JOBS-th most
    #: recent exit leaves the window; `status` and the metric show the loop until then, not only while
    #: a submission waits
    lasts_until: float = 0.0

    def reason(self) -> str:
        return f"{self.exits} workers exited within {self.window / 60:g} min ({self.cause})"


def crash_loop(records: list[dict], now: float, settings) -> CrashLoop | None:
    """The crash loop these ended-job records show, or None (fewer than CRASH_LOOP_JOBS recent exits)."""
    window = settings.crash_loop_window
    exits = [r for r in records if r.get("status") == JobStatus.COMPLETED and (r.get("ended_at") or 0) >= now - window]
    if settings.crash_loop_jobs <= 0 or len(exits) < settings.crash_loop_jobs:
        return None
    backoff = delay(len(exits) - settings.crash_loop_jobs + 1, settings.crash_backoff_base, settings.crash_backoff_max)
    cause = Counter(how(r) for r in exits).most_common(1)[0][0]
    times = sorted((r.get("ended_at") or 0 for r in exits), reverse=True)
    until = times[0] + backoff
    return CrashLoop(len(exits), window, cause, until, max(until, times[settings.crash_loop_jobs - 1] + window))


def note(until: float | None, reason: str | None, lasts_until: float | None, now: float) -> str | None:
    """What `status`, `jobs`, the status page and the metric say of a crash loop recorded in a cluster's
    state (`Store.set_backoff`): '4 workers exited within 2 min (exit code 1), next try in 80 s' while a
    submission waits, '..., retrying (backoff 80 s)' while the loop lasts; None when there is none."""
    if not until or not reason:
        return None
    if until > now:
        return f"{reason}, next try in {until - now:.0f} s"
    if (lasts_until or 0) > now:
        return f"{reason}, still in a crash loop (retried {now - until:.0f} s ago)"
    return None
