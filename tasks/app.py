"""The Celery application: Redis broker and backend, at-least-once delivery, one queue per schedd.

Its configuration (tasks/celeryconfig.py) is read from the settings model when the app is first
configured, not at import: importing this module reads no setting.
"""
from __future__ import annotations

import logging

from celery import Celery
from celery.signals import after_setup_logger, celeryd_after_setup, task_postrun

from htdask.state.connection import configure_celery
from tasks.config import poll_queue, settings

app = Celery("htdask", include=["tasks.cluster_tasks", "tasks.history", "tasks.limits"])
app.config_from_object("tasks.celeryconfig")

import tasks.startup  # noqa: E402,F401  (a worker refuses an unusable setup at start)
from tasks import beat  # noqa: E402


def client_app(redis_url: str) -> Celery:
    """A Celery app of its own for a client that sends tasks to (and reads results from) the Redis at
    `redis_url` (the gateway's `redis_url` option), configured like `app` otherwise; `app` is left alone."""
    client = Celery("htdask-client", set_as_current=False)
    client.config_from_object("tasks.celeryconfig")
    configure_celery(client, redis_url)
    return client


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
