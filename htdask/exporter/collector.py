"""The Prometheus collector: every metric is read from Redis when Prometheus scrapes (never cached).

Names and labels follow Prometheus' naming rules (base units, `_total` counters, bounded label values:
cluster, owner and schedd names, job states, HoldReasonCodes, HTCondor command names; never job ids
or free text). The README lists every metric.
"""
from __future__ import annotations

import logging

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from htdask.exporter import snapshot
from htdask.state import Store
from htdask.state.metrics import COMMAND_BUCKETS, COMMANDS, REQUEST_BUCKETS, histogram

log = logging.getLogger(__name__)


class HtdaskCollector(Collector):
    """Reads a `snapshot.Snapshot` per scrape and turns it into metric families."""

    def __init__(self, store: Store, poll_interval: float, schedds: tuple[str, ...] = ()):
        self.store = store
        self.poll_interval = poll_interval
        self.schedds = schedds

    def describe(self):
        return []  # families depend on Redis' contents: nothing is read at registration

    def collect(self):
        up = GaugeMetricFamily("htdask_redis_up", "1 if the exporter could read Redis at this scrape, else 0")
        try:
            snap = snapshot.read(self.store, self.poll_interval, self.schedds)
        except redis.exceptions.RedisError as err:
            log.error("cannot read Redis: %s", err)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from cluster_families(snap)
        yield from schedd_families(snap)
        yield from quota_families(snap)
        yield culled_family(snap)


def cluster_families(snap: snapshot.Snapshot):
    desired = GaugeMetricFamily("htdask_cluster_desired_workers",
                                "Workers (HTCondor jobs) the newest request asked for",
                                labels=["cluster", "owner", "schedd"])
    jobs = GaugeMetricFamily("htdask_cluster_jobs", "Jobs of the cluster by JobStatus in the last poll, every "
                             "state (completed/removed include jobs that left the queue since the first poll)",
                             labels=["cluster", "owner", "schedd", "state"])
    connected = GaugeMetricFamily("htdask_cluster_connected_workers", "Workers connected to the cluster's Dask "
                                  "scheduler at the last poll (absent: not asked or not answered)",
                                  labels=["cluster", "schedd"])
    unmatched = GaugeMetricFamily("htdask_cluster_unmatched_jobs", "Idle jobs of the cluster that no slot matched "
                                  "at their last negotiation (LastRejMatchReason)", labels=["cluster", "schedd"])
    held = GaugeMetricFamily("htdask_cluster_held_jobs_by_reason", "Held jobs of the cluster by HoldReasonCode",
                             labels=["cluster", "schedd", "hold_reason_code"])
    stale = GaugeMetricFamily("htdask_cluster_stale", f"1 if the cluster's summary is older than "
                              f"{snapshot.STALE_POLLS} x POLL_INTERVAL or missing, else 0",
                              labels=["cluster", "schedd"])
    crash = GaugeMetricFamily("htdask_cluster_crash_loop", "1 while a crash loop (workers exiting on their own) "
                              "lasts, its backoff included, else 0", labels=["cluster", "schedd"])
    ended = CounterMetricFamily("htdask_jobs_ended", "Jobs of the cluster that left the queue, by how they ended: "
                                "exit_code_N, signal_N, removed", labels=["cluster", "schedd", "reason"])
    for c in snap.clusters:
        if c.desired is not None:
            desired.add_metric([c.name, c.owner, c.schedd], c.desired)
        if c.jobs is not None:
            for state, n in c.jobs.items():
                jobs.add_metric([c.name, c.owner, c.schedd, state], n)
            unmatched.add_metric([c.name, c.schedd], c.unmatched)
        if c.connected is not None:
            connected.add_metric([c.name, c.schedd], c.connected)
        for code, n in sorted(c.held_codes.items()):
            held.add_metric([c.name, c.schedd, code], n)
        stale.add_metric([c.name, c.schedd], 1 if c.stale else 0)
        if c.crash_loop is not None:
            crash.add_metric([c.name, c.schedd], 1 if c.crash_loop else 0)
        for reason, n in sorted(c.ended.items()):
            ended.add_metric([c.name, c.schedd, reason], n)
    return [desired, jobs, connected, unmatched, held, stale, crash, ended]


