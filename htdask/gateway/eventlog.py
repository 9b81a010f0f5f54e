"""What the clusters' job event logs say about worker jobs, read as the events arrive (issue 19).

Every worker job writes HTCondor's job event log `<staging>/logs/<cluster>.log` (htdask/domain/jobspec.py:
``log``, and ``submit_event_notes = DaskWorkerName=<name>`` so the 000 event names the worker). The
gateway follows each cluster's file with HTCondor's own reader, ``htcondor2.JobEventLog``, kept open
between checks (it remembers its offset) and read without blocking (``events(stop_after=0)``), so a
worker job that ended or was held is known at the next ``do_check_workers`` — within a second — instead
of at the next queue poll (POLL_INTERVAL, 15 s by default).

From the events (codes as in the HTCondor manual's "Job Event Log Codes"):

- 005 (terminated) and 009 (aborted) give an ended-job record shaped as `htdask.domain.jobend`'s
  (job id, worker name, JobStatus 4 / 3, exit code or signal, removal reason, end time), which
  `htdask.gateway.jobcheck.classify` treats as the controller's own records;
- 012 (held) gives a held record (HoldReason, HoldReasonCode, time), withdrawn by a later 013
  (released), 001 (executing), 005 or 009. `classify` fails a start on it only if its code is not one
  a person's hold uses (HOLD_KEEP_CODES), as for a held job seen by a poll;
- 000, 001 and 004 (evicted / requeued) are only bookkeeping: a job idle or running is never a failed
  start on the event log's word.

A log that does not exist yet (no job started), cannot be read (permissions), or is not an event log
is simply no news: the queue poll and the history remain the source of truth.
"""
from __future__ import annotations

import logging
import os
import threading

from htdask.domain.jobstatus import JobStatus

log = logging.getLogger(__name__)

NAME_NOTE = "DaskWorkerName="
#: event type numbers (HTCondor's ULogEventNumber)
SUBMIT, EXECUTE, TERMINATED, ABORTED, HELD, RELEASED = 0, 1, 5, 9, 12, 13


class ClusterLog:
    """One cluster's event log, followed from where the last read stopped."""

    def __init__(self, cluster: str, path: str):
        self.cluster, self.path = cluster, path
        self._jel = None
        self._lock = threading.Lock()
        self.names: dict[str, str] = {}  # job id "C.P" -> worker name (from the 000 event's notes)
        self.ended: dict[str, dict] = {}  # job id -> ended-job record
        self.held: dict[str, dict] = {}  # job id -> held record (withdrawn by a later event)
        self._warned = False

    def read(self) -> None:
        """Take in the events appended since the last read (never blocks)."""
        with self._lock:
            try:
                if self._jel is None:
                    if not os.path.exists(self.path):
                        return  # no job of the cluster has been submitted with it yet
                    import htcondor2

                    self._jel = htcondor2.JobEventLog(self.path)
                for event in self._jel.events(stop_after=0):
                    self._take(event)
            except Exception as exc:  # unreadable or not an event log: the poll stays the source
                if not self._warned:
                    self._warned = True
                    log.warning("cluster %s: job event log %s unreadable (%s); relying on the queue poll",
                                self.cluster, self.path, exc)
                self._jel = None

    def _take(self, event) -> None:
        job = f"{event.cluster}.{event.proc}"
        kind = int(event.type)
        if kind == SUBMIT:
            notes = event.get("LogNotes") or ""
            if notes.startswith(NAME_NOTE):
                self.names[job] = notes[len(NAME_NOTE):].split()[0]
            return
        name = self.names.get(job)
        if kind in (TERMINATED, ABORTED):
            self.held.pop(job, None)
            normal = event.get("TerminatedNormally")
            self.ended[job] = {
                "job_id": job, "name": name, "index": None,
                "status": JobStatus.COMPLETED if kind == TERMINATED else JobStatus.REMOVED,
                "exit_code": event.get("ReturnValue") if kind == TERMINATED and normal else None,
                "exit_signal": event.get("TerminatedBySignal") if kind == TERMINATED and normal is False else None,
                "remove_reason": event.get("Reason") if kind == ABORTED else None,
                "ended_at": int(event.timestamp), "source": "event log"}
            log.info("cluster %s: job %s (worker %s) %s, from the job event log", self.cluster, job, name or "?",
                     "terminated" if kind == TERMINATED else "was removed")
        elif kind == HELD:
            self.held[job] = {"job_id": job, "name": name, "status": JobStatus.HELD,
                              "hold_code": event.get("HoldReasonCode"), "hold_reason": event.get("HoldReason"),
                              "since": int(event.timestamp), "source": "event log"}
        elif kind in (RELEASED, EXECUTE):
            self.held.pop(job, None)


class EventLogs:
    """The followed logs of every cluster this gateway checks (one ClusterLog per log file)."""

    def __init__(self):
        self._logs: dict[str, ClusterLog] = {}

    def read(self, cluster: str, path: str | None) -> tuple[list[dict], list[dict]]:
        """(ended-job records, held records) of the cluster's jobs, after reading its new events."""
        if not path:
            return [], []
        cl = self._logs.get(cluster)
        if cl is None or cl.path != path:
            cl = self._logs[cluster] = ClusterLog(cluster, path)
        cl.read()
        return list(cl.ended.values()), list(cl.held.values())

    def forget(self, cluster: str) -> None:
        self._logs.pop(cluster, None)
