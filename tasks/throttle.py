"""A schedd wrapper that keeps a minimum interval between calls to one schedd, and times them.

Many submissions at once get "resource temporarily unavailable" from a busy schedd; every worker of
one submit node shares the interval through Redis (`Store.throttle_wait`). Every call's duration
(without the wait) and failure is recorded for the exporter (`htdask.state.metrics`; a query or history is
timed until its ads are read, since they stream).
"""
from __future__ import annotations

import logging
import time

from htdask.state import Store
from workers.htcondor.schedd import Schedd

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
            started = time.monotonic()
            try:
                result = target(*args, **kwargs)
            except Exception:
                self._store.metrics.command(self._name, attr, time.monotonic() - started, ok=False)
                raise
            if attr in ("query", "history"):
                return self._timed_stream(attr, result, started)
            self._store.metrics.command(self._name, attr, time.monotonic() - started, ok=True)
            return result

        return throttled

    def _timed_stream(self, attr: str, ads, started: float):
        ok = False
        try:
            yield from ads
            ok = True
        except GeneratorExit:  # the caller stopped reading early: not a schedd failure
            ok = True
            raise
        finally:
            self._store.metrics.command(self._name, attr, time.monotonic() - started, ok=ok)
