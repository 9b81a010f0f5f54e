"""The Celery tasks: thin, idempotent and retriable; none waits for another task's result.

- `scale_cluster` joins the round for its request, whose desired state the enqueue recorded (guarded by
  the request's sequence number). `reconcile_cluster` only reconciles (asked for by the poller on drift or held jobs).
- `delete_cluster` removes every job of a cluster and forgets it.
- `reconcile_pending` runs one batched round for the clusters waiting on this schedd (see
  `reconcile_batched`).
- `poll_queue` (beat) polls the schedd once for all clusters.

Schedd and Redis errors are retried with exponential backoff (`autoretry_for`, `retry_backoff`);
after the last retry the error is kept in the cluster's state, where `status` shows it.
"""
from __future__ import annotations

import json
import logging
import uuid

import redis
from celery import Task

from htdask.state import rounds
from tasks import context
from tasks.app import app
from tasks.config import settings
from tasks.poll import Poller
from tasks.deletion import delete_jobs_and_state
from tasks.reconcile import Reconciler
from htdask.domain import validation
from htdask.domain.request import DeleteRequest, ScaleRequest
from workers.htcondor.schedd import ScheddError

log = logging.getLogger(__name__)

RETRYABLE = (ScheddError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, TimeoutError)


class ClusterTask(Task):
    """Keeps the last error of a task about a cluster in that cluster's state."""

    def _record(self, args, kwargs, message: str) -> None:
        cluster = _cluster_of(args, kwargs)
        if not cluster:
            return
        try:
            context.store().set_error(cluster, message)
        except redis.exceptions.RedisError:
            log.exception("cluster %s: could not record error %s", cluster, message)

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        self._record(args, kwargs, f"retrying after error: {exc}")

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        cluster = _cluster_of(args, kwargs) or "?"
        log.error("cluster %s: %s failed for good: %s", cluster, self.name, exc)
        self._record(args, kwargs, str(exc))


def _cluster_of(args, kwargs) -> str | None:
    """The cluster a task is about (its request's, or its first argument), None when it has no valid one."""
    if "request" in kwargs:  # (on errors only) the request was parsed by the task, which trusts it from then on
        try:
            return validation.validate_cluster_name(json.loads(kwargs["request"]).get("cluster"))
        except (ValueError, TypeError, AttributeError):
            return None
    return kwargs.get("cluster") or (args[0] if args else None)


TASK_OPTIONS = dict(
    bind=True, base=ClusterTask, acks_late=True, autoretry_for=RETRYABLE, retry_backoff=1,
    retry_jitter=True,
)


class RetryLimits:
    """Celery task annotation (tasks/celeryconfig.py): the cluster tasks' retries from the settings,
    applied when the app binds its tasks, so importing this module reads no setting."""

    def annotate(self, task):  # Celery passes the task class
        if issubclass(task if isinstance(task, type) else type(task), ClusterTask):
            s = settings()
            return {"max_retries": s.task_max_retries, "retry_backoff_max": s.retry_backoff_max}
        return None


def reconciler() -> Reconciler:
    return Reconciler(context.store(), context.schedd(), settings())


#: clusters one batched reconcile takes at once
BATCH_SIZE = 500


def reconcile_batched(cluster: str, task_id: str | None = None) -> dict:
    """Reconcile `cluster` together with every other cluster waiting on this schedd.

    The cluster joins the schedd's pending set. The task that takes the schedd's batch lock (a lease,
    htdask/state/locks.py) runs one round for every pending cluster (one condor_q for all,
    `Reconciler.reconcile_many`); a task that finds the lock held, or a round queued, returns at once, its
    cluster left to that round. Clusters that joined during the round go to one `reconcile_pending` task
    at the back of the queue (named in the queued mark from the moment the round took its batch): the
    requests in front of it gather meanwhile, so a thousand requests cost a few schedd queries, and no
    task ever waits for another or keeps a worker process while requests arrive. That task takes the
    lease anew: no token passes between tasks (htdask/state/rounds.py). The mark is honoured only while the
    round's lease lives, then for LOCK_TTL while its task starts: a round or task that died holds up
    its clusters until the next request or poll, at most LOCK_TTL + POLL_INTERVAL (the first request or poll
    that finds either arms a watch task, due when it would expire).
    Returns the cluster's outcome, or {"state": "queued", "handled_by": task id} when its reconcile is
    left to another task's round (Flower traces the request there); raises the cluster's own failure
    (so Celery retries it); others' failures are in their own state. `task_id` is the calling task's id,
    the lock's token while this task runs the round.
    """
    s, store = settings(), context.store()
    runner = store.batch_lock(s.schedd_name)
    return _after_join(s, store, runner, cluster, store.join_pending(s.schedd_name, cluster, runner, task_id))