def culled_family(snap: snapshot.Snapshot):
    """`htdask_clusters_culled_total{schedd, reason}`: clusters the idle or lifetime limit deleted, for every
    known schedd and both reasons (0 too, so rates start at once)."""
    culled = CounterMetricFamily("htdask_clusters_culled", "Clusters deleted because they reached their idle "
                                 "timeout (reason idle) or maximum lifetime (reason lifetime)",
                                 labels=["schedd", "reason"])
    for schedd in sorted(set(snap.schedds) | {s for s, _ in snap.culls if s}):
        for reason in ("idle", "lifetime"):
            culled.add_metric([schedd, reason], snap.culls.get((schedd, reason), 0))
    return culled


def schedd_families(snap: snapshot.Snapshot):
    age = GaugeMetricFamily("htdask_poll_age_seconds", "Seconds since the schedd's last successful poll",
                            labels=["schedd"])
    duration = GaugeMetricFamily("htdask_poll_duration_seconds", "Seconds the schedd's last successful poll took",
                                 labels=["schedd"])
    failures = CounterMetricFamily("htdask_poll_failures", "Polls of the schedd that failed", labels=["schedd"])
    cmd = HistogramMetricFamily("htdask_schedd_command_duration_seconds",
                                "Seconds of the schedd's condor_* commands run by the submit-node worker",
                                labels=["schedd", "command"])
    cmd_failures = CounterMetricFamily("htdask_schedd_command_failures",
                                       "condor_* commands of the schedd that failed", labels=["schedd", "command"])
    r2s = HistogramMetricFamily("htdask_request_to_submit_seconds",
                                "Seconds from a scale request's enqueue to the condor_submit that serves it",
                                labels=["schedd"])
    for name, s in sorted(snap.schedds.items()):
        if s.ok_at is not None:
            age.add_metric([name], max(0.0, snap.taken_at - s.ok_at))
        if s.poll.get("duration"):
            duration.add_metric([name], float(s.poll["duration"]))
        if s.poll:
            failures.add_metric([name], int(s.poll.get("failures_total") or 0))
        for command in COMMANDS.values():
            buckets, total = histogram(s.metrics, f"cmd:{command}", COMMAND_BUCKETS)
            if buckets[-1][1] or s.metrics.get(f"cmd:{command}:failures"):
                cmd.add_metric([name, command], buckets, total)
                cmd_failures.add_metric([name, command], int(s.metrics.get(f"cmd:{command}:failures") or 0))
        buckets, total = histogram(s.metrics, "r2s", REQUEST_BUCKETS)
        if buckets[-1][1]:
            r2s.add_metric([name], buckets, total)
    return [age, duration, failures, cmd, cmd_failures, r2s]


def quota_families(snap: snapshot.Snapshot):
    """Use against quota per owner: `htdask_owner_quota_used{owner,resource}` and
    `htdask_owner_quota_limit{owner,resource}` (0 = unlimited); resources clusters, workers, cores, memory
    (MiB), gpus."""
    used = GaugeMetricFamily("htdask_owner_quota_used", "What the owner's clusters ask for (desired workers; "
                             "cores, memory in MiB and GPUs of those workers; clusters)", labels=["owner", "resource"])
    limit = GaugeMetricFamily("htdask_owner_quota_limit", "The owner's quota of the resource (QUOTA_* settings, "
                              "QUOTA_FILE); 0 = unlimited", labels=["owner", "resource"])
    for row in snap.quotas:
        for resource, value in row["limits"].items():
            used.add_metric([row["owner"], resource], row[resource])
            limit.add_metric([row["owner"], resource], value)
    yield used
    yield limit
