"""Imported at start by every Python process of tests/test_clock_skew.py's skewed worker (PYTHONPATH).

That worker runs under libfaketime (`faketime -f -30`, FAKETIME_DONT_FAKE_MONOTONIC=1), which moves its wall
clock 30 s back. libfaketime 0.9.10 (Debian 12) breaks `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`, which
Python's `time.sleep` uses (EINVAL, a deadline turned negative), so `time.sleep` sleeps in `select` here.
Nothing else changes: the clock our code reads is libfaketime's, for real.
"""
import os
import select
import time

if os.environ.get("FAKETIME"):
    def _sleep(secs, _select=select.select):
        if secs < 0:
            raise ValueError("sleep length must be non-negative")
        _select([], [], [], secs)

    time.sleep = _sleep
