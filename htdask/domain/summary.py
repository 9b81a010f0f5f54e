"""Per-cluster summaries of a stream of job ads, in one pass.

The poller feeds condor_q's ads straight from the parser into summarize(), so a 100,000-job queue
never exists as a list of dicts: each ad is reduced to a small JobRecord (a tuple) and counters, and
repeated strings (cluster names, hold reasons) are shared rather than copied per job.

One odd ad affects only itself: an ad without an integer ClusterId, ProcId or JobStatus is skipped,
an attribute of an unexpected type is dropped from its record (and an ad whose bytes the parser had
to repair is kept as repaired); each such ad gets one log line naming the job and is counted in
`AdCounts` (the poll status shows the counts).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

from htdask.domain.jobstatus import JobStatus

#: key of an ad whose bytes were repaired (its value: the repaired attribute names); set by the
#: condor_q parser and the bindings (`workers.htcondor`), counted as degraded by `summarize`
DEGRADED = "(htdask) degraded"

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
    #: LastRejMatchReason of an idle job: why the last negotiation found no slot for it (None: no such word)
    match_reason: str | None = None


@dataclass(slots=True)
class ClusterSummary:
    """Counts by JobStatus (one field per `htdask.domain.jobstatus.KEYS`), hold reasons, idle jobs no slot
    matched and the per-job records of one Dask cluster."""

    cluster: str
    owner: str | None = None  # the Unix user the jobs run as: Owner (else DaskClusterOwner) of its first ad
    idle: int = 0
    running: int = 0
    held: int = 0
    completed: int = 0
    removed: int = 0
    suspended: int = 0
    transferring_output: int = 0
    unknown: int = 0  # a JobStatus we do not know
    #: idle jobs whose last negotiation found no slot: LastRejMatchReason -> jobs
    unmatched_reasons: dict[str, int] = field(default_factory=dict)
    held_reasons: dict[str, int] = field(default_factory=dict)  # HoldReason -> jobs
    held_reason_codes: dict[str, int | None] = field(default_factory=dict)  # HoldReason -> HoldReasonCode
    max_index: int = -1  # highest DaskWorkerIndex seen (-1: none)
    jobs: list[JobRecord] = field(default_factory=list)

    @property
    def total(self) -> int:
        return (self.idle + self.running + self.held + self.completed + self.removed + self.suspended
                + self.transferring_output + self.unknown)

    @property
    def active(self) -> int:
        """Jobs that hold or wait for a slot, held ones aside (`htdask.domain.jobstatus.QUEUED` less HELD)."""
        return self.idle + self.running + self.suspended + self.transferring_output

    def to_dict(self, jobs: bool = True) -> dict[str, Any]:
        """JSON-ready form (jobs as lists in JobRecord field order if requested)."""
        d = {f: getattr(self, f) for f in ("cluster", "owner", "idle", "running", "held", "completed",
                                           "removed", "suspended", "transferring_output", "unknown",
                                           "held_reasons", "held_reason_codes", "unmatched_reasons",
                                           "max_index")}
        d["total"] = self.total
        if jobs:
            d["jobs"] = [list(j) for j in self.jobs]
        return d


@dataclass(slots=True)
class AdCounts:
    """Ads of one query that were odd: `unparsed` skipped, `degraded` kept with a value repaired or dropped."""

    unparsed: int = 0
    degraded: int = 0


#: attributes of a job record and the type each must have (any other type is ignored, the ad degraded)
_TYPED = (("DaskWorkerName", str), ("DaskWorkerIndex", int), ("EnteredCurrentStatus", int),
          ("HoldReason", str), ("HoldReasonCode", int), ("ExitCode", int), ("LastRejMatchReason", str))


def _job_label(ad: dict) -> str:
    cid, pid = ad.get("ClusterId"), ad.get("ProcId")
    return f"{cid}.{pid}" if cid is not None or pid is not None else repr(ad.get("DaskWorkerName") or "?")


def _odd(ad: dict) -> str:
    """Why an ad cannot be summarized."""
    return "no integer " + ", ".join(a for a in ("ClusterId", "ProcId", "JobStatus") if type(ad.get(a)) is not int)


def _degraded(ad: dict, cluster: str, counts: "AdCounts") -> None:
    """Count an ad kept with repaired bytes or ignored attributes; log it once (the parser logged bytes)."""
    counts.degraded += 1
    wrong = [a for a, t in _TYPED if ad.get(a) is not None and type(ad[a]) is not t]
    if wrong:
        log.warning("cluster %s: job %s has attributes of an unexpected type, ignored: %s", cluster,
                    _job_label(ad), ", ".join(f"{a}={ad[a]!r:.60}" for a in wrong))


_new_record = tuple.__new__  # JobRecord without the Python-level NamedTuple __new__ (hot loop)
_FIELDS = ("unknown", *(s.key for s in JobStatus))  # index = JobStatus code (0: one we do not know)


def summarize(ads: Iterable[dict], keep_jobs: bool = True,
              counts: AdCounts | None = None) -> dict[str, ClusterSummary]:
    """Summaries keyed by DaskGatewayCluster; ads without it (not our jobs) are skipped.

    One pass; per cluster it keeps counters and, if keep_jobs, one JobRecord per job. Odd ads (see
    the module docstring) are skipped or degraded and counted in `counts` when given.
    """
    # per cluster: [counts by JobStatus (index 0 = unknown), jobs, max index, summary]
    per_cluster: dict[str, list] = {}
    strings: dict[str, str] = {}  # share equal hold reasons between jobs
    skipped = 0
    held, idle = int(JobStatus.HELD), int(JobStatus.IDLE)
    counts = counts if counts is not None else AdCounts()
    for ad in ads:
        get = ad.get
        cluster = get("DaskGatewayCluster")
        if type(cluster) is not str:
            if cluster is not None:  # our marker, but not a name: an odd ad of ours
                counts.unparsed += 1
                log.warning("job %s: DaskGatewayCluster is not a string (%r); ad skipped", _job_label(ad),
                            cluster)
            else:
                skipped += 1
            continue
        # One cheap test for the common case; odd ads are looked at closely.
        if (type(get("ClusterId")) is not int or type(get("ProcId")) is not int
                or type(get("JobStatus")) is not int):
            counts.unparsed += 1
            log.warning("cluster %s: job %s skipped: %s", cluster, _job_label(ad), _odd(ad))
            continue
        odd = DEGRADED in ad  # set below too when an attribute has an unexpected type
        st = per_cluster.get(cluster)
        if st is None:
            owner = get("Owner")
            owner = owner if type(owner) is str else get("DaskClusterOwner")
            summary = ClusterSummary(cluster, owner if type(owner) is str else None)
            st = per_cluster[cluster] = [[0] * 8, summary.jobs, -1, summary]
        status = get("JobStatus")
        if not 0 < status < 8:
            status = 0
        st[0][status] += 1
        index = get("DaskWorkerIndex")
        if type(index) is not int:
            if index is not None:
                odd, index = True, None
        elif index > st[2]:
            st[2] = index
        reason = code = None
        if status == held:
            reason = get("HoldReason")
            if type(reason) is str:
                reason = strings.setdefault(reason, reason)
            else:
                odd = odd or reason is not None
                reason = "(no HoldReason)"
            code = get("HoldReasonCode")
            if type(code) is not int:
                odd = odd or code is not None
                code = None
            summary = st[3]
            summary.held_reasons[reason] = summary.held_reasons.get(reason, 0) + 1
            summary.held_reason_codes[reason] = code
        match_reason = None
        if status == idle:
            match_reason = get("LastRejMatchReason")
            if type(match_reason) is str and match_reason.strip():
                match_reason = strings.setdefault(match_reason.strip(), match_reason.strip())
                unmatched = st[3].unmatched_reasons
                unmatched[match_reason] = unmatched.get(match_reason, 0) + 1
            else:
                odd = odd or (match_reason is not None and type(match_reason) is not str)
                match_reason = None
        if keep_jobs:
            name = get("DaskWorkerName")
            since = get("EnteredCurrentStatus")
            exit_code = get("ExitCode")
            if type(name) is not str:
                odd, name = odd or name is not None, None
            if type(since) is not int:
                odd, since = odd or since is not None, None
            if type(exit_code) is not int:
                odd, exit_code = odd or exit_code is not None, None
            st[1].append(_new_record(JobRecord, (
                f"{get('ClusterId')}.{get('ProcId')}", name, index, status, since, reason, code, exit_code,
                match_reason)))
        if odd:
            _degraded(ad, cluster, counts)
    out: dict[str, ClusterSummary] = {}
    for cluster, (by_status, _jobs, max_index, summary) in per_cluster.items():
        for name, n in zip(_FIELDS, by_status):
            setattr(summary, name, n)
        summary.max_index = max_index
        out[cluster] = summary
    if skipped:
        log.debug("summarize: %d ads without DaskGatewayCluster skipped", skipped)
    return out
