"""Is a pending worker's HTCondor job still on its way, or has its start failed?

Pure functions over what the poller keeps in Redis (job records by worker name, the time of the poll)
so that `HTCondorBackend.do_check_workers` answers every pending worker without a schedd call.

The rules ("queue wait is not failure"):

- a job idle in the queue is pending, however long it waits;
- a job held before its worker connected is a failed start (reported with its hold reason);
- a job that ran and ended (it left the queue, or the reconciler replaced it) before its worker
  connected is a failed start (reported with its exit code, from the job's history);
- a job running for longer than the connect timeout without its worker connecting is a failed start,
  and is replaced;
- a job the poll has not seen yet is pending unless the submission failed for good (the cluster's
  recorded error is newer than our request and is not one the Celery task is retrying) or the job's
  history shows it already ended;
- a job the job event log shows terminated, removed or held (htdask/gateway/eventlog.py, read at every check)
  is known at once, not at the next poll; held by a person (kept codes) it stays pending;
- a job the controller recorded as ended (the poller's and the reconciler's `ended:<cluster>` records,
  written as soon as they see a job leave the queue, even one that came and went between two polls)
  is a failed start at once: no history lookup, no grace period;
- a worker that connected (or connected and stopped) is gone once a poll newer than its connection
  lacks its job: "not yet seen" only means pending for a worker that never connected.
"""
from __future__ import annotations

from dataclasses import dataclass

from htdask.domain import jobend
from htdask.domain.jobstatus import QUEUED, JobStatus, kept_hold

#: prefix of a cluster error recorded while the Celery task will retry (tasks.cluster_tasks.ClusterTask.on_retry)
RETRYING = "retrying after error:"
#: seconds a submission error must stand before it is final: the reconcile records the raw error, then
#: the task's on_retry replaces it with the RETRYING one a few milliseconds later
SUBMIT_ERROR_SETTLE = 2.0

#: job statuses that are still in the queue on their way to (or running) a worker
LIVE = QUEUED


@dataclass
class Verdict:
    """What a check found about one pending worker."""

    ok: bool  # True: pending or running; False: the start failed
    state: str  # unpolled | unseen | idle | running | connected | held | held-kept | stuck | ended | submit-failed
    job_id: str | None = None  # the job now carrying the worker's name (or the one that ended)
    reason: str = ""  # why the start failed (for the log)
    need_history: bool = False  # the job may have come and gone between polls: ask its history


def index_by_name(records: dict[str, dict]) -> dict[str, list[dict]]:
    """Job records (job id -> record) grouped by worker name, newest job first."""
    out: dict[str, list[dict]] = {}
    for rec in records.values():
        name = rec.get("name")
        if name:
            out.setdefault(name, []).append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: _job_key(r.get("job_id")), reverse=True)
    return out


def _job_key(job_id: str | None) -> tuple[int, int]:
    try:
        c, p = str(job_id).split(".")
        return int(c), int(p)
    except ValueError:
        return -1, -1


def classify(*, records: list[dict], seen_job: str | None, enqueued_at: float, polled_at: float | None,
             now: float, connect_timeout: float, submit_error: str | None = None,
             submit_error_at: float | None = None,
             kept_hold_codes: tuple[int, ...] = (), ended: list[dict] = (),
             connected_since: float | None = None, held: list[dict] = ()) -> Verdict:
    """Classify one worker from the records of the jobs carrying its name.

    `seen_job` is the job id an earlier check saw for this worker; `enqueued_at` when its name was
    last sent to the controller; `polled_at` the time of the poll the records come from; `ended` the
    controller's records of this name's jobs that left the queue (`htdask.domain.jobend`);
    `connected_since` (epoch s) a time by which the worker had connected to its scheduler, None if it
    never did; `held` the job event log's records of this name's jobs held now (htdask.gateway.eventlog), acted
    on at once, before any poll, as a held job in the poll's records is.
    """
    live = [r for r in records if r.get("status") in LIVE]
    gone = [e for e in ended if e.get("job_id") == seen_job or (e.get("ended_at") or 0) >= enqueued_at - 5]
    if gone and (connected_since is None or not live):
        e = max(gone, key=lambda r: _job_key(r.get("job_id")))
        # a worker that did connect: its job simply ended
        reason = jobend.describe(e, before_connect=connected_since is None)
        return Verdict(False, "ended", e.get("job_id"), reason)
    fresh_held = [h for h in held if (h.get("since") or 0) >= enqueued_at - 5
                  and not kept_hold(JobStatus.HELD, h.get("hold_code"), kept_hold_codes) and connected_since is None]
    if fresh_held:
        h = max(fresh_held, key=lambda r: _job_key(r.get("job_id")))
        code = h.get("hold_code")
        return Verdict(False, "held", h.get("job_id"),
                       f"job {h.get('job_id')} held before its worker connected: {h.get('hold_reason') or '?'}"
                       + (f" (HoldReasonCode {code})" if code is not None else ""))
    if connected_since is not None:
        if live:
            return Verdict(True, "connected", live[0].get("job_id"))
        if polled_at is not None and polled_at >= max(connected_since, enqueued_at):
            return Verdict(False, "ended", seen_job, f"job {seen_job or '?'} of the connected worker left the queue")
        return Verdict(True, "connected", seen_job)
    if polled_at is None or polled_at < enqueued_at:
        # The poll predates our request: its silence about the job means nothing yet.
        return Verdict(True, "unpolled", seen_job)
    ids = {r.get("job_id") for r in records}
    if seen_job and seen_job not in ids:
        return Verdict(False, "ended", seen_job, f"job {seen_job} left the queue before its worker connected",
                       need_history=True)
    held_now = [r for r in live if r.get("status") == JobStatus.HELD]  # (`held`: the event log's records)
    kept = [r for r in held_now if kept_hold(JobStatus.HELD, r.get("hold_code"), kept_hold_codes)]
    if kept and len(kept) == len(held_now):  # held by a person (condor_hold, HOLD_KEEP_CODES): not a failed start
        return Verdict(True, "held-kept", kept[0].get("job_id"),
                       f"job {kept[0].get('job_id')} held by a user/admin, left alone: {kept[0].get('hold_reason')}")
    if held_now:
        r = held_now[0]
        code = r.get("hold_code")
        return Verdict(False, "held", r.get("job_id"),
                       f"job {r.get('job_id')} held before its worker connected: {r.get('hold_reason') or '?'}"
                       + (f" (HoldReasonCode {code})" if code is not None else ""))
    running = [r for r in live if r.get("status") == JobStatus.RUNNING]
    if running:
        r = running[0]
        since = r.get("since")
        if connect_timeout > 0 and since and now - since > connect_timeout:
            return Verdict(False, "stuck", r.get("job_id"),
                           f"job {r.get('job_id')} running for {now - since:.0f}s without its worker "
                           f"connecting (limit {connect_timeout:g}s)")
        return Verdict(True, "running", r.get("job_id"))
    if live:
        return Verdict(True, "idle", live[0].get("job_id"))
    if (submit_error and submit_error_at and submit_error_at >= enqueued_at
            and not submit_error.startswith(RETRYING) and now - submit_error_at >= SUBMIT_ERROR_SETTLE):
        # failed for good (retries exhausted, or an error Celery does not retry): a retried one is pending
        return Verdict(False, "submit-failed", None, f"submission failed: {submit_error}")
    return Verdict(True, "unseen", None, need_history=True)
