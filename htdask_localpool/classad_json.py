"""HTCondor's JSON rendering of ClassAds (condor_q -json / condor_history -json).

Matches classad's ClassAdJsonUnParser as used by condor_q: 2-space indent, attributes
sorted case-insensitively, reals "%.16G" (+".0" when integral), non-literal expressions
as the string "\\/Expr(<text>)\\/".  Written by hand because it must be fast on 100k ads
and classad2's printJson does not sort.
"""
from __future__ import annotations

import logging
from json.encoder import encode_basestring as _json_str  # C implementation, keeps UTF-8 as is

from htdask_localpool.ads import Expr

log = logging.getLogger(__name__)


def _real(x: float) -> str:
    if x != x or x in (float("inf"), float("-inf")):
        return "null"  # classad's JSON unparser has no spelling for these; keep JSON valid
    s = "%.16G" % x
    if s.lstrip("-").isdigit():
        s += ".0"
    return s


def value(v, indent: str = "  ") -> str:
    """JSON text of one value; ``indent`` is the indentation of the line holding it."""
    t = type(v)
    if t is str:
        return _json_str(v)
    if t is int:
        return str(v)
    if t is bool:
        return "true" if v else "false"
    if t is float:
        return _real(v)
    if v is None:
        return "null"
    if t is Expr:
        return '"\\/Expr(' + _json_str(str(v))[1:-1] + ')\\/"'
    if t is list:
        if not v:
            return "[\n" + indent + "]"
        inner = indent + "  "
        return "[\n" + ",\n".join(inner + value(x, inner) for x in v) + "\n" + indent + "]"
    if t is dict:
        return ad(v, indent)
    return _json_str(str(v))


_order_cache: dict[tuple, list] = {}


def sorted_names(names) -> list[str]:
    """Attribute names sorted like classad's References set (case-insensitive)."""
    key = tuple(names)
    got = _order_cache.get(key)
    if got is None:
        if len(_order_cache) > 4096:
            _order_cache.clear()
        got = _order_cache[key] = sorted(key, key=str.lower)
    return got


class Projection:
    """Fast writer for many ads printed with the same (sorted) attribute list."""

    def __init__(self, names: list[str]):
        self.keys = [(n, f'  "{n}": ') for n in names]

    def ad(self, d: dict) -> str:
        parts = []
        for n, prefix in self.keys:
            if n in d:
                v = d[n]
                t = type(v)
                if t is str:
                    parts.append(prefix + _json_str(v))
                elif t is int:
                    parts.append(prefix + str(v))
                else:
                    parts.append(prefix + value(v, "  "))
        if not parts:
            return "{\n}"
        return "{\n" + ",\n".join(parts) + "\n}"


def ad(d: dict, indent: str = "", names: list[str] | None = None) -> str:
    """One ad as a JSON object; ``names`` = already sorted attribute names to print."""
    if names is None:
        names = sorted_names(d)
    inner = indent + "  "
    parts = []
    for n in names:
        if n in d:
            parts.append(f'{inner}"{n}": {value(d[n], inner)}')
    if not parts:
        return "{\n" + indent + "}"
    return "{\n" + ",\n".join(parts) + "\n" + indent + "}"


class ListWriter:
    """condor_q/condor_history document layout: "[\\n" ad "\\n" ",\\n" ad "\\n" ... "]\\n"."""

    def __init__(self, out, empty_brackets: bool):
        self.out = out
        self.count = 0
        self.empty_brackets = empty_brackets  # condor_history prints "[\n]\n" for no ads
        self._buf: list[str] = []
        if empty_brackets:
            self._buf.append("[\n")

    def write(self, ad_text: str) -> None:
        if self.count == 0 and not self.empty_brackets:
            self._buf.append("[\n")
        elif self.count:
            self._buf.append(",\n")
        self._buf.append(ad_text)
        self._buf.append("\n")
        self.count += 1
        if len(self._buf) > 4096:
            self.out.write("".join(self._buf))
            self._buf.clear()

    def close(self) -> None:
        if self.count or self.empty_brackets:
            self._buf.append("]\n")
        self.out.write("".join(self._buf))
        self._buf.clear()
