"""The Celery application: Redis broker and backend, at-least-once delivery, one queue per schedd."""
from __future__ import annotations

import logging

from celery import Celery
from celery.signals import after_setup_logger

from state.connection import check_or_exit, configure_celery
from tasks.config import settings

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

app.conf.beat_schedule = beat_schedule.schedule(_s)
# Only the beat holding a Redis lock sends: two beats started by mistake never double a poll.
app.conf.beat_scheduler = "tasks.beat:LockedScheduler"


from tasks.heartbeat import QueueHeartbeat  # noqa: E402

app.steps["worker"].add(QueueHeartbeat)  # workers announce the queues they consume (status, --wait)


@after_setup_logger.connect
def _quiet_libraries(logger=None, **_):
    logging.getLogger("kombu").setLevel(logging.WARNING)
