"""A cluster's worker jobs as the reconciler and the delete task see them: one `Job` per job ad."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

from htdask.domain import jobstatus

log = logging.getLogger(__name__)

#: statuses of jobs that hold a worker slot or wait for one (`htdask.domain.jobstatus.QUEUED`; a held job is
#: replaced by the held-job policy, a job transferring output or suspended is never replaced)
LIVE = jobstatus.QUEUED


@dataclass
class Job:
    job_id: str
    status: int
    index: int
    name: str
    hold_code: int | None = None
    hold_reason: str | None = None
    hold_subcode: int | None = None

    @classmethod
    def from_ad(cls, ad: dict) -> "Job":
        index, code, reason = ad.get("DaskWorkerIndex"), ad.get("HoldReasonCode"), ad.get("HoldReason")
        subcode = ad.get("HoldReasonSubCode")
        return cls(job_id=f"{ad['ClusterId']}.{ad['ProcId']}", status=int(ad["JobStatus"]),
                   index=index if type(index) is int else -1, name=str(ad.get("DaskWorkerName") or ""),
                   hold_code=code if type(code) is int else None,
                   hold_reason=reason if type(reason) is str else None,
                   hold_subcode=subcode if type(subcode) is int else None)


def kept_hold(job, keep_codes) -> bool:
    """True for a job held by a person (HoldReasonCode 1 or one of `keep_codes`, HOLD_KEEP_CODES): never
    released or replaced."""
    return jobstatus.kept_hold(job.status, job.hold_code, keep_codes)


def missing_program_hold(job) -> bool:
    """True for a job held because its program or environment is missing on the execute host (hold 3/86,
    `htdask.domain.jobstatus.missing_program_hold`): never released or replaced."""
    return jobstatus.missing_program_hold(job.status, job.hold_code, job.hold_subcode)


def jobs_of(cluster: str, ads: Iterable[dict]) -> list[Job]:
    """The Jobs of a cluster's ads; an ad without an integer ClusterId, ProcId and JobStatus is skipped
    with one log line (one odd ad never stops a reconcile; the poll counts it as `unparsed`)."""
    jobs = []
    for ad in ads:
        if type(ad.get("ClusterId")) is int and type(ad.get("ProcId")) is int and type(ad.get("JobStatus")) is int:
            jobs.append(Job.from_ad(ad))
        else:
            log.warning("cluster %s: job ad %s.%s without an integer ClusterId/ProcId/JobStatus skipped", cluster,
                        ad.get("ClusterId"), ad.get("ProcId"))
    return jobs


def job_order(job_id: str) -> tuple[int, int]:
    """(ClusterId, ProcId) of a 'C.P' job id: the order the schedd created jobs in."""
    cluster, _, proc = job_id.partition(".")
    return int(cluster), int(proc or 0)


def newer_duplicates(jobs: Iterable) -> list:
    """Of jobs that share a worker name (`name`), every one but the oldest (lowest ClusterId.ProcId), in
    job order: a worker name belongs to one live job, and the one that came first keeps it."""
    by_name: dict[str, list] = {}
    for job in jobs:
        if job.name:
            by_name.setdefault(job.name, []).append(job)
    out = [j for group in by_name.values() if len(group) > 1
           for j in sorted(group, key=lambda j: job_order(j.job_id))[1:]]
    return sorted(out, key=lambda j: job_order(j.job_id))
