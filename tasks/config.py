"""The settings of the Celery side: the one model of htdask/settings/ (every variable, its default and meaning
is declared there and listed in the README).

`settings()` is `settings.load()`: built and validated on the first call, the same object afterwards;
tests that change the environment get a fresh one (`settings.cache_clear()` forgets it).
"""
from __future__ import annotations

from htdask.settings import Settings, load

__all__ = ["Settings", "settings", "poll_queue"]

settings = load


def poll_queue(schedd: str) -> str:
    """The queue of a schedd's polls (`<schedd>.poll`): consumed by that schedd's worker next to its own
    queue (tasks/app.py), so polls never wait behind, nor bury in Flower, a burst of scale tasks."""
    return f"{schedd}.poll"
