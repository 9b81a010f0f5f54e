"""The Celery beat schedule: one poll of the queue per schedd every POLL_INTERVAL seconds, and one pass of the
idle and lifetime limits per schedd (tasks/limits.py) as often.

`celery -A tasks beat` reads it through the app (tasks/app.py). Each entry goes to that schedd's poll
queue (`<schedd>.poll`, which the schedd's worker consumes next to its own), so the poll runs on the
submit node that owns the schedd and never queues behind scale tasks. A poll that finds the previous one still
running (two beats by mistake, or a slow schedd) skips itself: see tasks/poll.py.
"""
from __future__ import annotations


def schedule(settings) -> dict:
    from tasks.config import poll_queue

    def every_period(name: str, task: str) -> dict:
        """One `task` per schedd and POLL_INTERVAL, on the schedd's poll queue."""
        return {f"{name}-{schedd}": {"task": task, "schedule": settings.poll_interval, "kwargs": {"schedd": schedd},
                                     "options": {"queue": poll_queue(schedd)}}
                for schedd in settings.schedds}

    # Polls have no `expires`: a worker judges it by its own clock (one 30 s ahead discarded every poll). Polls
    # that waited in the queue skip themselves when another ran less than half a period ago, by Redis' clock
    # (tasks/poll.py). The idle and lifetime limits pass (tasks/limits.py): one task per schedd and period
    # serves all its clusters.
    return {**every_period("poll", "tasks.poll_queue"), **every_period("limits", "tasks.enforce_limits")}
