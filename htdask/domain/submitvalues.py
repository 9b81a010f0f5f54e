"""Values that go into a submit description or a schedd command: free of line breaks, NULs, control
characters and `$(...)` macro syntax, quoted the way HTCondor reads them (ClassAd strings via classad2,
arguments and environment in the "new" syntax). Errors are `htdask.domain.validation.ValidationError`.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import classad2

from htdask.domain.validation import ValidationError, require_str

# $(x), $$(x), $ENV(x), $RANDOM_CHOICE(..), $Fqpu(x) ...: every submit-language macro form.
_MACRO = re.compile(r"\$[A-Za-z_$]*\(")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_submit_safe(value: Any, field: str, *, max_len: int = 4096, allow_empty: bool = True) -> str:
    """A string that may appear inside a submit description line without changing its meaning."""
    s = require_str(value, field)
    if not s and not allow_empty:
        raise ValidationError(field, value, "must not be empty")
    if len(s) > max_len:
        raise ValidationError(field, value, f"longer than {max_len} characters")
    if "\n" in s or "\r" in s:
        raise ValidationError(field, value, "contains a line break")
    if "\x00" in s:
        raise ValidationError(field, value, "contains a NUL byte")
    m = _CONTROL.search(s)
    if m:
        raise ValidationError(field, value, f"contains control character {m.group()!r}")
    m = _MACRO.search(s)
    if m:
        raise ValidationError(field, value, f"contains submit macro syntax {m.group()!r}")
    return s


# ---------------------------------------------------------------------------------------------
# things that go into submit descriptions

def validate_classad_string(value: Any, field: str = "value", *, max_len: int = 4096) -> str:
    """A string for a ClassAd string attribute; returns it quoted by classad2 ('"..."', escapes done)."""
    s = check_submit_safe(value, field, max_len=max_len)
    return classad2.quote(s)


_PATH = re.compile(r"^/[A-Za-z0-9._+@%,:=/-]*\Z")


def validate_path(value: Any, field: str = "path") -> str:
    """An absolute path with no whitespace, quotes or macros (it is written raw into submit lines)."""
    s = check_submit_safe(value, field, allow_empty=False)
    if not _PATH.match(s):
        raise ValidationError(field, value, "must be an absolute path of letters, digits and ._+@%,:=/-")
    if "/../" in s + "/" or s.endswith("/.."):
        raise ValidationError(field, value, "must not contain '..'")
    return s


_SUBMIT_KEY = re.compile(r"^(\+|MY\.)?[A-Za-z_][A-Za-z0-9_]*\Z", re.IGNORECASE)


def validate_submit_key(value: Any, field: str = "submit command") -> str:
    """A submit command or attribute name: 'request_gpus', '+ProjectName', 'MY.ProjectName'."""
    s = require_str(value, field)
    if not s or len(s) > 128 or not _SUBMIT_KEY.match(s):
        raise ValidationError(field, value, "must be a submit command name like 'request_gpus' or "
                                            "'+ProjectName'")
    if s.lower() == "queue":
        raise ValidationError(field, value, "the queue statement is not a command")
    return s


def validate_submit_value(value: Any, field: str = "submit value") -> str:
    """A raw submit value (the right-hand side of 'key = value')."""
    s = check_submit_safe(value, field)
    if s != s.strip():
        raise ValidationError(field, value, "has leading or trailing whitespace")
    if s.endswith("\\"):
        raise ValidationError(field, value, "ends with a backslash (a line continuation)")
    return s


def check_raw_line(value: Any, field: str = "submit value") -> str:
    """A raw value written by our own code (macros allowed): it must still stay on one line."""
    s = require_str(value, field)
    m = _CONTROL.search(s)
    if m:
        raise ValidationError(field, value, f"contains control character {m.group()!r}")
    if s != s.strip() or s.endswith("\\"):
        raise ValidationError(field, value, "has surrounding whitespace or a trailing backslash")
    return s


def validate_argument(value: Any, field: str = "argument") -> str:
    """One program argument; any printable text, quoted later by quote_arguments."""
    return check_submit_safe(value, field)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def validate_env_name(value: Any, field: str = "environment variable name") -> str:
    s = require_str(value, field)
    if not _ENV_NAME.match(s) or len(s) > 256:
        raise ValidationError(field, value, "must match [A-Za-z_][A-Za-z0-9_]*")
    return s


def check_env(env: Mapping[str, Any], field: str = "environment") -> dict[str, str]:
    """The checked environment as a new dict of str -> str (ints are turned into strings)."""
    if not isinstance(env, Mapping):
        raise ValidationError(field, env, "must be a mapping of names to values")
    out: dict[str, str] = {}
    for name, val in env.items():
        validate_env_name(name, f"{field} variable name")
        if isinstance(val, bool) or not isinstance(val, (str, int)):
            raise ValidationError(f"{field} variable {name}", val, "must be a string")
        out[name] = check_submit_safe(str(val), f"{field} variable {name}")
    return out


def validate_env(env: Mapping[str, Any], field: str = "environment") -> str:
    """Check names and values, and render the submit 'environment' value in the new syntax."""
    return quote_environment(check_env(env, field))


# ---------------------------------------------------------------------------------------------
# HTCondor "new" quoting (as dask-jobqueue's quote_arguments / quote_environment)

def _double_up_quotes(s: str) -> str:
    return s.replace("'", "''").replace('"', '""')


def _quote_word(s: str) -> str:
    q = _double_up_quotes(s)
    if not s or "'" in s or any(c.isspace() for c in s):
        q = "'" + q + "'"
    return q


def quote_arguments(args: Iterable[str]) -> str:
    """The value for 'arguments = ...' in the new syntax, outer double quotes included.

    Doubles ' and ", wraps an argument in single quotes if it holds whitespace or a ' (or is empty).
    Does not validate: callers pass values through validate_argument first.
    """
    return '"' + " ".join(_quote_word(a) for a in args) + '"'


def quote_environment(env: Mapping[str, str]) -> str:
    """The value for 'environment = ...' in the new syntax, outer double quotes included."""
    parts = []
    for name, val in env.items():
        q = _double_up_quotes(val)
        if "'" in val or any(c.isspace() for c in val):
            q = "'" + q + "'"
        parts.append(f"{name}={q}")
    return '"' + " ".join(parts) + '"'


def validate_reason(value: Any, field: str = "reason") -> str:
    """A hold/remove/release reason: one printable line (it becomes HoldReason etc.)."""
    return check_submit_safe(value, field, max_len=1024)


def validate_constraint(value: Any, field: str = "constraint") -> str:
    """A ClassAd expression given from outside: one line, parseable by classad2."""
    s = check_submit_safe(value, field, allow_empty=False, max_len=65536)
    try:
        classad2.ExprTree(s)
    except Exception as e:  # classad2.ClassAdException
        raise ValidationError(field, value, f"is not a ClassAd expression ({e})") from None
    return s


def validate_projection(attrs: Iterable[str], field: str = "projection") -> list[str]:
    """Attribute names for -attributes (comma separated on the command line)."""
    out = []
    for a in attrs:
        if not isinstance(a, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*\Z", a) or len(a) > 256:
            raise ValidationError(field, a, "attribute names must match [A-Za-z_][A-Za-z0-9_.]*")
        out.append(a)
    return out
