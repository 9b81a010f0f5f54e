"""A cluster's idle and lifetime limits: durations as people write them, a cluster's own values over the
site's defaults, refused above the site's maxima. Pure values, no I/O.

- ``idle_timeout``: seconds the cluster's Dask scheduler may have no task processing, queued or unrunnable
  (distributed's ``Scheduler.check_idle``, what dask-gateway's and dask-kubernetes' idle checks read)
  before the controller deletes the cluster; 0: never.
- ``max_lifetime``: seconds from the cluster's first request until the controller deletes it; 0: never.

Where a request enters (`htdask scale --idle-timeout/--max-lifetime`, a gateway cluster's options, a
DaskCluster's ``spec.config``) a value is parsed with `parse_duration` and checked against the site's
maximum with `check` (one-line `ValidationError`); the site's default (IDLE_TIMEOUT, MAX_LIFETIME) applies
to a cluster that gives none (`effective`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from htdask.domain.validation import ValidationError

#: the limits' names, as request fields, record fields and dask-gateway / DaskCluster config keys
KINDS = ("idle_timeout", "max_lifetime")
#: the reason a cluster was deleted for, per limit (the metric's `reason` label)
REASONS = {"idle_timeout": "idle", "max_lifetime": "lifetime"}
#: the settings that hold the site's maxima
MAXIMA = {"idle_timeout": "IDLE_TIMEOUT_MAX", "max_lifetime": "MAX_LIFETIME_MAX"}
#: the longest duration accepted (a year), so a typo cannot overflow anything
LONGEST = 366 * 86400.0

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|min|m|sec|s)")
_WHOLE = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:d|h|min|m|sec|s)\s*)+$")


def parse_duration(value: Any, field: str = "duration") -> float:
    """Seconds of `value`: a number of seconds (int, float or digit string) or units such as ``30m``,
    ``2h``, ``1h30m``, ``90s``, ``1d``. Raises ValidationError (one line naming `field`) for anything else,
    a negative value, or one over a year."""
    if isinstance(value, bool):
        raise ValidationError(field, value, "must be a duration such as 90s, 30m, 2h, not a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        seconds = float(value)
    elif isinstance(value, str) and _WHOLE.match(value.lower()):
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value.lower()))
    else:
        raise ValidationError(field, value, "must be a duration such as 90s, 30m, 2h or 1h30m (0: none)")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValidationError(field, value, "must be a non-negative duration")
    if seconds > LONGEST:
        raise ValidationError(field, value, "must be at most a year")
    return seconds


def text(seconds: float) -> str:
    """'45 s', '30 min', '2 h', '1 h 30 min', '2 d' (for notes and errors)."""
    seconds = float(seconds)
    if seconds < 60 or seconds != int(seconds):
        return f"{seconds:g} s"
    parts, rest = [], int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size} {unit}")
            rest %= size
    return " ".join(parts[:2])


def check(kind: str, seconds: float, maximum: float, field: str | None = None) -> float:
    """`seconds` if the site allows it: at most `maximum` (0: no maximum), and, with a maximum, not 0
    (none). Raises ValidationError naming the limit and the maximum."""
    if maximum > 0 and (seconds == 0 or seconds > maximum):
        shown = "none (0)" if seconds == 0 else text(seconds)
        raise ValidationError(field or kind, shown,
                              f"exceeds the site's maximum {text(maximum)} ({MAXIMA[kind]})")
    return seconds


def requested(values: dict, maxima: dict[str, float], fields: dict[str, str] | None = None) -> dict[str, float]:
    """The limits a request gives (`values`: kind -> a duration, None/absent: not given), parsed and checked
    against `maxima` (kind -> seconds, 0: none); `fields` names each for the error (e.g. ``--idle-timeout``)."""
    out = {}
    for kind in KINDS:
        value = values.get(kind)
        if value is None or value == "":
            continue
        field = (fields or {}).get(kind, kind)
        out[kind] = check(kind, parse_duration(value, field), maxima.get(kind, 0.0), field)
    return out


@dataclass(frozen=True)
class Limits:
    """A cluster's effective limits in seconds (0: none)."""

    idle_timeout: float = 0.0
    max_lifetime: float = 0.0

    @property
    def any(self) -> bool:
        return bool(self.idle_timeout or self.max_lifetime)


def effective(own: dict, defaults: dict[str, float]) -> Limits:
    """A cluster's limits: its own (kind -> seconds, recorded when it was requested) over the site's
    `defaults` (IDLE_TIMEOUT, MAX_LIFETIME)."""
    return Limits(**{kind: float(own[kind]) if own.get(kind) is not None else float(defaults.get(kind) or 0.0)
                     for kind in KINDS})
