"""What entry points (CLI, gateway backend, operator) call: validate, enqueue, read status.

A request is one typed value (`htdask.domain.request`), checked here once (so bad input never reaches a
queue) and carried in its task's message as its JSON. Each request takes a sequence number from Redis so that a stale or re-delivered task never overrides a newer request, and its desired
state is recorded before the task is sent, so no request is lost with a task.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from htdask.state import Store
from htdask.state.requests import ScheddMismatch
from htdask.state.managed import managers
from tasks import health, quota, status
from tasks.app import app
from tasks.config import poll_queue, settings
from htdask.domain import limits as lim, validation
from htdask.domain.request import DeleteRequest, ScaleRequest
from tasks.options import check_job_options
from workers.runas import check_user

log = logging.getLogger(__name__)


@dataclass
class Enqueued:
    task_id: str
    queue: str
    seq: int
    granted: int | None = None  # workers recorded: the count asked unless an owner's quota cut it down
    note: str = ""  # why it was cut down (QUOTA_MODE=grant), naming the quota


def scale_request(cluster, n, *, owner=None, options: dict | None = None, schedd=None,
                  names: list[str] | None = None) -> ScaleRequest:
    """The typed scale request from an entry point's values (the count: an int or a digit string), checked
    here once; raises ValidationError (one line) for a bad value."""
    return ScaleRequest.build(settings().max_workers_per_cluster, cluster=cluster, n=n, owner=owner,
                              options=options, schedd=schedd, names=names)


def check_limits(values: dict | None, fields: dict[str, str] | None = None) -> dict[str, float]:
    """A request's idle and lifetime limits (kind -> a duration: seconds or `30m`, `2h`; absent or None: not
    given) in seconds, checked against the site's maxima (IDLE_TIMEOUT_MAX, MAX_LIFETIME_MAX); raises
    ValidationError (one line, naming `fields[kind]`, e.g. --idle-timeout) for a bad or too large one."""
    return lim.requested(values or {}, settings().limit_maxima, fields)


def enqueue_scale(store: Store, cluster, n=None, *, owner: str | None = None, options: dict | None = None,
                  schedd: str | None = None, names: list[str] | None = None, celery=None,
                  limits: dict | None = None) -> Enqueued:
    """Check a scale request and put it on its schedd's queue (through `celery`, a Celery app, default
    tasks.app's). `cluster` is a `ScaleRequest` (`scale_request`), or the request's fields are given.

    The request is numbered and recorded as the cluster's desired state, its schedd chosen (the
    cluster's recorded one, else `schedd`, else SCHEDD_NAME) and the cluster added to that schedd's
    pending set, in one round trip to Redis (`Store.record_and_enqueue`): the only write of it. Its task
    is told in its message (`handled_by`) which task's round reconciles the cluster: its own (no round ran
    or was queued: it takes the batch lock), or another's (it returns at once, without a Redis call). A
    request without options keeps the cluster's recorded ones, which were checked when they were recorded
    (the CLI records the DASK_SCHEDULER_ADDRESS it checked a cluster with, `joboptions.with_entry_scheduler`).
    Raises ValidationError (and records nothing) for bad input or a `schedd` other than the cluster's.
    `limits`: the cluster's own idle and lifetime limits (`check_limits`; kinds not given keep the recorded
    ones, else the site's defaults apply).
    """
    limits = check_limits(limits)
    req = cluster if isinstance(cluster, ScaleRequest) else scale_request(
        cluster, n, owner=owner, options=options, schedd=schedd, names=names)
    if req.owner is not None:
        check_user(req.owner)
    if req.options is not None or settings().dask_scheduler_address:
        check_job_options(req.options)  # the site's defaults, for a cluster without options
    else:  # no site scheduler address: the cluster's recorded options must name one (a new cluster has none)
        record = store.get(req.cluster)
        check_job_options(record.options if record else None)
    # Recorded here, before the task is sent: a task lost with a killed worker (Redis re-delivers only after
    # the visibility timeout) still leaves the newest desired state for the poller to reconcile.
    # The owner's quota is checked, and its use counted, in the same script (htdask/state/quota.py):
    # QuotaExceeded (a ValidationError: nothing recorded) or, QUOTA_MODE=grant, fewer workers and a note.
    task_id = str(uuid.uuid4())
    try:
        rec, joined = store.record_and_enqueue(
            req.cluster, req.n, schedd=req.schedd or settings().schedd_name, keep_schedd=req.schedd is None,
            task_id=task_id, owner=req.owner, options=req.options, names=req.names,
            quota=quota.quota_for(req.options))
    except ScheddMismatch as e:
        raise validation.ValidationError("schedd", req.schedd, str(e)) from None
    queue = rec.schedd
    if limits:  # the cluster's own (its lifetime starts at its first record: the record script's born_at)
        store.set_limits(req.cluster, limits)
    update = {"seq": rec.seq, "schedd": queue}
    if rec.granted < req.n:  # the message carries what was granted (a task re-recording it checks nothing)
        update.update(n=rec.granted, names=req.names[:rec.granted] if req.names is not None else None)
        # the caller reports it (Enqueued.note: the CLI's one `note:` line, the gateway's log, the operator's status)
        log.info("cluster %s: %d of %d workers granted: %s", req.cluster, rec.granted, req.n, rec.note)
    req = req.model_copy(update=update)
    message = req.as_message()
    if joined is not None:  # the task need not touch Redis unless it runs the round (tasks.scale_cluster)
        _, watch, handler = joined
        message["handled_by"] = handler or ""
    sender = celery or app
    result = sender.send_task("tasks.scale_cluster", kwargs=message, queue=queue, task_id=task_id)
    if joined is not None and watch is not None:  # a round runs: if its holder died, this task takes over
        sender.send_task("tasks.reconcile_pending", kwargs={"schedd": queue, "watch": True},
                         countdown=watch + 0.05, queue=queue)
    log.info("cluster %s: scale to %d (owner %s) enqueued on %s as %s", req.cluster, req.n, req.owner or "-",
             queue, result.id)
    return Enqueued(result.id, queue, rec.seq, rec.granted, rec.note)


def queue_of(store: Store, cluster: str) -> str:
    """The schedd queue of a cluster (its recorded schedd, else SCHEDD_NAME)."""
    return _queue_of_record(store.get(cluster))


def _queue_of_record(record) -> str:
    return record.schedd if record else settings().schedd_name


def enqueue_delete(store: Store, cluster, celery=None) -> Enqueued:
    """Put a delete on the cluster's queue; its desired count drops to 0 at once (a lost task still
    leaves the poller a cluster to empty). `cluster`: a name or a `DeleteRequest`; raises ValidationError
    (nothing recorded) for a bad name."""
    req = cluster if isinstance(cluster, DeleteRequest) else DeleteRequest.build(cluster=cluster)
    record = store.get(req.cluster)
    queue = _queue_of_record(record)
    if record is not None:
        seq = store.record_new_request(req.cluster, 0, schedd=queue, names=[] if record.names is not None else None)
    else:
        seq = store.next_seq()
    req = req.model_copy(update={"seq": seq})
    result = (celery or app).send_task("tasks.delete_cluster", kwargs=req.as_message(), queue=queue)
    log.info("cluster %s: delete enqueued on %s as %s", req.cluster, queue, result.id)
    return Enqueued(result.id, queue, seq)


def enqueue_poll(schedd: str | None = None, force: bool = True):
    queue = schedd or settings().schedd_name
    return app.send_task("tasks.poll_queue", kwargs={"schedd": queue, "force": force}, queue=poll_queue(queue))


def status_rows(store: Store, cluster: str | None = None) -> list[dict]:
    """One row per cluster (tasks.status.cluster_row: a count per JobStatus, how ended jobs ended, owner,
    scheduler connections, crash loop, notes) plus the summary's age, whether it is stale and why
    (tasks.health: poll failing, older than 3 x POLL_INTERVAL, no worker consumes the queue), its idle and
    lifetime limits (`limits`, `idle_state`, `culled`: tasks.status.add_limits); and a row for each cluster a
    limit deleted within a day (`culled`, `deleted`: tasks.status.culled_row).
    """
    now = store.now()  # Redis' clock: the one poll times and heartbeats are written with
    culled = store.culled(now)  # clusters a limit deleted (shown for a day)
    live = set(store.cluster_names()) | set(store.summarized_clusters())
    wanted = [cluster] if cluster else sorted(live | set(culled))
    gone = [c for c in wanted if c in culled and c not in live]
    names = [c for c in wanted if c not in gone]
    summaries = store.summaries(names)
    limit_fields = store.limit_fields(names)
    managed = managers(store, names)
    rows, polls, consumers = [], {}, {}
    for name in names:
        record = store.get(name)
        summary = summaries.get(name) or {}
        schedd = _queue_of_record(record)
        if schedd not in polls:
            polls[schedd] = store.poll_status(schedd)
        poll = polls[schedd]
        polled_at = summary.get("polled_at")
        stale_reason = health.staleness(store, schedd, polled_at, poll, now, consumers)
        rows.append({
            **status.cluster_row(name, record, summary, store.schedd_clock(poll, now)),  # job times: the schedd's clock
            "polled_at": polled_at,
            "age": round(now - polled_at, 1) if polled_at else None,
            "stale": stale_reason is not None,
            "stale_reason": stale_reason,
            "poll_error": poll.get("error") or None,
            "unparsed": int(poll.get("unparsed") or 0), "degraded": int(poll.get("degraded") or 0),
            "schedd": schedd,
            "managed_by": (managed.get(name) or {}).get("kind"),
            "user": (managed.get(name) or {}).get("user"),
        })
        status.add_limits(rows[-1], limit_fields[name], settings().limit_defaults,
                          culled.get(name) if record is None else None)
    rows += [status.culled_row(name, culled[name], now) for name in gone]
    return sorted(rows, key=lambda r: r["name"])
