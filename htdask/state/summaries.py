"""Poll results: per-cluster summaries and job records, each schedd's poll status, and ended jobs
(written by the poller, tasks/poll.py; read by `status`, the reconcile and the crash-loop rule)."""
from __future__ import annotations

import json

from htdask.state import keys


class SummaryStore:
    """The poll-results part of `state.Store` (needs `self.r`, `self.metrics`)."""

    SCRIPTS: dict = {}

    def write_poll(self, schedd: str, summaries: dict[str, dict], jobs: dict[str, dict[str, str]],
                   polled_at: float, unparsed: int = 0, degraded: int = 0, duration: float | None = None,
                   local_at: float | None = None) -> None:
        """Write every cluster's summary, the job records of the clusters in `jobs` (the others are
        unchanged), the poll status (with the counts of odd ads skipped / degraded; `duration`: seconds
        the poll took) and the buffered measurements, in one pipeline.

        `polled_at` is Redis' clock (`now()`); `local_at` the same moment by the submit node's own clock,
        which is the schedd's (job ads' and condor_history's times, crash-loop backoff): the poll status
        keeps both as `ok_at` and `ok_at_local`, so readers convert between them (`schedd_clock`)."""
        pipe = self.r.pipeline(transaction=True)
        for name, summary in summaries.items():
            pipe.delete(keys.summary(name))
            pipe.hset(keys.summary(name), mapping={k: _encode(v) for k, v in summary.items()})
        for name, records in jobs.items():
            pipe.delete(keys.jobs(name))
            if records:
                pipe.hset(keys.jobs(name), mapping=records)
        pipe.hset(keys.poll(schedd), mapping={"polled_at": polled_at, "ok_at": polled_at, "failures": 0,
                                              "error": "", "unparsed": unparsed, "degraded": degraded})
        if duration is not None:
            pipe.hset(keys.poll(schedd), "duration", round(duration, 6))
        if local_at is not None:
            pipe.hset(keys.poll(schedd), "ok_at_local", local_at)
        self.metrics.drain_into(pipe)
        pipe.execute()

    def poll_failed(self, schedd: str, error: str) -> None:
        at = self.now()  # Redis' clock (htdask.state.nodes)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(keys.poll(schedd), mapping={"error": error, "polled_at": at})
        pipe.hincrby(keys.poll(schedd), "failures", 1)
        pipe.hincrby(keys.poll(schedd), "failures_total", 1)
        self.metrics.drain_into(pipe)
        pipe.execute()

    def poll_status(self, schedd: str) -> dict:
        return self.r.hgetall(keys.poll(schedd))

    @staticmethod
    def schedd_clock(poll: dict, now: float) -> float:
        """`now` (Redis' clock) on the clock of the schedd's submit node, as measured at its last good poll
        (`poll`: its poll status): for comparing with job ads' times and crash-loop backoff."""
        try:
            return now - (float(poll["ok_at"]) - float(poll["ok_at_local"]))
        except (KeyError, TypeError, ValueError):
            return now

    def summary(self, name: str) -> dict:
        return {k: _decode(v) for k, v in self.r.hgetall(keys.summary(name)).items()}

    def summaries(self, names: list[str]) -> dict[str, dict]:
        pipe = self.r.pipeline(transaction=False)
        for n in names:
            pipe.hgetall(keys.summary(n))
        return {n: {k: _decode(v) for k, v in h.items()} for n, h in zip(names, pipe.execute())}

    def job_ids_many(self, names: list[str]) -> dict[str, list[str]]:
        """The job ids of several clusters' records, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for n in names:
            pipe.hkeys(keys.jobs(n))
        return dict(zip(names, pipe.execute()))

    def job_records(self, name: str) -> dict[str, dict]:
        return {jid: json.loads(v) for jid, v in self.r.hgetall(keys.jobs(name)).items()}

    def summarized_clusters(self) -> list[str]:
        """Clusters that have a summary, including ones found in the queue but not requested by us."""
        prefix = keys.summary("")
        return sorted(k[len(prefix):] for k in self.r.scan_iter(match=prefix + "*", count=1000))

    # ---- ended jobs and crash loops -------------------------------------------------------------
    ENDED_TTL = 86400

    def add_ended(self, records: dict[str, dict[str, str]]) -> dict[str, list[dict]]:
        """Record ended jobs ({cluster: {job id: JSON}}) once each; returns the newly recorded ones."""
        pipe = self.r.pipeline(transaction=False)
        order = []
        for name, recs in records.items():
            for jid, rec in recs.items():
                pipe.hsetnx(keys.ended(name), jid, rec)
                order.append((name, rec))
            pipe.expire(keys.ended(name), self.ENDED_TTL)
        out: dict[str, list[dict]] = {}
        results = iter(pipe.execute())
        i = 0
        for name, recs in records.items():
            for _ in recs:
                if next(results):
                    out.setdefault(name, []).append(json.loads(order[i][1]))
                i += 1
            next(results)  # the EXPIRE
        return out

    def ended_records(self, name: str) -> list[dict]:
        return [json.loads(v) for v in self.r.hvals(keys.ended(name))]


def _encode(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    return value


def _decode(value: str):
    if value == "":
        return None
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value
