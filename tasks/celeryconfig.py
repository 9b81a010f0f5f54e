"""Celery's configuration, read from the settings model when the app is first configured (lazily:
`app.config_from_object("tasks.celeryconfig")`), not when tasks/app.py is imported.

A bad setting stops a worker or beat here, at start, with one line naming the variable (exit 2).
"""
from __future__ import annotations

import sys

import beat_schedule
from htdask.settings import load_or_exit
from htdask.state import keys
from htdask.state.connection import check_eviction_or_exit, check_or_exit
from tasks import beat

# "htdask worker: bad setting: ..." (or beat, flower): the program that is refusing to start
_program = "htdask " + next((a for a in sys.argv[1:] if a in ("worker", "beat", "flower")), "celery")
_s = load_or_exit(_program)
# Broker and result backend: one Redis server, or kombu's sentinel:// transport and celery's sentinel result
# backend following the master across a failover (htdask.state.connection); an unusable one stops the process.
_redis = check_or_exit(_program, _s.redis_url)
# A Redis that may evict keys (maxmemory-policy other than noeviction) stops a worker, beat or Flower here, one
# line (REDIS_ALLOW_EVICTION=1: a warning); a Redis down now is checked once it answers (heartbeat, beat).
if _program != "htdask celery":
    check_eviction_or_exit(_program)

broker_url = _redis.celery_url()
result_backend = _redis.celery_url()
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
# At least once: a task is acknowledged after it ran, and re-queued if its worker died.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Every task ends (hard limit) far inside the visibility timeout, so Redis never re-delivers a task that is
# still running (the model refuses VISIBILITY_TIMEOUT < 4 × TASK_TIME_LIMIT).
task_time_limit = _s.task_time_limit
task_soft_time_limit = max(1, _s.task_time_limit - 30)
broker_transport_options = {"visibility_timeout": _s.visibility_timeout, **_redis.transport_options()}
result_backend_transport_options = {"visibility_timeout": _s.visibility_timeout,
                                    **_redis.transport_options()}
result_expires = 3600
task_default_queue = _s.schedd_name
task_track_started = True
# Flower and `celery events` see our tasks with their arguments.
worker_send_task_events = True
task_send_sent_event = True
broker_connection_retry_on_startup = True
timezone = "UTC"
# Retries of the cluster tasks (tasks/cluster_tasks.py), from TASK_MAX_RETRIES and RETRY_BACKOFF_MAX.
task_annotations = ("tasks.cluster_tasks:RetryLimits",)

beat_schedule = beat_schedule.schedule(_s)
# Only the beat holding RedBeat's Redis lock sends: two beats started by mistake never double a poll
# (tasks/beat.py gives RedBeat our own Redis client, so it follows a Sentinel master too).
beat_scheduler = "tasks.beat:Scheduler"
beat_max_loop_interval = beat.MAX_LOOP_INTERVAL
redbeat_redis_url = _s.redis_url
redbeat_key_prefix = keys.redbeat_prefix()
redbeat_lock_timeout = _s.beat_lock_timeout