def _after_join(s, store, runner, cluster: str, joined) -> dict:
    """`reconcile_batched` once the cluster has joined the pending set (`joined`: join_pending's reply)."""
    taken, watch, handler = joined
    _send_watch(s, watch)
    if not taken:
        return {"cluster": cluster, "state": "queued", "handled_by": handler}
    outcomes, next_round = _round(s, store, runner)
    own = outcomes.get(cluster)
    if own is None:  # taken by the round before ours, or left to the next (over BATCH_SIZE pending)
        return {"cluster": cluster, "state": "queued", "handled_by": next_round}
    if own.exc is not None:
        raise own.exc
    result = own.as_dict()
    if len(outcomes) > 1 or next_round:  # the round served other requests too: name them for Flower
        result["round"] = {c: o.brief() for c, o in sorted(outcomes.items())}
        result["next_round"] = next_round
    return result


def _round(s, store, runner) -> tuple[dict, str | None]:
    """One reconcile round for the pending clusters (up to BATCH_SIZE), holding the batch lock `runner`;
    then the lock is released and, if clusters are pending, the next round's task sent.
    Returns the outcomes and the next round's task id (None: none was needed)."""
    next_id = str(uuid.uuid4())  # the next round's task id, named from the moment we take our batch
    outcomes: dict = {}
    try:
        batch = store.start_round(s.schedd_name, runner, next_id, BATCH_SIZE, s.lock_timeout)
        try:
            outcomes = reconciler().reconcile_many(batch) if batch else {}
        except BaseException:
            store.add_pending(s.schedd_name, *batch)  # not lost: the next round takes them
            raise
        if batch:
            log.info("schedd %s: reconciled %d clusters in one round", s.schedd_name, len(batch))
        for c, o in outcomes.items():
            if o.state == "busy":  # ask again once the lock's holder is done or its lease ran out
                reconcile_cluster.apply_async((c,), countdown=o.retry_in + 0.05, queue=s.schedd_name)
    finally:
        next_round = _finish(s, store, runner, next_id)
    return outcomes, next_round


def _finish(s, store, runner, next_id: str) -> str | None:
    """Release the batch lock; send the next round's task `next_id` when clusters are pending (checked
    atomically with the release, so a cluster joining meanwhile is never left behind). Returns the id
    of the task sent, if any."""
    state = store.finish_round(s.schedd_name, runner, next_id, s.lock_ttl)
    if state == rounds.KEPT:
        reconcile_pending.apply_async(kwargs={"schedd": s.schedd_name}, queue=s.schedd_name, task_id=next_id)
        return next_id
    if state == rounds.LOST:  # expired during the round (Redis away a whole LOCK_TTL)
        log.warning("schedd %s: batch lock expired during the round", s.schedd_name)
        pending, busy = store.batch_state(s.schedd_name)
        if pending and not busy:
            return _queue_round(s, store)
    return None


def _queue_round(s, store) -> str | None:
    """Send a `reconcile_pending` task for clusters left pending, unless a round runs or is queued already;
    requests wait for it up to LOCK_TTL (a task lost with a dead worker holds nobody up longer): then
    the next request or poll takes the lock itself. Returns its id if sent."""
    task_id = str(uuid.uuid4())
    if not store.queue_round(s.schedd_name, task_id, s.lock_ttl):
        return None
    reconcile_pending.apply_async(kwargs={"schedd": s.schedd_name}, queue=s.schedd_name, task_id=task_id)
    return task_id


