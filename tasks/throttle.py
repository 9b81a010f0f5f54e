"""A schedd wrapper that keeps a minimum interval between calls to one schedd.

Many submissions at once get "resource temporarily unavailable" from a busy schedd; every worker of
one submit node shares the interval through Redis (`Store.throttle_wait`).
"""
from __future__ import annotations

import logging

from state import Store
from workers.schedd import Schedd

log = logging.getLogger(__name__)


class ThrottledSchedd:
    """Same interface as `Schedd`; waits for the schedd's slot before each call."""

    CALLS = ("submit", "query", "remove", "hold", "release", "history")

    def __init__(self, schedd: Schedd, store: Store, name: str, interval: float):
        self._schedd, self._store, self._name, self._interval = schedd, store, name, interval

    def __getattr__(self, attr):
        target = getattr(self._schedd, attr)
        if attr not in self.CALLS:
            return target

        def throttled(*args, **kwargs):
            waited = self._store.throttle_wait(self._name, self._interval)
            if waited > 1:
                log.info("schedd %s: waited %.1fs for the minimum call interval", self._name, waited)
            return target(*args, **kwargs)

        return throttled
