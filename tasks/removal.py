"""The scale-down side of a reconcile: which jobs go, how they are named, and retirement off the round's path.

- Jobs are removed by job id (ClusterId.ProcId), never by a worker index or name two jobs may share, with
  bounded constraints (htdask.domain.jobspec.jobs_constraints: runs of ProcIds as ranges, each constraint under
  CONSTRAINT_MAX characters, so a 26,000-job cluster scales down in one or a few condor_rm calls and never
  hits "Argument list too long"); log lines name counts and a few ids (htdask.domain.brief).
- Running workers of a count-based cluster with a scheduler are retired through it first
  (workers/dask_retire.py), but never inside the round: the round marks them (htdask/state/retiring.py: a reconcile
  no longer counts them) and hands them to a small pool of threads of this process, which retires them
  (at most RETIRE_TIMEOUT), then takes the cluster's lock and removes the jobs it still holds marks for. A
  scheduler that never answers delays only its own jobs' removal; other clusters' submissions and
  removals go out at once. If the process dies, the marks expire (RETIRE_TIMEOUT + LOCK_TTL + RETIRE_GRACE)
  and the next reconcile decides again.
- The held-job policy: release a system hold up to HOLD_RELEASE_LIMIT times, then remove and replace the job;
  a job held because its program or environment is missing on the execute host (hold 3/86) stays held.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from htdask.domain import brief
from htdask.domain.jobspec import jobs_constraints
from htdask.domain.jobstatus import JobStatus
from htdask.domain.workerjobs import Job, kept_hold, missing_program_hold
from tasks.options import job_options
from workers import dask_retire
from workers.htcondor.schedd import ScheddError

log = logging.getLogger(__name__)

#: retirements one process runs at once (each waits for a scheduler up to RETIRE_TIMEOUT); more wait their turn
RETIRE_THREADS = 8
#: seconds a retiring mark outlives RETIRE_TIMEOUT + LOCK_TTL: time to take the cluster's lock and condor_rm
RETIRE_GRACE = 15.0


def remove_jobs(schedd, cluster: str, job_ids: list[str], user: str | None, reason: str) -> None:
    """condor_rm the jobs `job_ids` ('C.P') of `cluster` and nothing else, in as few bounded calls as
    their constraints need; one short log line. Raises ScheddError (jobs of earlier calls are gone)."""
    messages = [schedd.remove(constraint=c, user=user, reason=reason).message
                for c in jobs_constraints(cluster, job_ids)]
    log.info("cluster %s: %s", cluster, brief.lines(messages))


class Removals:
    """The scale-down part of tasks.reconcile.Reconciler (needs `store`, `schedd`, `settings`, `submit_user`,
    `_fenced`)."""

    def _remove(self, record, surplus: list[Job], outcome) -> bool:
        """Remove surplus jobs; running workers of a count-based cluster with a scheduler are retired
        through it first, off the round (their results move to the workers that stay); queued ones go at once."""
        running = [j for j in surplus if j.status == JobStatus.RUNNING]
        address = job_options(record.options).get("scheduler_address")
        if record.names is None and running and address and self.settings.retire_timeout > 0:
            queued = [j for j in surplus if j.status != JobStatus.RUNNING]
            if queued:
                self._remove_jobs(record, queued, outcome)
            start_retirement(self.store, self.schedd, self.settings, record, self.submit_user(record), address,
                             running)
            outcome.retiring.extend(j.job_id for j in running)
            outcome.live = max(0, (outcome.live or 0) - len(running))
            return False
        return self._remove_jobs(record, surplus, outcome)

    def _remove_jobs(self, record, surplus: list[Job], outcome, reason: str | None = None) -> bool:
        """Remove these jobs now, by job id."""
        name, ids = record.name, [j.job_id for j in surplus]
        user = self.submit_user(record)
        log.info("cluster %s: removing %s as %s", name, brief.jobs(ids), user or _me())
        remove_jobs(self.schedd, name, ids, user, reason or f"scale down of {name} to {record.desired}")
        outcome.removed.extend(ids)
        outcome.live = max(0, (outcome.live or 0) - len(ids))
        return False

    def _apply_hold_policy(self, record, live: list[Job], outcome) -> bool:
        """Release a held job up to HOLD_RELEASE_LIMIT times; after that remove it (it gets replaced).

        Only holds the system caused: a job a person held (HoldReasonCode 1 = condor_hold, or one of
        HOLD_KEEP_CODES) is left alone, and still counts toward the cluster's workers. So is a job held
        because its program or environment is missing on the execute host (HoldReasonCode 3, subcode 86,
        the job's own on_exit_hold): a release or a replacement would run the same program on the same kind
        of host and be held again; it stays held with its reason (shown by `status`) until the cluster is
        scaled down or deleted.
        """
        held = [j for j in live if j.status == JobStatus.HELD and not kept_hold(j, self.settings.hold_keep_codes)]
        stuck = [j for j in held if missing_program_hold(j)]
        if stuck:
            log.debug("cluster %s: %s held, left held (no release can help): %s", record.name,
                      brief.jobs(j.job_id for j in stuck), stuck[0].hold_reason)
            held = [j for j in held if not missing_program_hold(j)]
        if not held:
            return False
        name, limit = record.name, self.settings.hold_release_limit
        release, replace = [], []
        for job in held:
            if job.hold_code in self.settings.hold_no_release_codes or self.store.releases(name, job.name) >= limit:
                replace.append(job)
            else:
                release.append(job)
        if not self._fenced(name, outcome):  # our lease expired while we were stalled: not ours to act on
            return False
        if release:
            counts = [self.store.count_release(name, job.name) for job in release]
            log.info("cluster %s: releasing held %s (release %s of %d): %s", name,
                     brief.jobs(j.job_id for j in release), _span(counts), limit, release[0].hold_reason)
            self.schedd.release(ids=[j.job_id for j in release], user=self.submit_user(record),
                                reason=f"released by the controller of {name}")
            outcome.released.extend(j.job_id for j in release)
        if replace and record.replaced + len(replace) > self.settings.hold_replace_limit:
            reason = replace[0].hold_reason
            message = (f"{record.replaced} held jobs replaced since the last request and more keep being held "
                       f"({reason}); not replacing them until the next request")
            log.error("cluster %s: %s", name, message)
            self.store.set_error(name, message)
            outcome.error = message
            replace = []
        if replace:
            self.store.count_replaced(name, len(replace))
            log.warning("cluster %s: replacing %s held again after %d releases (or with a HOLD_NO_RELEASE_CODES "
                        "code): %s", name, brief.jobs(j.job_id for j in replace), limit, replace[0].hold_reason)
            self._remove_jobs(record, replace, outcome, reason=f"held too often; replaced by the controller of {name}")
            self.store.forget_releases(name, [j.name for j in replace])
        return bool(release or replace)


def _span(counts: list[int]) -> str:
    return str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"


def _me() -> str:
    import getpass
    return getpass.getuser()


# ---- retirement off the round's path ------------------------------------------------------------------

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_mutex = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """This process's retirement threads (a forked child makes its own)."""
    global _pool, _pool_pid
    with _pool_mutex:
        if _pool is None or _pool_pid != os.getpid():
            _pool, _pool_pid = ThreadPoolExecutor(RETIRE_THREADS, thread_name_prefix="retire"), os.getpid()
        return _pool


def start_retirement(store, schedd, settings, record, user: str | None, address: str, jobs: list[Job]):
    """Mark `jobs` (running workers of `record`'s cluster) as retiring and hand them to a retirement thread;
    returns at once (the Future, for tests). The thread retires them through `address`, then removes the
    jobs whose marks are still live (htdask/state/retiring.py)."""
    name, ids = record.name, [j.job_id for j in jobs]
    token = uuid.uuid4().hex
    lifetime = settings.retire_timeout + settings.lock_ttl + RETIRE_GRACE
    store.mark_retiring(name, token, ids, lifetime)
    log.info("cluster %s: retiring %s through scheduler %s (at most %gs), then removing their jobs", name,
             brief.jobs(ids), address, settings.retire_timeout)
    reason = f"scale down of {name} to {record.desired}"
    return _executor().submit(_retire_then_remove, store, schedd, settings, name, user, address,
                              {j.job_id: j.name for j in jobs}, token, time.monotonic() + lifetime, reason)


def _retire_then_remove(store, schedd, settings, name: str, user: str | None, address: str,
                        workers: dict[str, str], token: str, deadline: float, reason: str) -> list[str]:
    """Retire the workers (job id -> worker name), then remove the jobs still marked by `token` under the
    cluster's lock; returns the job ids removed. Never raises (one log line per failure)."""
    try:
        budget = min(settings.retire_timeout, deadline - time.monotonic() - settings.lock_ttl - RETIRE_GRACE / 2)
        if budget > 0:
            try:
                retired = dask_retire.retire(address, list(workers.values()), budget)
                log.info("cluster %s: scheduler %s retired %s", name, address, brief.names(retired))
            except dask_retire.RetireFailed as err:
                log.warning("cluster %s: removing %d running workers without retirement: %s", name,
                            len(workers), err)
        else:
            log.warning("cluster %s: retirement of %s started too late; removing them without it", name,
                        brief.jobs(workers))
        return _remove_claimed(store, schedd, settings, name, user, token, deadline, reason)
    except Exception as err:  # a thread's failure must be seen; the marks expire and the next reconcile redoes it
        log.error("cluster %s: retirement of %s failed: %s", name, brief.jobs(workers), err)
        return []


def _remove_claimed(store, schedd, settings, name, user, token, deadline, reason) -> list[str]:
    lock = store.cluster_lock(name)
    if not store.acquire(lock, blocking=True, blocking_timeout=max(0.1, deadline - time.monotonic())):
        log.warning("cluster %s: lock busy until the retiring marks expired; the next reconcile decides", name)
        return []
    try:
        ids = store.claim_retiring(name, token)
        if not ids:
            log.info("cluster %s: retired workers' marks expired or were dropped (deleted?); removing nothing", name)
            return []
        log.info("cluster %s: removing %s after retirement as %s", name, brief.jobs(ids), user or _me())
        try:
            remove_jobs(schedd, name, ids, user, reason)
        except ScheddError as err:
            log.error("cluster %s: removing retired %s failed (the next reconcile retries): %s", name,
                      brief.jobs(ids), err)
            return []
        return ids
    finally:
        if not store.release(lock):
            log.warning("cluster %s: lock expired before release", name)
