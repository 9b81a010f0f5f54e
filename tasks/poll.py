"""The queue poller: one `condor_q` for every cluster of a schedd, summaries into Redis.

Run by beat every POLL_INTERVAL seconds on each schedd's queue. A poll
- holds the schedd's poll lock, so two beat processes (or a slow schedd) never double a poll;
- asks the schedd once, with a constraint on our marker attribute and only the attributes we use;
- retries that query with backoff (condor_q fails now and then on busy pools); when it keeps failing
  the old summaries stay, marked stale by the poll status, never reset to zero;
- writes every summary and job record in one pipeline;
- asks for a reconcile of each cluster whose live count drifted from its desired count or that has
  held jobs (the held-job policy lives in the reconcile).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

from state import Store
from workers.jobspec import POLL_PROJECTION, ours_constraint
from workers.schedd import Schedd, ScheddError
from workers.jobstatus import JobStatus
from workers.summary import AdCounts, ClusterSummary, JobRecord, summarize

log = logging.getLogger(__name__)


@dataclass
class PollResult:
    schedd: str
    state: str = "ok"  # ok | skipped | failed
    clusters: int = 0
    jobs: int = 0
    reconcile: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    #: ads skipped (no integer ClusterId/ProcId/JobStatus) and ads kept with a value repaired or ignored
    unparsed: int = 0
    degraded: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def kept_holds(summary, keep_codes) -> dict[str, int]:
    """Hold reason -> jobs, of the holds a person made (HoldReasonCode in `keep_codes`): left alone."""
    return {reason: n for reason, n in summary.held_reasons.items()
            if summary.held_reason_codes.get(reason) in keep_codes}


def summary_fields(summary, polled_at: float, keep_codes=()) -> dict:
    """The Redis form of one cluster's summary (see state.keys)."""
    return {
        "idle": summary.idle, "running": summary.running, "held": summary.held,
        "suspended": summary.suspended, "completed": summary.completed, "removed": summary.removed,
        "held_reasons": summary.held_reasons, "max_index": summary.max_index, "polled_at": polled_at,
        "held_kept": kept_holds(summary, keep_codes),
    }


_encode = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per record


def job_fields(summary) -> dict[str, str]:
    return {rec.job_id: _encode(dict(zip(JobRecord._fields, rec))) for rec in summary.jobs}


def jobs_digest(summary) -> str:
    """A fingerprint of a cluster's job records: unchanged records are not rewritten or re-read."""
    return "b2:" + hashlib.blake2b(repr(summary.jobs).encode(), digest_size=16).hexdigest()


def live_count(summary) -> int:
    """Jobs that hold a worker slot or wait for one; held jobs count until the hold policy replaces them."""
    return summary.active + summary.held


