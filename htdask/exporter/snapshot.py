"""What the exporter serves, read from Redis (through `state`) at scrape time; never from a schedd.

One `read()` costs a few pipelined round trips whatever the number of clusters: the cluster records,
the poller's summaries, the schedds' poll status and measurement hashes.

Staleness follows the age rule: a cluster's summary is stale when it is older than
`STALE_POLLS` × POLL_INTERVAL (or when no poll has summarized the cluster yet).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from htdask.domain.jobstatus import KEYS
from htdask.state import Store
from htdask.state.connection import eviction_policy, eviction_problem
from htdask.state.metrics import known_schedds, read_schedds
from tasks.config import settings
from tasks.quota import usage_rows
from tasks.status import add_limits, cluster_row

#: a summary older than this many poll intervals is stale (the rule `status` follows too)
STALE_POLLS = 3
#: the job states served as `htdask_cluster_jobs{state}`: every JobStatus (htdask.domain.jobstatus.KEYS)
JOB_STATES = KEYS


@dataclass
class ClusterView:
    """One cluster as the exporter shows it. Counts are None until a poll summarized the cluster."""
    name: str
    owner: str  # the Unix user its jobs run as ("" when unknown)
    schedd: str
    desired: int | None
    jobs: dict[str, int] | None  # JOB_STATES -> jobs
    held_reasons: dict[str, int] = field(default_factory=dict)  # HoldReason text -> jobs (page only)
    held_codes: dict[str, int] = field(default_factory=dict)  # HoldReasonCode ("unknown") -> jobs
    ended: dict[str, int] = field(default_factory=dict)  # how jobs that left the queue ended (htdask.domain.jobend)
    polled_at: float | None = None
    age: float | None = None  # seconds since the summary was written
    stale: bool = True
    error: str | None = None
    #: a crash loop lasts now (tasks/ended.py; None: no record)
    crash_loop: bool | None = None
    crash_note: str | None = None  # e.g. "4 workers exited within 2 min (exit code 1), next try in 80 s"
    connected: int | None = None  # workers connected to the cluster's scheduler at the last poll (None: unknown)
    unmatched: int = 0  # idle jobs no slot matched at their last negotiation
    notes: list[str] = field(default_factory=list)  # tasks.status.notes: the words `status` shows


@dataclass
class ScheddView:
    name: str
    poll: dict  # the poll status hash (htdask.state.keys: polled_at, ok_at, error, failures, failures_total, duration)
    metrics: dict  # the measurement hash (htdask.state.metrics)

    @property
    def ok_at(self) -> float | None:
        return float(self.poll["ok_at"]) if self.poll.get("ok_at") else None

    @property
    def error(self) -> str | None:
        return self.poll.get("error") or None


@dataclass
class Snapshot:
    taken_at: float
    poll_interval: float
    clusters: list[ClusterView]
    schedds: dict[str, ScheddView]
    #: the line naming Redis' maxmemory-policy when it may evict our keys (run anyway: REDIS_ALLOW_EVICTION=1)
    eviction: str | None = None
    #: use against quota per owner (tasks.quota.usage_rows: resource use, "limits" (0 = unlimited), "over")
    quotas: list[dict] = field(default_factory=list)
    #: clusters deleted by an idle or lifetime limit, ever: (schedd, reason (idle, lifetime)) -> count
    culls: dict[tuple[str, str], int] = field(default_factory=dict)
    #: clusters a limit deleted within a day: name -> {reason, detail, at, schedd, owner} (htdask.state.limits)
    culled: dict[str, dict] = field(default_factory=dict)


def read(store: Store, poll_interval: float, default_schedds: tuple[str, ...] = (),
         now: float | None = None) -> Snapshot:
    """Every cluster and schedd known to Redis, as of now (Redis' clock, `Store.now()`, the one poll times
    are written with). Raises redis errors."""
    names = sorted(set(store.cluster_names()) | set(store.summarized_clusters()))
    records = store.get_many(names) if names else {}
    summaries = store.summaries(names) if names else {}
    limit_fields = store.limit_fields(names) if names else {}
    now = store.now() if now is None else now
    polls: dict[str, dict] = {}  # crash-loop backoff is on the schedd's clock (Store.schedd_clock)
    limit = STALE_POLLS * poll_interval
    clusters = []
    for name in names:
        rec, summary = records.get(name), summaries.get(name) or {}
        if rec and rec.backoff_until and rec.schedd not in polls:
            polls[rec.schedd] = store.poll_status(rec.schedd)
        schedd_now = store.schedd_clock(polls.get(rec.schedd) or {}, now) if rec else now
        polled_at = summary.get("polled_at")
        age = max(0.0, now - float(polled_at)) if polled_at else None
        row = cluster_row(name, rec, summary, schedd_now)
        add_limits(row, limit_fields.get(name) or {}, settings().limit_defaults)  # a limit's note first
        clusters.append(ClusterView(
            name=name,
            owner=row["owner"] or "",
            # a summary without a record: jobs of ours in a queue nobody asked for (its schedd is not recorded)
            schedd=rec.schedd if rec else "unknown",
            desired=(len(rec.names) if rec.names is not None else rec.desired) if rec else None,
            jobs={s: row[s] for s in JOB_STATES} if summary else None,
            held_reasons=_counts(summary.get("held_reasons")),
            held_codes=_counts(summary.get("held_codes")),
            ended=row["ended"],
            polled_at=float(polled_at) if polled_at else None,
            age=age,
            stale=age is None or age > limit,
            error=rec.error if rec else None,
            crash_loop=row["crash_loop"] if rec else None,
            crash_note=row["note"],
            connected=(row["scheduler"] or {}).get("connected"),
            unmatched=sum(row["unmatched"].values()),
            notes=row["notes"],
        ))
    wanted = set(default_schedds) | {c.schedd for c in clusters if c.schedd != "unknown"} | known_schedds(store.r)
    schedds = {name: ScheddView(name, poll, metrics)
               for name, (poll, metrics) in read_schedds(store.r, sorted(wanted)).items()}
    culled = {n: doc for n, doc in store.culled(now).items() if n not in records or records[n] is None}
    return Snapshot(now, poll_interval, clusters, schedds, eviction_problem(eviction_policy(store.r)),
                    usage_rows(store), culls=store.cull_counts(), culled=culled)


def _counts(value) -> dict[str, int]:
    return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}
