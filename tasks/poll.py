"""The queue poller: one `condor_q` for every cluster of a schedd, summaries into Redis.

Run by beat every POLL_INTERVAL seconds on each schedd's queue. A poll
- holds the schedd's poll lock, so two beat processes (or a slow schedd) never double a poll;
- asks the schedd once, with a constraint on our marker attribute and only the attributes we use;
- retries that query with backoff (condor_q fails now and then on busy pools); when it keeps failing
  the old summaries stay, marked stale by the poll status, never reset to zero;
- writes every summary and job record in one pipeline;
- asks for a reconcile of each cluster whose live count drifted from its desired count or that has
  held jobs (the held-job policy lives in the reconcile);
- asks the Dask scheduler of each cluster with running jobs which workers are connected (one bounded
  `identity` call per scheduler and poll, all at once: workers.dask_scheduler), so that `status` can
  name a job that runs but whose worker is not connected.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

from htdask.state import Store
from htdask.domain.jobspec import POLL_PROJECTION, ours_constraint
from tasks import ended
from workers.htcondor.schedd import Schedd, ScheddError
from htdask.domain.jobend import end_kind
from htdask.domain.jobstatus import KEYS, JobStatus, kept_hold
from htdask.domain.retry import retrying
from workers import dask_scheduler
from htdask.domain.summary import AdCounts, ClusterSummary, JobRecord, summarize

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
            if kept_hold(JobStatus.HELD, summary.held_reason_codes.get(reason), keep_codes)}


def summary_fields(summary, polled_at: float, keep_codes=()) -> dict:
    """The Redis form of one cluster's summary (see htdask.state.keys): a count per JobStatus key, the owner,
    hold reasons and codes, idle jobs no slot matched (LastRejMatchReason -> jobs)."""
    return {
        **{key: getattr(summary, key) for key in KEYS}, "owner": summary.owner,
        "held_reasons": summary.held_reasons, "held_codes": held_codes(summary), "max_index": summary.max_index,
        "polled_at": polled_at, "held_kept": kept_holds(summary, keep_codes),
        "unmatched": summary.unmatched_reasons,
    }


def held_codes(summary) -> dict[str, int]:
    """Held jobs by HoldReasonCode (`unknown` when the ad has none): bounded, unlike the reasons' text."""
    out: dict[str, int] = {}
    for reason, n in summary.held_reasons.items():
        code = summary.held_reason_codes.get(reason)
        key = "unknown" if code is None else str(code)
        out[key] = out.get(key, 0) + n
    return out


_encode = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per record


def job_fields(summary) -> dict[str, str]:
    return {rec.job_id: _encode(dict(zip(JobRecord._fields, rec))) for rec in summary.jobs}


def jobs_digest(summary) -> str:
    """A fingerprint of a cluster's job records: unchanged records are not rewritten or re-read."""
    return "b2:" + hashlib.blake2b(repr(summary.jobs).encode(), digest_size=16).hexdigest()


