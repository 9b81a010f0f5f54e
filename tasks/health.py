"""Is a cluster's state true now? Staleness by age, queues nobody consumes, unknown clusters, and the
forced delete of a cluster whose queue nobody consumes.

Rules (README "A cluster's state tells the truth"):
- a summary is stale when its poll failed, when it is older than STALE_FACTOR x POLL_INTERVAL (beat or
  the worker stopped), or when no worker consumes the cluster's schedd queue (heartbeats,
  tasks.heartbeat); the reason says which;
- every age here is Redis' clock (`Store.now()`) minus a time Redis' clock wrote (heartbeats, poll times):
  hosts whose clocks disagree still agree on these;
- a cluster is unknown when it has neither a record nor a summary nor job records: `status`, `jobs`
  and `delete` refuse it with one line (exit 1).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from htdask.domain.jobstatus import QUEUED
from htdask.state import Store
from tasks import heartbeat
from tasks.config import settings

log = logging.getLogger(__name__)

#: a summary older than this many poll periods is stale
STALE_FACTOR = 3


class UnknownCluster(LookupError):
    """No record, summary or job record of the cluster: one line, exit 1 at the CLI."""

    def __init__(self, cluster: str):
        super().__init__(f"no cluster named {cluster!r}")
        self.cluster = cluster


def consumed(store: Store, queue: str) -> bool:
    """True when a worker heartbeat for `queue` is recent (tasks.heartbeat)."""
    return bool(store.consumers(queue, heartbeat.MAX_AGE))


def no_consumer_message(queue: str) -> str:
    return f"no worker consumes queue {queue}"


def staleness(store: Store, queue: str, polled_at: float | None, poll: dict, now: float | None = None,
              consumers: dict | None = None) -> str | None:
    """Why a summary of a cluster on `queue`, polled at `polled_at` (epoch s, Redis' clock), is stale; None
    when fresh.

    `poll` is the schedd's poll status (state key poll:<schedd>); `now` Redis' clock (default: read it);
    `consumers` caches queue -> consumed.
    """
    now = store.now() if now is None else now
    if consumers is None:
        consumers = {}
    if queue not in consumers:
        consumers[queue] = consumed(store, queue)
    if not consumers[queue]:
        return no_consumer_message(queue)
    if poll.get("error"):
        return f"poll failing: {poll['error']}"
    limit = STALE_FACTOR * settings().poll_interval
    if polled_at is None:
        return None  # a worker is there and no poll failed: the first poll is coming
    if now - polled_at > limit:
        return f"no poll ran for {now - polled_at:.0f}s (limit {limit:g}s = {STALE_FACTOR} x POLL_INTERVAL)"
    return None


def require_known(store: Store, cluster: str) -> None:
    """Raise UnknownCluster unless the cluster has a record, a summary or job records."""
    pipe = store.r.pipeline(transaction=False)
    from htdask.state import keys
    for key in (keys.cluster(cluster), keys.summary(cluster), keys.jobs(cluster)):
        pipe.exists(key)
    if not any(pipe.execute()):
        raise UnknownCluster(cluster)


@dataclass
class ForcedDelete:
    cluster: str
    queue: str
    #: jobs the last poll saw in the queue, left there: job id -> worker name
    jobs_left: dict[str, str] = field(default_factory=dict)
    #: seconds since the last poll that summarized the cluster (Redis' clock); None: no poll ever looked
    looked_ago: float | None = None

    def lines(self) -> list[str]:
        out = [f"cluster {self.cluster}: record removed ({no_consumer_message(self.queue)})"]
        check = (f"check on the schedd with condor_q -constraint 'DaskGatewayCluster == \"{self.cluster}\"' and "
                 "remove them with condor_rm and the same constraint")
        if self.looked_ago is None:
            out.append(f"cluster {self.cluster}: no poll has read its jobs, so whether any are in the queue is "
                       f"unknown; none were removed: {check}")
        elif self.jobs_left:
            ids = ", ".join(f"{j} ({n})" if n else j for j, n in sorted(self.jobs_left.items()))
            out.append(f"cluster {self.cluster}: {len(self.jobs_left)} jobs were in the queue at the last poll "
                       f"({self.looked_ago:.0f}s ago) and were NOT removed: {ids}; jobs submitted since then may "
                       f"be there too: {check}")
        else:
            out.append(f"cluster {self.cluster}: the last poll ({self.looked_ago:.0f}s ago) saw no job of it; jobs "
                       f"submitted since then may be in the queue: {check}")
        return out


def force_delete(store: Store, cluster: str, queue: str) -> ForcedDelete:
    """Forget a cluster whose queue nobody consumes, leaving its tombstone (no older message re-creates
    it); its jobs seen by the last poll are reported with that poll's age, not removed (only a worker can
    reach the schedd). It never claims the queue holds none: with no poll of the cluster it says so."""
    record = store.get(cluster)
    records = store.job_records(cluster)
    polled_at = store.summary(cluster).get("polled_at")
    looked_ago = max(0.0, store.now() - float(polled_at)) if polled_at else None
    left = {jid: rec.get("name") or "" for jid, rec in records.items() if rec.get("status") in QUEUED}
    seq = store.record_new_request(cluster, 0, schedd=queue,
                                   names=[] if record is not None and record.names is not None else None)
    store.delete_cluster(cluster, seq)
    seen = "no poll has read its jobs" if looked_ago is None else \
        f"the last poll, {looked_ago:.0f}s ago, saw {len(left)} jobs"
    log.warning("cluster %s: record removed by delete --force (%s); %s, left in the queue", cluster,
                no_consumer_message(queue), seen)
    return ForcedDelete(cluster, queue, left, looked_ago)