def _send_watch(s, due_in: float | None) -> None:
    """Send the watch task armed by `join_pending`/`start_queued_round`/`watch_round` (if any), due when
    the batch lock would expire unrenewed: a holder that died anywhere delays the pending clusters by at
    most LOCK_TTL."""
    if due_in is not None:
        reconcile_pending.apply_async(kwargs={"schedd": s.schedd_name, "watch": True}, countdown=due_in + 0.05,
                                      queue=s.schedd_name)


@app.task(name="tasks.scale_cluster", **TASK_OPTIONS)
def scale_cluster(self, request: str | None = None, handled_by: str | None = None, **legacy) -> dict:
    """Join the round that brings the cluster to `request` (a `ScaleRequest`'s JSON; older versions sent its
    fields as kwargs), recorded as its desired state when it was enqueued.

    `handled_by`, given when the enqueue also joined the cluster to the schedd's pending set
    (`Store.record_and_enqueue`): the id of the task whose round reconciles it ('' a running round's of
    unknown id). This task's own id: no round ran or was queued, so it takes the batch lock and runs one
    (`start_queued_round`; a round that started meanwhile takes the cluster instead). Another's: the
    cluster is that round's (or, if its holder died, the watch's, the next request's or the poll's), and
    the task returns at once without a Redis call. Without it (older messages; a write no replica
    confirmed), and when the task runs again (a Celery retry, a re-delivery), it joins itself
    (`join_recorded`).

    The message is parsed once (`ScaleRequest.parse_message`); a malformed one is refused: logged, nothing
    written, nothing retried. A request whose record is missing (the enqueue's write was lost: a failover
    before a replica held it; or a message without a number) is recorded here from the message, guarded by
    its number and the cluster's tombstone like at enqueue, so a stale or re-delivered message never moves
    a cluster back nor re-creates a deleted one.
    """
    s, store = settings(), context.store()
    try:
        req = ScaleRequest.parse_message(request, legacy, s.max_workers_per_cluster)
    except validation.ValidationError as e:
        log.error("task %s: scale request refused: %s", self.request.id, e)
        return {"state": "refused", "error": str(e)}
    # A retry of this task (its round failed for its own cluster) or a re-delivery (its worker died) joins
    # itself: the enqueue's naming was for its first run, whose queued mark that run took or let expire.
    again = bool(self.request.retries) or bool((self.request.delivery_info or {}).get("redelivered"))
    if isinstance(handled_by, str) and req.seq is not None and not again:
        return _joined_at_enqueue(self, s, store, req, handled_by)
    runner = store.batch_lock(s.schedd_name)
    found = None
    if req.seq is not None:
        found = store.join_recorded(req.cluster, req.seq, schedd=s.schedd_name, lock=runner, task_id=self.request.id)
    if found is None:  # not recorded: record it from the message and join, in one script call
        if req.seq is not None:
            log.warning("cluster %s: request %s was not recorded (lost with a failed-over Redis?); recording it "
                        "from its task", req.cluster, req.seq)
        found = store.record_and_join(req.cluster, req.n, schedd=s.schedd_name, lock=runner,
                                      task_id=self.request.id, owner=req.owner, options=req.options,
                                      names=req.names, seq=req.seq)
    current, joined = found
    if not current:
        log.info("cluster %s: request %s superseded by a newer one or by the cluster's delete; reconciling "
                 "toward the newest state", req.cluster, req.seq)
    else:
        log.info("cluster %s: desired %d workers (owner %s, request %s)", req.cluster, req.n, req.owner or "-",
                 req.seq)
    return _after_join(s, store, runner, req.cluster, joined)


def _joined_at_enqueue(task, s, store, req: ScaleRequest, handler: str) -> dict:
    """`scale_cluster` for a request its enqueue joined to the pending set, `handler` the task named there."""
    if handler != task.request.id:
        log.info("cluster %s: desired %d workers (owner %s, request %s); left to round %s", req.cluster, req.n,
                 req.owner or "-", req.seq, handler or "(running)")
        return {"cluster": req.cluster, "state": "queued", "handled_by": handler or None}
    log.info("cluster %s: desired %d workers (owner %s, request %s); running the round", req.cluster, req.n,
             req.owner or "-", req.seq)
    runner = store.batch_lock(s.schedd_name)
    return _after_join(s, store, runner, req.cluster, store.start_queued_round(s.schedd_name, runner,
                                                                               task.request.id))


