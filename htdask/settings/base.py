"""Shared pieces of the settings model: the base class every section derives from, and field helpers.

Every field is declared with `setting(...)`: its environment variable (the name users set, unchanged
from before the model existed), its default and one line of meaning; its type is one of the kinds below
(`PositiveSeconds`, `Count`, `Flag`, ...), which carries the unit, the usual range and the parsing of the
kind, so that each is written once. The README's configuration table is generated from these declarations
(htdask/settings/doc.py).
"""
from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, ByteSize, Field, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict


class Section(BaseSettings):
    """A group of settings read from the environment, each under its own variable name.

    Only the process environment is read (no .env file, no secrets directory); an empty variable counts
    as unset (the behaviour of the loose reads the model replaces). Keyword arguments (a CLI flag, a
    traitlets option) override the environment.
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", case_sensitive=True,
                                      populate_by_name=True, frozen=True, validate_default=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings,
                                   file_secret_settings):
        return init_settings, env_settings


def setting(default: Any = None, *, env: str, meaning: str, shown_default: str | None = None,
            **constraints: Any) -> Any:
    """A field read from `env`. `shown_default` (the README's default column when the value is derived,
    e.g. "`SCHEDD_NAME`") only documents it; `constraints` are pydantic's (ge, gt...), beyond its kind's."""
    extra = {"env": env, "meaning": meaning}
    if shown_default is not None:
        extra["shown_default"] = shown_default
    return Field(default, validation_alias=env, description=meaning, json_schema_extra=extra, **constraints)


def comma_list(value: Any) -> Any:
    """'a, b,,c' -> ['a', 'b', 'c'] (lists and tuples pass through)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def flag(value: Any) -> Any:
    """1/true/yes/on and 0/false/no/off, any case (the forms the entry points accepted before)."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off", ""):
            return False
        raise ValueError("must be 1/0, true/false, yes/no or on/off")
    return value


_PORT_RANGE = re.compile(r"^([0-9]{1,5})(?::([0-9]{1,5}))?\Z")


def port_range(value: Any) -> Any:
    """'LOW:HIGH' (or one port), 1..65535, LOW <= HIGH: the form `dask worker --worker-port` takes."""
    if value is None or value == "":
        return None
    m = _PORT_RANGE.match(str(value).strip())
    if not m:
        raise ValueError("must be LOW:HIGH (or one port)")
    low, high = int(m.group(1)), int(m.group(2) or m.group(1))
    if not (1 <= low <= high <= 65535):
        raise ValueError("ports must be 1..65535 with LOW <= HIGH")
    return str(value).strip()


class Unit:
    """`Annotated` marker: the unit of a number setting (shown in the README's type column)."""

    def __init__(self, symbol: str):
        self.symbol = symbol

    def __repr__(self) -> str:
        return f"Unit({self.symbol!r})"


# --- the kinds of setting (a field's type) ------------------------------------------------------------
#: a duration in seconds (bounds given by the field)
Seconds = Annotated[float, Unit("s")]
#: a duration in seconds, > 0
PositiveSeconds = Annotated[Seconds, Field(gt=0)]
#: a duration in seconds, ≥ 0 (the field says what 0 means)
NonNegativeSeconds = Annotated[Seconds, Field(ge=0)]
#: whole seconds (bounds given by the field)
WholeSeconds = Annotated[int, Unit("s")]
#: a number of things or times, ≥ 0
Count = Annotated[int, Field(ge=0)]
#: 1/0, true/false, yes/no, on/off (`flag`)
Flag = Annotated[bool, NoDecode, BeforeValidator(flag)]
#: comma-separated words (`comma_list`)
Names = Annotated[tuple[str, ...], NoDecode, BeforeValidator(comma_list)]
#: comma-separated integers (`comma_list`)
Codes = Annotated[tuple[int, ...], NoDecode, BeforeValidator(comma_list)]
#: `LOW:HIGH` ports, or unset (`port_range`)
PortRange = Annotated[str | None, BeforeValidator(port_range)]


def byte_size(value: Any) -> Any:
    """A memory size: bytes, or a number with a unit (`64GiB`, `512MiB`, `2GB`); ValueError with an example."""
    if value is None or isinstance(value, int):
        return value
    try:
        return TypeAdapter(ByteSize).validate_python(value)
    except ValidationError:
        raise ValueError("is not a memory size: give bytes or a number with a unit, e.g. 64GiB or 512MiB") from None


#: a memory size in bytes, given as bytes or with a unit (`byte_size`); the README shows "bytes (e.g. `64GiB`)"
Bytes = Annotated[ByteSize, BeforeValidator(byte_size)]
