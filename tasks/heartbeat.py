"""Workers announce the queues they consume: a heartbeat in Redis (state key `consumers:<queue>`).

A cluster whose schedd queue no worker consumes would otherwise look merely "not polled yet"
forever; `status`, `scale --wait` and `delete --force` read these heartbeats to say so. A bootstep
of the Celery worker writes them from the worker's own timer (the main process, not a pool
process), every INTERVAL seconds, and removes them when the worker stops.
"""
from __future__ import annotations

import logging

from celery import bootsteps

from htdask.state import Store, connect
from htdask.state.connection import check_eviction_or_exit, eviction_checked

log = logging.getLogger(__name__)

#: seconds between two heartbeats of one worker
INTERVAL = 5.0
#: a queue whose last heartbeat is older than this is consumed by nobody (several missed beats)
MAX_AGE = 4 * INTERVAL


class QueueHeartbeat(bootsteps.StartStopStep):
    """Celery worker bootstep: heartbeat the consumed queues (`-Q`) into Redis."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None
        self.store = None
        self.queues: list[str] = []

    def start(self, worker):
        self.store = Store(connect(worker.app.conf.broker_url))
        self.queues = sorted(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        self.beat(worker)
        self.tref = worker.timer.call_repeatedly(INTERVAL, self.beat, (worker,), priority=10)
        log.info("worker %s: heartbeat of queues %s every %.0fs", worker.hostname, ", ".join(self.queues),
                 INTERVAL)

    def beat(self, worker):
        try:
            if not eviction_checked():  # Redis was down when the worker started (tasks/celeryconfig.py)
                check_eviction_or_exit("htdask worker", self.store.r)
            self.store.beat_consumer(self.queues, worker.hostname, MAX_AGE)
        except Exception as exc:  # Redis away: the next beat tries again
            log.warning("worker %s: queue heartbeat failed: %s", worker.hostname, exc)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        try:
            if self.store is not None:
                self.store.drop_consumer(self.queues, worker.hostname)
        except Exception as exc:
            log.warning("worker %s: could not withdraw the queue heartbeat: %s", worker.hostname, exc)
