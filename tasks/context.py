"""Per-process singletons the tasks share: the Redis store and this submit node's schedd."""
from __future__ import annotations

import functools

from htdask.state import Store, connect
from tasks.config import settings
from tasks.throttle import ThrottledSchedd
from workers.htcondor import get_schedd


@functools.lru_cache(maxsize=1)
def store() -> Store:
    s = settings()
    return Store(connect(s.redis_url), settings=s)


@functools.lru_cache(maxsize=1)
def schedd() -> ThrottledSchedd:
    s = settings()
    return ThrottledSchedd(get_schedd(settings=s), store(), s.schedd_name, s.schedd_min_interval)


def reset() -> None:
    """Forget the singletons (after a fork, or when tests change the environment)."""
    store.cache_clear()
    schedd.cache_clear()
    settings.cache_clear()
