"""htdask's one configuration: a pydantic-settings model of every setting (htdask/settings/model.py), read from
the environment once per process and validated at start.

    from htdask.settings import load
    s = load()                      # Settings; SettingsError (one line naming the variable) if a value is bad
    s.poll_interval, s.gateway.address, s.operator.lease_seconds

Bottom layer: every package may import it, it imports none of ours. Entry points call `load()` (or
`load_or_exit(program)`) when they start and hand the result (or the section they need) to the objects
they build; library code takes settings as an argument and falls back to `load()` only when none is given.
Nothing reads a setting at import time.
"""
from __future__ import annotations

import functools
import os
import sys

from pydantic import ValidationError

from htdask.settings.base import Section
from htdask.settings.errors import SettingsError, one_line
from htdask.settings.model import DEFAULT_IMAGE, DEFAULT_REDIS_URL, Settings
from htdask.settings.sections import GatewaySettings, IdentitySettings, OperatorSettings

__all__ = ["Settings", "GatewaySettings", "IdentitySettings", "OperatorSettings", "SettingsError", "load", "freeze",
           "load_or_exit", "env_names", "DEFAULT_IMAGE", "DEFAULT_REDIS_URL"]


def sections() -> list[type[Section]]:
    """The top level and its nested sections, in the order of the model."""
    return [Settings] + [f.annotation for f in Settings.model_fields.values()
                         if isinstance(f.annotation, type) and issubclass(f.annotation, Section)]


@functools.lru_cache(maxsize=1)
def env_names() -> tuple[str, ...]:
    """Every environment variable the model reads."""
    return tuple(f.validation_alias for m in sections() for f in m.model_fields.values()
                 if isinstance(f.validation_alias, str))


def build(**overrides) -> Settings:
    """A fresh model from the environment, `overrides` (attribute names) winning; SettingsError if bad."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        raise SettingsError(one_line(e)) from None


@functools.lru_cache(maxsize=1)
def _cached(environment: tuple) -> Settings:
    return build()


@functools.lru_cache(maxsize=1)
def _encoded_names() -> tuple:
    return tuple(map(os.fsencode, env_names()))


def _environment() -> tuple:
    """The raw values of the model's variables (os.environ's bytes mapping: a few microseconds)."""
    data = getattr(os.environ, "_data", None)
    if data is None:  # not POSIX
        return tuple(map(os.environ.get, env_names()))
    return tuple(map(data.get, _encoded_names()))


_frozen: Settings | None = None


def freeze() -> Settings:
    """Keep this process's settings for good: `load()` returns them without looking at the environment
    again. A Celery worker calls it at start (tasks/startup.py): its environment never changes after that,
    and `load()` is called on every task's hot path. Raises SettingsError like `load()`."""
    global _frozen
    _frozen = _cached(_environment())
    return _frozen


def _forget() -> None:
    """Forget the cached (and frozen) settings: the next `load()` reads the environment again."""
    global _frozen
    _frozen = None
    _cached.cache_clear()


def load() -> Settings:
    """This process's settings: read and validated on the first call, the same object afterwards.

    The cache is keyed on the values of the model's variables, so a process whose environment never
    changes (every real one) builds the model once; a test that sets a variable gets a model with it.
    Raises SettingsError (one line naming the variable) for a bad value.
    """
    if _frozen is not None:
        return _frozen
    return _cached(_environment())


load.cache_clear = _forget  # type: ignore[attr-defined]


def load_or_exit(program: str) -> Settings:
    """load() for an entry point: a bad setting prints `<program>: bad setting: <line>` and exits 2."""
    try:
        return load()
    except SettingsError as e:
        print(f"{program}: bad setting: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
