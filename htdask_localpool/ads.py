"""Typed ClassAd values as plain Python, and their cheap storage form.

A job ad is a dict ``name -> value`` where value is int, float, bool, str, None
(UNDEFINED), a list of values, or :class:`Expr` (a non-literal expression kept as its
canonical text).  Stored as JSON, expressions as ``{"$e": text}``: json.loads is fast
and the reals stay reals (``1.0``), which matters for HTCondor's JSON output.
Stdlib only: the runner uses this module without classad2.
"""
from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)


class Expr(str):
    """A ClassAd expression that is not a literal (printed as \\/Expr(text)\\/ in JSON)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Expr({str.__repr__(self)})"


def _to_json(v):
    t = type(v)
    if t is Expr:
        return {"$e": str(v)}
    if t is list:
        return [_to_json(x) for x in v]
    if t is dict:
        return {k: _to_json(x) for k, x in v.items()}
    return v


def _hook(d: dict):
    if len(d) == 1 and "$e" in d:
        return Expr(d["$e"])
    return d


def encode(ad: dict) -> str:
    return json.dumps({k: _to_json(v) for k, v in ad.items()}, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=True)


_loads = json.JSONDecoder(object_hook=_hook).decode


def decode(text: str) -> dict:
    return _loads(text)


def lookup(ad: dict, name: str, spellings: dict[str, list[str]] | None = None):
    """Case-insensitive attribute lookup; returns (stored name, value) or (None, None)."""
    if name in ad:
        return name, ad[name]
    if spellings is not None:
        for cand in spellings.get(name.lower(), ()):
            if cand in ad:
                return cand, ad[cand]
        return None, None
    low = name.lower()
    for k in ad:
        if k.lower() == low:
            return k, ad[k]
    return None, None


# ---------------------------------------------------------------- text forms

def format_real(x: float) -> str:
    """HTCondor's real formatting: %.16G, with '.0' appended when it looks integral."""
    if x != x:
        return "real(\"NaN\")"
    if x in (float("inf"), float("-inf")):
        return "real(\"INF\")" if x > 0 else "real(\"-INF\")"
    s = "%.16G" % x
    if s.lstrip("-").isdigit():
        s += ".0"
    return s


def quote_string(s: str) -> str:
    """A ClassAd string literal (new syntax: backslash and double quote escaped)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_old(s: str) -> str:
    """Old ClassAd syntax string (as printOld does: only double quotes escaped)."""
    return '"' + s.replace('"', '\\"') + '"'


def unparse(v, old: bool = False) -> str:
    """The ClassAd text of a value."""
    t = type(v)
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float:
        return format_real(v)
    if t is str:
        return _quote_old(v) if old else quote_string(v)
    if t is Expr:
        return old_expr(v) if old else str(v)
    if v is None:
        return "undefined"
    if t is list:
        return "{ " + ",".join(unparse(x, old) for x in v) + " }"
    if t is dict:
        return "[ " + "; ".join(f"{k} = {unparse(x, old)}" for k, x in v.items()) + " ]"
    return str(v)


_old_cache: dict[str, str] = {}


def old_expr(text: str) -> str:
    """An expression in old ClassAd syntax (``=?=`` not ``is``, one line), unparsed by classad2."""
    got = _old_cache.get(text)
    if got is None:
        import classad2

        try:
            ad = classad2.ClassAd()
            ad["x"] = classad2.ExprTree(str(text))
            got = ad.printOld()[4:].rstrip("\n")
        except Exception:  # not parseable: print as stored
            got = str(text)
        if len(_old_cache) > 4096:
            _old_cache.clear()
        _old_cache[text] = got
    return got


def format_old(ad: dict, names=None) -> str:
    """Old-format ClassAd text ("Name = value" lines), in ``names`` order if given."""
    keys = ad.keys() if names is None else [n for n in names if n in ad]
    return "".join(f"{k} = {unparse(ad[k], old=True)}\n" for k in keys)


def autoformat(v) -> str:
    """condor_q -af style rendering: strings raw, everything else as ClassAd text."""
    if type(v) is str:
        return v
    return unparse(v)


# ---------------------------------------------------------------- literal parsing

def parse_simple_literal(text: str):
    """Parse ints, reals, booleans, undefined and simple quoted strings without classad2.

    Returns (True, value) or (False, None) when the text needs the real ClassAd parser.
    """
    s = text.strip()
    if not s:
        return False, None
    low = s.lower()
    if low == "true":
        return True, True
    if low == "false":
        return True, False
    if low == "undefined":
        return True, None
    if s[0] == '"' and s[-1] == '"' and len(s) >= 2 and "\\" not in s and '"' not in s[1:-1]:
        return True, s[1:-1]
    try:
        return True, int(s)
    except ValueError:
        pass
    if any(c in s for c in ".eE") and not any(c.isalpha() and c not in "eE" for c in s):
        try:
            return True, float(s)
        except ValueError:
            pass
    return False, None


def parse_value(text: str):
    """A ClassAd value from its text: literals become Python values, the rest Expr.

    Raises ValueError if the text is not a valid ClassAd expression.
    """
    ok, value = parse_simple_literal(text)
    if ok:
        return value
    import classad2  # lazily: only commands that parse ClassAd text need it

    try:
        tree = classad2.ExprTree(text)
    except Exception as exc:  # classad2.ClassAdException
        raise ValueError(f"cannot parse ClassAd expression: {text}") from exc
    ad = classad2.ClassAd()
    ad["v"] = tree
    return from_classad_value(ad["v"])


def from_classad_value(v):
    """Convert what classad2 returns for an attribute into our typed value."""
    import classad2

    if isinstance(v, classad2.Value):
        return None if v == classad2.Value.Undefined else Expr("error")
    if isinstance(v, bool) or isinstance(v, (int, float, str)):
        return v
    if isinstance(v, list):
        return [from_classad_value(x) for x in v]
    if isinstance(v, classad2.ExprTree):
        return Expr(str(v))
    if isinstance(v, classad2.ClassAd):
        return {k: from_classad_value(x) for k, x in v.items()}
    return Expr(str(v))


def to_classad_value(v, cache: dict | None = None):
    """Convert our typed value into something classad2.ClassAd() accepts."""
    t = type(v)
    if t is Expr:
        import classad2

        if cache is not None:
            tree = cache.get(v)
            if tree is None:
                tree = cache[v] = classad2.ExprTree(str(v))
            return tree
        return classad2.ExprTree(str(v))
    if t is list or t is dict:
        import classad2

        return classad2.ExprTree(unparse(v))
    return v