@app.task(name="tasks.reconcile_cluster", **TASK_OPTIONS)
def reconcile_cluster(self, cluster: str) -> dict:
    """Bring the cluster's jobs to its recorded desired state (nothing to do when they match)."""
    return reconcile_batched(cluster, self.request.id)


@app.task(name="tasks.reconcile_pending", **TASK_OPTIONS)
def reconcile_pending(self, schedd: str, token: str | None = None, watch: bool = False) -> dict:
    """One round for the clusters pending on this schedd: the queued round (its id is in the queued mark)
    or a `watch` (due when a held batch lock would expire unrenewed). It takes the batch lock anew; when
    a round runs already, that round's holder takes the pending clusters instead (and a watch is armed in
    case it died). `token` is ignored: sent by older versions, which handed the lock over.

    The result names every cluster of the round with what was done to it (`Outcome.brief`), and the
    task of the next round if one was needed: Flower's task page shows where each request ended.
    """
    s, store = settings(), context.store()
    runner = store.batch_lock(s.schedd_name)
    if watch:
        taken, again, _ = store.watch_round(s.schedd_name, runner, self.request.id)
    else:
        taken, again, _ = store.start_queued_round(s.schedd_name, runner, self.request.id)
    _send_watch(s, again)
    if not taken:
        return {"schedd": s.schedd_name, "state": "busy"}
    outcomes, next_round = _round(s, store, runner)
    failed = {c: o.error for c, o in outcomes.items() if o.error}
    return {"schedd": s.schedd_name, "state": "ok", "reconciled": len(outcomes),
            "clusters": {c: o.brief() for c, o in sorted(outcomes.items())}, "errors": failed,
            "next_round": next_round}


@app.task(name="tasks.delete_cluster", **TASK_OPTIONS)
def delete_cluster(self, request: str | None = None, **legacy) -> dict:
    """Remove every job of the cluster, then clear its state (a newer request keeps the cluster).
    `request`: a `DeleteRequest`'s JSON (older versions sent `cluster` and `seq` as kwargs); a malformed
    one is refused: logged, nothing done."""
    try:
        req = DeleteRequest.parse_message(request, legacy)
    except validation.ValidationError as e:
        log.error("task %s: delete request refused: %s", self.request.id, e)
        return {"state": "refused", "error": str(e)}
    cluster, seq = req.cluster, req.seq
    store = context.store()
    record = store.get(cluster)
    if record is not None and seq is not None and record.seq > seq:
        log.info("cluster %s: delete request %s superseded by request %s; not deleting", cluster, seq, record.seq)
        return {"cluster": cluster, "state": "superseded"}
    removed = delete_jobs_and_state(store, context.schedd(), cluster, settings(), seq=seq)
    if removed is None:
        reconcile_batched(cluster)  # the newer request's own task may have found the lock busy
        return {"cluster": cluster, "state": "superseded"}
    return {"cluster": cluster, "state": "deleted", "removed": removed}


@app.task(name="tasks.poll_queue", bind=True, acks_late=True, ignore_result=False)
def poll_queue(self, schedd: str | None = None, force: bool = False) -> dict:
    """One condor_q for all clusters of this submit node's schedd; summaries into Redis."""
    s = settings()
    if schedd and schedd != s.schedd_name:
        log.warning("poll for schedd %s reached the worker of schedd %s; polling %s", schedd, s.schedd_name,
                    s.schedd_name)
    store = context.store()
    result = Poller(store, context.schedd(), s.schedd_name, s).poll(force=force)
    now = store.now() if result.reconcile else 0.0  # error_at is Redis' clock
    for cluster in result.reconcile:
        record = store.get(cluster)
        if record and record.error and record.error_at and now - record.error_at < s.error_retry_interval:
            log.info("cluster %s: in error (%s); not reconciling again before %.0fs", cluster, record.error,
                     s.error_retry_interval - (now - record.error_at))
            continue
        reconcile_cluster.apply_async((cluster,), queue=s.schedd_name)
    pending, busy = store.batch_state(s.schedd_name)
    if pending and not busy:  # left by a round that failed for good, or by a queued round lost with Redis
        _queue_round(s, store)
    return result.as_dict()

