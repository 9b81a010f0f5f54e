"""The gateway's answers to "is this worker (or scheduler job) still on its way or alive?".

They come from what the controller's poller keeps in Redis (one read per cluster, no schedd call),
judged by the rules of `htdask.gateway.jobcheck`, and from the schedd's history for jobs that ended
before a poll saw them (asked through the controller's `tasks.ended_jobs`, at most
`HISTORY_BATCH` workers per cluster and check). A False answer is final per worker name (the
gateway never reuses one), so repeated checks of a stopped worker never flip back (issue 19).
"""
from __future__ import annotations

import asyncio
import logging
import time

from dask_gateway_server.backends.db_base import JobStatus

from htdask.domain import jobend
from htdask.gateway import jobcheck
from htdask.gateway.controller import Controller
from htdask.gateway.eventlog import EventLogs

log = logging.getLogger(__name__)

#: most unseen workers of one cluster looked up in the history per check
HISTORY_BATCH = 20
#: a poll older than this (seconds) while workers wait is reported (is beat running?)
STALE_POLL = 300.0
#: seconds before the history of the same unseen worker is asked again
HISTORY_REASK = 30.0

Ask = dict[str, tuple[str | None, float, float | None]]  # worker name -> (seen job id, enqueued_at, connected)


class WorkerChecks:
    def __init__(self, controller: Controller, *, connect_timeout: float, history_grace: float,
                 kept_hold_codes: tuple[int, ...], event_log_path=lambda cluster: None):
        self.controller = controller
        self.connect_timeout = connect_timeout  # seconds a running job may go without its worker connecting
        self.history_grace = history_grace  # seconds before an unseen job is looked up in the history
        self.kept_hold_codes = kept_hold_codes  # HoldReasonCodes that are not failed starts
        self.ended: dict[str, jobcheck.Verdict] = {}  # worker name -> its final False verdict
        self.connected_at: dict[str, float] = {}  # worker name -> a time by which it had connected
        self.event_log_path = event_log_path  # cluster -> its job event log (None: not staged yet)
        self.event_logs = EventLogs()  # the clusters' job event logs, followed between checks
        self._history_asked: dict[str, float] = {}
        self._stale_warned: dict[str, float] = {}

    def forget_cluster(self, cluster) -> None:
        """Drop everything kept about a stopping cluster and its workers."""
        self.event_logs.forget(cluster.name)
        for w in cluster.workers.values():
            self.forget(w.name, all_memos=True)

    def forget(self, worker_name: str, *, all_memos: bool = False) -> None:
        """Drop what is kept about a worker (all of it when its cluster stops)."""
        self._history_asked.pop(worker_name, None)
        if all_memos:
            self.ended.pop(worker_name, None)
            self.connected_at.pop(worker_name, None)

    async def workers(self, workers, db) -> list[bool]:
        """One answer per worker: False once its job failed to start or, for a worker that connected,
        once its job is gone; True while the job is on its way or alive. New job ids go to `db`."""
        now = time.time()
        by_cluster: dict[str, list] = {}
        log_paths: dict[str, str | None] = {}
        result: dict[int, bool] = {}
        for w in workers:
            if w.name in self.ended:
                result[id(w)] = False
                continue
            if w.status >= JobStatus.RUNNING:  # connected by now (a bound, kept across checks)
                self.connected_at.setdefault(w.name, now)
            by_cluster.setdefault(w.cluster.name, []).append(w)
            log_paths.setdefault(w.cluster.name, self.event_log_path(w.cluster))
        for name, ws in by_cluster.items():
            ask = {w.name: ((w.state or {}).get("job_id"), (w.state or {}).get("enqueued_at", 0),
                            self.connected_at.get(w.name)) for w in ws}
            try:
                verdicts = await self.classify(name, ask, log_paths.get(name))
            except Exception as exc:  # Redis unreachable: no news is not failure
                log.warning("cluster %s: cannot read job records (%s); workers stay pending", name, exc)
                verdicts = {}
            for w in ws:
                result[id(w)] = self._apply(name, w, verdicts.get(w.name), db)
        return [result[id(w)] for w in workers]

    def _apply(self, cluster: str, w, v: jobcheck.Verdict | None, db) -> bool:
        if v is None:
            return True
        if v.ok and v.job_id and v.job_id != (w.state or {}).get("job_id"):
            db.update_worker(w, state={**(w.state or {}), "job_id": v.job_id})
            log.info("cluster %s: worker %s is job %s (%s)", cluster, w.name, v.job_id, v.state)
        if not v.ok:
            self.ended[w.name] = v
            if w.name in self.connected_at:
                log.info("cluster %s: worker %s is gone: %s", cluster, w.name, v.reason)
            else:
                log.warning("cluster %s: worker %s failed to start: %s", cluster, w.name, v.reason)
        return v.ok

    async def scheduler_job(self, cluster, db) -> bool:
        """Whether the scheduler job of a ``scheduler_mode = "job"`` cluster is on its way or alive."""
        state = cluster.state
        verdicts = await self.classify(state["scheduler_job"],
                                       {"scheduler": (state.get("seen_job"), state.get("enqueued_at", 0), None)})
        v = verdicts["scheduler"]
        if v.job_id and v.ok and v.job_id != state.get("seen_job"):
            db.update_cluster(cluster, state={**state, "seen_job": v.job_id})
        if not v.ok:
            log.warning("cluster %s: scheduler job failed to start: %s", cluster.name, v.reason)
        return v.ok

    async def classify(self, cluster_name: str, ask: Ask, log_path: str | None = None) -> dict[str, jobcheck.Verdict]:
        """Verdicts for the workers in `ask` of one controller cluster; the job event log at `log_path`
        (htdask/gateway/eventlog.py) adds what happened since the last poll."""
        records, summary, record, poll, ended = await asyncio.to_thread(self.controller.read_jobs, cluster_name)
        log_ended, log_held = await asyncio.to_thread(self.event_logs.read, cluster_name, log_path)
        known = {e.get("job_id") for e in ended}  # the controller's record (from the history) comes first
        ended = list(ended) + [e for e in log_ended if e.get("job_id") not in known]
        held_by_name = jobcheck.index_by_name({h.get("job_id"): h for h in log_held})
        by_name = jobcheck.index_by_name(records)
        ended_by_name = jobcheck.index_by_name({e.get("job_id"): e for e in ended})
        now = time.time()
        self._warn_if_stale(cluster_name, poll, now)
        verdicts = {}
        for name, (seen, enqueued_at, connected_since) in ask.items():
            verdicts[name] = jobcheck.classify(
                records=by_name.get(name, []), seen_job=seen, enqueued_at=enqueued_at,
                polled_at=summary.get("polled_at"), now=now, connect_timeout=self.connect_timeout,
                submit_error=record.error if record else None,
                submit_error_at=record.error_at if record else None, kept_hold_codes=self.kept_hold_codes,
                ended=ended_by_name.get(name, []), connected_since=connected_since,
                held=held_by_name.get(name, []))
        await self._add_history(cluster_name, ask, verdicts, now)
        return verdicts

    def _warn_if_stale(self, cluster_name: str, poll: dict, now: float) -> None:
        ok_at = float(poll.get("ok_at") or 0)
        if now - ok_at > STALE_POLL and now - self._stale_warned.get(cluster_name, 0) > STALE_POLL:
            self._stale_warned[cluster_name] = now
            log.warning("cluster %s: no successful poll of schedd %s for %s (%s); pending workers stay pending "
                        "until one (is `celery beat` running?)", cluster_name, self.controller.schedd,
                        f"{now - ok_at:.0f}s" if ok_at else "ever", poll.get("error") or "no error recorded")

    async def _add_history(self, cluster_name: str, ask: Ask, verdicts: dict, now: float) -> None:
        """Look up ended jobs in the history: exit codes of ended ones, and unseen ones that came and went."""
        names = [n for n, v in verdicts.items() if v.need_history and v.state == "ended"]
        unseen = sorted((ask[n][1], n) for n, v in verdicts.items() if v.need_history and v.state == "unseen"
                        and now - ask[n][1] >= self.history_grace
                        and now - self._history_asked.get(n, 0) >= HISTORY_REASK)
        for _, name in unseen[:HISTORY_BATCH]:  # oldest requests first; the rest on later checks
            self._history_asked[name] = now
            names.append(name)
        if not names:
            return
        ads = await self.controller.ended_jobs(cluster_name, names)
        for name in names:
            v, ad = verdicts[name], ads.get(name)
            if v.state == "ended":
                if ad is not None:
                    v.reason = jobend.describe(jobend.record_of(ad))
            elif ad is not None and (ad.get("EnteredCurrentStatus") or now) >= ask[name][1] - 5:
                verdicts[name] = jobcheck.Verdict(False, "ended", f"{ad.get('ClusterId')}.{ad.get('ProcId')}",
                                                  jobend.describe(jobend.record_of(ad)))
