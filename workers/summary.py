"""Per-cluster summaries of a stream of job ads, in one pass.

The poller feeds condor_q's ads straight from the parser into summarize(), so a 100,000-job queue
never exists as a list of dicts: each ad is reduced to a small JobRecord (a tuple) and counters, and
repeated strings (cluster names, hold reasons) are shared rather than copied per job.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

from workers.jobstatus import JobStatus

log = logging.getLogger(__name__)


class JobRecord(NamedTuple):
    """One job, compactly: what reconciliation and `status` displays need."""

    job_id: str  # "C.P"
    name: str | None  # DaskWorkerName
    index: int | None  # DaskWorkerIndex
    status: int  # JobStatus code
    since: int | None  # EnteredCurrentStatus (epoch seconds)
    hold_reason: str | None
    hold_code: int | None
    exit_code: int | None


_COUNTER = {
    JobStatus.IDLE: "idle",
    JobStatus.RUNNING: "running",
    JobStatus.REMOVED: "removed",
    JobStatus.COMPLETED: "completed",
    JobStatus.HELD: "held",
    JobStatus.TRANSFERRING_OUTPUT: "transferring",
    JobStatus.SUSPENDED: "suspended",
}


@dataclass(slots=True)
class ClusterSummary:
    """Counts by JobStatus, hold reasons and the per-job records of one Dask cluster."""

    cluster: str
    owner: str | None = None  # DaskClusterOwner
    idle: int = 0
    running: int = 0
    held: int = 0
    completed: int = 0
    removed: int = 0
    suspended: int = 0
    transferring: int = 0
    unknown: int = 0  # a JobStatus we do not know
    held_reasons: dict[str, int] = field(default_factory=dict)  # HoldReason -> jobs
    held_reason_codes: dict[str, int | None] = field(default_factory=dict)  # HoldReason -> HoldReasonCode
    max_index: int = -1  # highest DaskWorkerIndex seen (-1: none)
    jobs: list[JobRecord] = field(default_factory=list)

    @property
    def total(self) -> int:
        return (self.idle + self.running + self.held + self.completed + self.removed + self.suspended
                + self.transferring + self.unknown)

    @property
    def active(self) -> int:
        """Jobs that hold or wait for a slot: they count toward the cluster's target."""
        return self.idle + self.running + self.suspended + self.transferring

    def to_dict(self, jobs: bool = True) -> dict[str, Any]:
        """JSON-ready form (jobs as lists in JobRecord field order if requested)."""
        d = {f: getattr(self, f) for f in ("cluster", "owner", "idle", "running", "held", "completed",
                                           "removed", "suspended", "transferring", "unknown",
                                           "held_reasons", "held_reason_codes", "max_index")}
        d["total"] = self.total
        if jobs:
            d["jobs"] = [list(j) for j in self.jobs]
        return d


_new_record = tuple.__new__  # JobRecord without the Python-level NamedTuple __new__ (hot loop)
_FIELDS = ("unknown", "idle", "running", "removed", "completed", "held", "transferring", "suspended")


def summarize(ads: Iterable[dict], keep_jobs: bool = True) -> dict[str, ClusterSummary]:
    """Summaries keyed by DaskGatewayCluster; ads without it (not our jobs) are skipped.

    One pass; per cluster it keeps counters and, if keep_jobs, one JobRecord per job.
    """
    # per cluster: [counts by JobStatus (index 0 = unknown), jobs, max index, summary]
    state: dict[str, list] = {}
    strings: dict[str, str] = {}  # share equal hold reasons between jobs
    skipped = 0
    held = int(JobStatus.HELD)
    for ad in ads:
        get = ad.get
        cluster = get("DaskGatewayCluster")
        if type(cluster) is not str:
            skipped += 1
            continue
        st = state.get(cluster)
        if st is None:
            owner = get("DaskClusterOwner")
            summary = ClusterSummary(cluster, owner if type(owner) is str else None)
            st = state[cluster] = [[0] * 8, summary.jobs, -1, summary]
        status = get("JobStatus")
        if type(status) is not int or not 0 < status < 8:
            status = 0
        st[0][status] += 1
        index = get("DaskWorkerIndex")
        if type(index) is not int:
            index = None
        elif index > st[2]:
            st[2] = index
        reason = code = None
        if status == held:
            reason = get("HoldReason")
            reason = strings.setdefault(reason, reason) if type(reason) is str else "(no HoldReason)"
            code = get("HoldReasonCode")
            if type(code) is not int:
                code = None
            summary = st[3]
            summary.held_reasons[reason] = summary.held_reasons.get(reason, 0) + 1
            summary.held_reason_codes[reason] = code
        if keep_jobs:
            name = get("DaskWorkerName")
            since = get("EnteredCurrentStatus")
            exit_code = get("ExitCode")
            st[1].append(_new_record(JobRecord, (
                f"{get('ClusterId')}.{get('ProcId')}",
                name if type(name) is str else None,
                index,
                status,
                since if type(since) is int else None,
                reason,
                code,
                exit_code if type(exit_code) is int else None,
            )))
    out: dict[str, ClusterSummary] = {}
    for cluster, (counts, _jobs, max_index, summary) in state.items():
        for name, n in zip(_FIELDS, counts):
            setattr(summary, name, n)
        summary.max_index = max_index
        out[cluster] = summary
    if skipped:
        log.debug("summarize: %d ads without DaskGatewayCluster skipped", skipped)
    return out
