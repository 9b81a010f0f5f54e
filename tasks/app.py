"""The Celery application: Redis broker and backend, at-least-once delivery, one queue per schedd."""
from __future__ import annotations

import logging

from celery import Celery
from celery.signals import after_setup_logger, celeryd_after_setup, task_postrun

from state.connection import check_or_exit, configure_celery
from tasks.config import poll_queue, settings

_s = settings()
# A REDIS_URL / REDIS_SENTINEL_MASTER nobody can use stops every process that loads the app, with one line.
check_or_exit("htdask", _s.redis_url)

app = Celery("htdask", include=["tasks.cluster_tasks", "tasks.history"])

app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # At least once: a task is acknowledged after it ran, and re-queued if its worker died.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Every task ends (hard limit) far inside the visibility timeout, so Redis never re-delivers a
    # task that is still running.
    task_time_limit=_s.task_time_limit,
    task_soft_time_limit=max(1, _s.task_time_limit - 30),
    broker_transport_options={"visibility_timeout": _s.visibility_timeout},
    result_backend_transport_options={"visibility_timeout": _s.visibility_timeout},
    result_expires=3600,
    task_default_queue=_s.schedd_name,
    task_track_started=True,
    # Flower and `celery events` see our tasks with their arguments.
    worker_send_task_events=True,
    task_send_sent_event=True,
    broker_connection_retry_on_startup=True,
    timezone="UTC",
)
# Broker and result backend: one Redis server, or kombu's sentinel:// transport and celery's sentinel
# result backend following the master across a failover (state.connection).
configure_celery(app, _s.redis_url)

import beat_schedule  # noqa: E402  (the schedule reads the app's settings)
import tasks.startup  # noqa: E402,F401  (a worker refuses an unusable setup at start)
from tasks import beat  # noqa: E402

app.conf.beat_schedule = beat_schedule.schedule(_s)
# Only the beat holding RedBeat's Redis lock sends: two beats started by mistake never double a poll.
beat.configure(app, _s.redis_url)


from tasks.heartbeat import QueueHeartbeat  # noqa: E402

app.steps["worker"].add(QueueHeartbeat)  # workers announce the queues they consume (status, --wait)


@after_setup_logger.connect
def _quiet_libraries(logger=None, **_):
    logging.getLogger("kombu").setLevel(logging.WARNING)


@task_postrun.connect
def _flush_measurements(**_):
    """Write schedd measurements no pipeline of the task carried (rare: e.g. tasks.ended_jobs' history)."""
    from tasks import context
    store = context.store()
    if store.metrics.pending():
        try:
            store.metrics.flush(store.r)
        except Exception as exc:  # measurements never fail a task
            logging.getLogger(__name__).warning("could not write schedd measurements: %s", exc)


@celeryd_after_setup.connect
def _consume_poll_queue(sender, instance, **_):
    """A schedd's worker also consumes the schedd's poll queue (Celery's documented per-worker queue
    pattern), whatever -Q it was started with: no deployment has to name it."""
    instance.app.amqp.queues.select_add(poll_queue(settings().schedd_name))