def _short(record, summary) -> bool:
    """True when a cluster has fewer live jobs than it wants (some may have ended since the last poll)."""
    wanted = len(record.names) if record.names is not None else record.desired
    return (live_count(summary) if summary else 0) < wanted


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
        lock = self.store.poll_lock(self.name)
        if not self.store.acquire(lock):
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
            self.store.release(lock)  # expired (Redis away for a whole TTL): the next poll proceeds anyway

    def _recently_polled(self) -> bool:
        """A good poll less than half a period ago, by Redis' clock (whoever wrote it, whatever its clock)."""
        ok_at = self.store.poll_status(self.name).get("ok_at")
        return bool(ok_at) and self.store.now() - float(ok_at) < self.settings.poll_interval / 2

    def _query(self, counts: AdCounts):
        for attempt in retrying(self.settings.poll_query_attempts, 0.5, 30.0, ScheddError, log,
                                f"schedd {self.name}: condor_q"):
            with attempt:
                counts.unparsed = counts.degraded = 0
                return summarize(self.schedd.query(ours_constraint(), POLL_PROJECTION), counts=counts)

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
        # Redis' clock for what others compare with their "now" (status, --wait, the throttle above); this
        # host's clock, the schedd's, for condor_history's times (the end of the last good poll's window).
        polled_at, local_at = self.store.now(), time.time()
        last_ok = float(self.store.poll_status(self.name).get("ok_at_local") or 0)
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
        short = [n for n, rec in mine.items() if _short(rec, summaries.get(n))]
        self._add_ended(fields, jobs, previous, short, last_ok - 2 if last_ok else None)
        self._add_schedulers(fields, summaries, mine)
        result.unparsed, result.degraded = counts.unparsed, counts.degraded
        self.store.write_poll(self.name, fields, jobs, polled_at, unparsed=counts.unparsed,
                              degraded=counts.degraded, duration=time.monotonic() - started, local_at=local_at)
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

    def _add_ended(self, fields: dict[str, dict], jobs: dict[str, dict], previous: dict[str, dict],
                   short: list[str], since: float | None) -> None:
        """Record how jobs that left the queue ended, and count them as completed or removed.

        Ended jobs leave the queue at once, so condor_q alone would always say 0 completed. One history
        call, only when needed, reads the job ids the last poll saw and this one does not (only clusters
        whose records changed can have any), and the jobs of clusters short of their target (`short`)
        that ended since the last poll (`since`): a worker dying within one poll period is never seen
        in the queue. Each ended job is recorded once (tasks/ended.py); the totals accumulate.
        """
        vanished: dict[str, set[str]] = {}
        for name, ids in self.store.job_ids_many(list(jobs)).items():
            gone = set(ids) - set(jobs[name])
            if gone:
                vanished[name] = gone
        constraint = ended.history_constraint(vanished, short, since)
        new = self.store.add_ended(ended.fetch(self.schedd, constraint, self.name)) if constraint else {}
        for name, f in fields.items():
            before = previous.get(name) or {}
            by_kind = dict(before["ended"]) if isinstance(before.get("ended"), dict) else {
                k: n for k, n in (("unknown", int(before.get("ended_completed") or 0)),  # a summary written
                                  ("removed", int(before.get("ended_removed") or 0))) if n}  # before `ended`
            for r in new.get(name, []):  # how each ended: htdask.domain.jobend
                kind = end_kind(r)
                by_kind[kind] = by_kind.get(kind, 0) + 1
            f["ended"] = by_kind
            f["ended_removed"] = by_kind.get("removed", 0)
            f["ended_completed"] = sum(by_kind.values()) - f["ended_removed"]
            f["completed"] += f["ended_completed"]
            f["removed"] += f["ended_removed"]

    def _add_schedulers(self, fields: dict[str, dict], summaries: dict, mine: dict) -> None:
        """Ask each cluster's Dask scheduler (its recorded address, else DASK_SCHEDULER_ADDRESS) which of
        its running jobs' workers are connected, for the clusters with running jobs; bounded (at most
        about POLL_INTERVAL / 2 seconds, one call per scheduler)."""
        wanted = {}
        for name, rec in mine.items():
            summary = summaries.get(name)
            address = (rec.options or {}).get("scheduler_address") or self.settings.dask_scheduler_address
            if summary is not None and summary.running and address.startswith("tcp://"):  # tls needs credentials
                wanted[name] = address
        if not wanted:
            return
        bound = max(0.2, min(2.0, self.settings.poll_interval / 2))
        views = dask_scheduler.connected_workers(set(wanted.values()), timeout=min(1.0, bound), total=bound)
        for name, address in wanted.items():
            view = views[address]
            running = [j for j in summaries[name].jobs if j.status == JobStatus.RUNNING]
            doc = {"address": address, "running": len(running), "error": view.error}
            if view.names is not None:
                missing = [j for j in running if j.name not in view.names]
                doc["connected"] = len(running) - len(missing)
                doc["not_connected"] = [[j.job_id, j.name, j.since] for j in missing[:20]]
            fields[name]["scheduler"] = doc

    def _forget_vanished(self, present: set[str]) -> None:
        """Drop summaries of clusters that are neither requested nor in the queue any more."""
        for name in self.store.summarized_clusters():
            if name not in present and self.store.get(name) is None:
                self.store.delete(name)
