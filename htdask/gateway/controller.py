"""The gateway's handle on the controller: a Celery client of the controller's broker, its Store, and
the schedd (Celery queue) new clusters go to. Built once in `HTCondorBackend.do_setup` and given to
every part of the backend; nothing here reaches a global app or connection.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from celery import Celery

from htdask.state import Store, connect
from htdask.state.managed import set_manager
from tasks.api import Enqueued, enqueue_delete, enqueue_scale

log = logging.getLogger(__name__)


@dataclass
class Controller:
    celery: Celery
    store: Store
    schedd: str  # queue of new clusters
    task_timeout: float  # seconds to wait for a task whose answer the gateway needs

    @classmethod
    def connect(cls, redis_url: str, schedd: str, task_timeout: float, settings) -> "Controller":
        """A Celery client app of its own (`tasks.app.client_app`: tasks.app's is left as configured)."""
        from tasks.app import client_app
        return cls(client_app(redis_url), Store(connect(redis_url), settings), schedd, task_timeout)

    async def scale(self, name: str, n: int, *, owner: str | None, options: dict,
                    names: list[str] | None) -> Enqueued:
        done = await asyncio.to_thread(enqueue_scale, self.store, name, n, owner=owner, options=options,
                                       schedd=self.schedd, names=names, celery=self.celery)
        if done.note:  # QUOTA_MODE=grant cut it down: tasks.api leaves the reporting to its caller
            log.warning("cluster %s: %s of %d workers granted: %s", name, done.granted, n, done.note)
        return done

    async def delete(self, name: str) -> Enqueued:
        return await asyncio.to_thread(enqueue_delete, self.store, name, celery=self.celery)

    async def mark_managed(self, name: str, user: str | None) -> None:
        """Record that the gateway manages `name` (the CLI refuses to scale it; status shows the user)."""
        await asyncio.to_thread(set_manager, self.store, name, "gateway", user)

    async def wait(self, task_id: str | None, cluster: str, what: str) -> None:
        """Wait up to task_timeout for a task; a timeout is logged, not raised (the controller goes on)."""
        if not task_id:
            return
        result = self.celery.AsyncResult(task_id)
        try:
            await asyncio.to_thread(result.get, timeout=self.task_timeout, propagate=False)
        except Exception as exc:
            log.warning("cluster %s: %s not confirmed after %.0fs (%s)", cluster, what, self.task_timeout,
                        type(exc).__name__)

    def read_jobs(self, cluster: str):
        """(job records, summary, request record, poll status of the schedd, ended-job records): one read."""
        return (self.store.job_records(cluster), self.store.summary(cluster), self.store.get(cluster),
                self.store.poll_status(self.schedd), self.store.ended_records(cluster))

    async def ended_jobs(self, cluster: str, names: list[str]) -> dict[str, dict]:
        """History ads of these workers' jobs, by worker name ({} when the task does not answer in time)."""
        def ask():
            res = self.celery.send_task("tasks.ended_jobs", kwargs={"cluster": cluster, "names": names},
                                        queue=self.schedd)
            return res.get(timeout=self.task_timeout)
        try:
            return await asyncio.to_thread(ask) or {}
        except Exception as exc:
            log.warning("cluster %s: history of %d workers unavailable: %s", cluster, len(names), exc)
            return {}
