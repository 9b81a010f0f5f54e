"""A no-op Celery task for the task-throughput baseline, loaded into the benchmark's worker with
`celery -A tasks worker --include bench.noop_tasks` (bench/common.py BenchStack); the product never
imports it.

Same app, same queue, same worker and concurrency as the scale tasks, same delivery options
(acks_late, result stored in Redis): the only difference from `tasks.scale_cluster` is the body.
"""
from __future__ import annotations

import time

from tasks.app import app


@app.task(name="bench.noop", bind=True, acks_late=True)
def noop(self, cluster: str | None = None, n: int | None = None, seq: int | None = None) -> dict:
    # `started`: when the task body began (epoch seconds), the anchor of lone_request_latency
    return {"cluster": cluster, "state": "ok", "desired": n, "started": time.time()}
