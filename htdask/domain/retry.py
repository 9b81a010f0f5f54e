"""The one retry/backoff rule of the project, on tenacity (https://tenacity.readthedocs.io).

- `delay(attempt, first, cap)`: the pause before retry number `attempt` (1, 2, ...), in seconds:
  ``first * 2 ** (attempt - 1)`` capped at `cap` (tenacity's ``wait_exponential``). Used where the
  caller keeps its own schedule: the operator's per-resource requeue, the crash-loop pause.
- `retrying(...)`: a tenacity ``Retrying`` for a loop that retries in place (condor_q in the poller,
  the CI Connect look-up), with the same waits, one log line per retry, and the last error re-raised.

Celery tasks use Celery's own ``autoretry_for``/``retry_backoff`` (same doubling, with jitter).
"""
from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Callable

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential


def delay(attempt: int, first: float, cap: float) -> float:
    """Seconds to wait before retry `attempt` (>= 1): `first`, then doubling, never above `cap`."""
    wait = wait_exponential(multiplier=first, max=cap)
    return float(wait(SimpleNamespace(attempt_number=max(1, attempt))))  # it reads only attempt_number


def retrying(attempts: int, first: float, cap: float, retry_on: type[BaseException] | tuple,
             log: logging.Logger, what: Callable[[], str] | str,
             sleep: Callable[[float], None] | None = None) -> Retrying:
    """Up to `attempts` tries (>= 1) of a block, retried on `retry_on` after `delay(n, first, cap)`.

    Use as ``for attempt in retrying(...): with attempt: ...``; after the last try the error is
    re-raised as it is. `what` names the operation in the retry log line.
    """
    def before_sleep(state) -> None:
        name = what() if callable(what) else what
        log.warning("%s failed (attempt %d of %d), retrying in %.2fs: %s", name, state.attempt_number,
                    attempts, state.next_action.sleep, state.outcome.exception())

    extra = {"sleep": sleep} if sleep is not None else {}
    return Retrying(stop=stop_after_attempt(max(1, attempts)), wait=wait_exponential(multiplier=first, max=cap),
                    retry=retry_if_exception_type(retry_on), before_sleep=before_sleep, reraise=True, **extra)
