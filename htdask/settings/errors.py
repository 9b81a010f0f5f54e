"""The one-line error of a bad setting."""
from __future__ import annotations

from pydantic import ValidationError


#: variables whose values are never shown
SECRETS = frozenset({"GATEWAY_PASSWORD", "JUPYTERHUB_API_TOKEN", "CICONNECT_TOKEN", "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD"})


class SettingsError(ValueError):
    """A setting with a bad value; the message is one line starting with the variable's name."""


def one_line(error: ValidationError) -> str:
    """'VARIABLE=value: what is wrong' for the first error (the variable, not the attribute, is named)."""
    first = error.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    short = _short(first)
    loc = [str(part) for part in first["loc"] if not isinstance(part, int)]
    if not loc:  # a cross-field rule: its message already names the variables
        return message
    value = first.get("input")
    if loc[-1] in SECRETS:
        shown = "(hidden)"
    elif isinstance(value, str) and "://" in value and "@" in value:  # a URL with a password in it
        scheme, rest = value.split("://", 1)
        shown = repr(f"{scheme}://***@{rest.rsplit('@', 1)[1]}")
    else:
        shown = repr(value)
    return f"{loc[-1]}={shown} {short}" if short else f"{loc[-1]}={shown}: {message}"


def _short(error: dict) -> str | None:
    """pydantic's common errors said the way the loose reads before the model said them."""
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if kind == "float_parsing":
        return "is not a number"
    if kind in ("int_parsing", "int_from_float"):
        return "is not an integer"
    if kind == "greater_than":
        return f"must be more than {ctx['gt']}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    return None