class Poller:
    def __init__(self, store: Store, schedd: Schedd, schedd_name: str, settings):
        self.store = store
        self.schedd = schedd
        self.name = schedd_name
        self.settings = settings

    def poll(self, force: bool = False) -> PollResult:
        result = PollResult(self.name)
        lock = self.store.poll_lock(self.name, timeout=max(2 * self.settings.poll_interval, 120))
        if not lock.acquire(blocking=False):
            result.state = "skipped"
            log.info("schedd %s: a poll is already running; skipping", self.name)
            return result
        try:
            if not force and self._recently_polled():
                result.state = "skipped"
                log.info("schedd %s: polled less than half a period ago; skipping", self.name)
                return result
            return self._poll(result)
        finally:
            try:
                lock.release()
            except Exception:  # expired: the next poll proceeds anyway
                log.warning("schedd %s: poll lock expired before release", self.name)

    def _recently_polled(self) -> bool:
        ok_at = self.store.poll_status(self.name).get("ok_at")
        return bool(ok_at) and time.time() - float(ok_at) < self.settings.poll_interval / 2

    def _query(self, counts: AdCounts):
        attempts = max(1, self.settings.poll_query_attempts)
        for attempt in range(attempts):
            counts.unparsed = counts.degraded = 0
            try:
                return summarize(self.schedd.query(ours_constraint(), POLL_PROJECTION), counts=counts)
            except ScheddError as err:
                if attempt == attempts - 1:
                    raise
                pause = 0.5 * 2 ** attempt
                log.warning("schedd %s: condor_q failed (attempt %d of %d), retrying in %.1fs: %s",
                            self.name, attempt + 1, attempts, pause, err)
                time.sleep(pause)

    def _poll(self, result: PollResult) -> PollResult:
        started = time.monotonic()
        counts = AdCounts()
        try:
            summaries = self._query(counts)
        except ScheddError as err:
            result.state, result.error = "failed", str(err)
            self.store.poll_failed(self.name, str(err))
            log.error("schedd %s: poll failed, summaries kept and marked stale: %s", self.name, err)
            return result
        polled_at = time.time()
        known = {n: self.store.get(n) for n in self.store.cluster_names()}
        mine = {n: rec for n, rec in known.items() if rec is not None and rec.schedd == self.name}
        fields, jobs = {}, {}
        names = [n for n in set(mine) | set(summaries)
                 # jobs of a deleted cluster still leaving the queue get no summary
                 if n in mine or live_count(summaries[n]) > 0]
        previous = self.store.summaries(names)
        for name in names:
            summary = summaries.get(name) or ClusterSummary(name)
            fields[name] = summary_fields(summary, polled_at, self.settings.hold_keep_codes)
            fields[name]["jobs_digest"] = jobs_digest(summary)
            if fields[name]["jobs_digest"] != (previous.get(name) or {}).get("jobs_digest"):
                jobs[name] = job_fields(summary)  # only changed clusters' records are rewritten
        self._add_ended(fields, jobs, previous)
        result.unparsed, result.degraded = counts.unparsed, counts.degraded
        self.store.write_poll(self.name, fields, jobs, polled_at, unparsed=counts.unparsed,
                              degraded=counts.degraded)
        self._forget_vanished(set(summaries) | set(mine))
        for name, rec in mine.items():
            summary = summaries.get(name)
            live = live_count(summary) if summary else 0
            # holds a person made are left alone: they ask for no reconcile
            held = summary.held - sum(fields[name]["held_kept"].values()) if summary else 0
            wanted = len(rec.names) if rec.names is not None else rec.desired
            if live != wanted or held:
                result.reconcile.append(name)
                log.info("cluster %s: %d live jobs (%d held), desired %d: asking for a reconcile",
                         name, live, held, wanted)
        result.clusters, result.jobs = len(fields), sum(s.total for s in summaries.values())
        result.seconds = time.monotonic() - started
        log.info("schedd %s: polled %d jobs of %d clusters in %.2fs", self.name, result.jobs, result.clusters,
                 result.seconds)
        if counts.unparsed or counts.degraded:
            log.warning("schedd %s: %d job ads skipped, %d kept with odd values (see the lines above)",
                        self.name, counts.unparsed, counts.degraded)
        return result

    def _add_ended(self, fields: dict[str, dict], jobs: dict[str, dict], previous: dict[str, dict]) -> None:
        """Count jobs that left the queue since the last poll as completed or removed.

        Ended jobs leave the queue at once, so condor_q alone would always say 0 completed. The job ids
        the last poll saw and this one does not (only clusters whose records changed can have any) are
        looked up in the history, in one call, only when there are any; the totals accumulate.
        """
        vanished: dict[str, set[str]] = {}
        for name, ids in self.store.job_ids_many(list(jobs)).items():
            gone = set(ids) - set(jobs[name])
            if gone:
                vanished[name] = gone
        ended = self._history(vanished) if vanished else {}
        for name, f in fields.items():
            before = previous.get(name) or {}
            done, removed = ended.get(name, (0, 0))
            f["ended_completed"] = int(before.get("ended_completed") or 0) + done
            f["ended_removed"] = int(before.get("ended_removed") or 0) + removed
            f["completed"] += f["ended_completed"]
            f["removed"] += f["ended_removed"]

    def _history(self, vanished: dict[str, set[str]]) -> dict[str, tuple[int, int]]:
        by_cluster: dict[int, list[int]] = {}
        for ids in vanished.values():
            for job_id in ids:
                c, p = job_id.split(".")
                by_cluster.setdefault(int(c), []).append(int(p))
        terms = " || ".join(f"(ClusterId == {c} && member(ProcId, {{{','.join(map(str, sorted(ps)))}}}))"
                            for c, ps in sorted(by_cluster.items()))
        total = sum(len(v) for v in vanished.values())
        counts: dict[str, list[int]] = {}
        try:
            for ad in self.schedd.history(f"{ours_constraint()} && ({terms})",
                                          ["ClusterId", "ProcId", "JobStatus", "DaskGatewayCluster"], limit=total):
                if type(ad.get("DaskGatewayCluster")) is not str:  # an odd ad counts for nobody
                    continue
                c = counts.setdefault(ad.get("DaskGatewayCluster"), [0, 0])
                if ad.get("JobStatus") == JobStatus.COMPLETED:
                    c[0] += 1
                elif ad.get("JobStatus") == JobStatus.REMOVED:
                    c[1] += 1
        except ScheddError as err:
            log.warning("schedd %s: history of %d ended jobs unavailable: %s", self.name, total, err)
        return {name: (c[0], c[1]) for name, c in counts.items()}

    def _forget_vanished(self, present: set[str]) -> None:
        """Drop summaries of clusters that are neither requested nor in the queue any more."""
        for name in self.store.summarized_clusters():
            if name not in present and self.store.get(name) is None:
                self.store.delete(name)
