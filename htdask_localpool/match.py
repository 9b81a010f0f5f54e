"""Constraint evaluation with classad2 (as the schedd does), made cheap for big queues.

Only the attributes the expression references (found with classad2's externalRefs, and
followed through attributes that are themselves expressions) are copied into the
classad2.ClassAd that the constraint is evaluated against.
"""
from __future__ import annotations

import logging

import classad2

from htdask_localpool import ads
from htdask_localpool.ads import Expr

log = logging.getLogger(__name__)

_STRING_REF_FUNCS = ("eval(", "unparse(", "evalinmyscope(")


def references(tree) -> set[str]:
    """Lower-case top-level attribute names an expression refers to (MY. scope included)."""
    out = set()
    for name in classad2.ClassAd().externalRefs(tree):
        low = name.lower()
        if low.startswith("target."):
            continue
        if low.startswith("my."):
            low = low[3:]
        out.add(low.split(".", 1)[0])
    return out


def truthy(v) -> bool:
    """HTCondor's EvalBool: true, or a non-zero number; UNDEFINED/ERROR/strings are false."""
    if isinstance(v, classad2.Value):
        return False
    if v is True:
        return True
    if v is False or isinstance(v, (str, list)):
        return False
    if isinstance(v, (int, float)):
        return v != 0
    return False


class Constraint:
    """A compiled constraint; raises ValueError for text that is not a ClassAd expression."""

    def __init__(self, text: str, spellings: dict[str, list[str]] | None = None):
        try:
            self.tree = classad2.ExprTree(text)
        except Exception as exc:
            raise ValueError(text) from exc
        self.text = text
        self.spellings = spellings
        self.full = any(f in text.lower().replace(" ", "") for f in _STRING_REF_FUNCS)
        self.refs = references(self.tree)
        self._tree_cache: dict = {}
        self._ref_cache: dict[str, set] = {}
        # Results are memoised on the referenced (type, value) pairs when they are all plain
        # literals: 100k ads usually hold few distinct values of the attributes a constraint uses.
        low = text.lower()
        self._memo: dict | None = None if ("time(" in low or "random(" in low or self.full) else {}

    def matches(self, ad: dict) -> bool:
        if self.full:
            cad = classad2.ClassAd({k: ads.to_classad_value(v, self._tree_cache) for k, v in ad.items()})
            return truthy(self.tree.eval(cad))
        memo = self._memo
        if memo is not None:
            key = []
            for low in self.refs:
                name, val = ads.lookup(ad, low, self.spellings)
                t = type(val)
                if t is Expr or t is list or t is dict:
                    key = None
                    break
                key.append((low, name, t, val))
            if key is not None:
                key = tuple(key)
                hit = memo.get(key)
                if hit is None:
                    sub = {name: val for _low, name, _t, val in key if name is not None}
                    hit = memo[key] = truthy(self.tree.eval(classad2.ClassAd(sub)))
                    if len(memo) > 200_000:
                        memo.clear()
                return hit
        sub: dict = {}
        self._collect(ad, self.refs, sub)
        return truthy(self.tree.eval(classad2.ClassAd(sub)))

    def _collect(self, ad: dict, names, sub: dict) -> None:
        for low in names:
            name, val = ads.lookup(ad, low, self.spellings)
            if name is None or name in sub:
                continue
            t = type(val)
            if t is Expr:
                sub[name] = ads.to_classad_value(val, self._tree_cache)
                more = self._ref_cache.get(val)
                if more is None:
                    more = self._ref_cache[val] = references(sub[name])
                self._collect(ad, more, sub)
            elif t is list or t is dict:
                sub[name] = ads.to_classad_value(val)
            else:
                sub[name] = val

    def evaluate_attr(self, ad: dict, name: str):
        """Not a constraint use: evaluate one (expression) attribute of ``ad``."""
        return evaluate(ad, name, self._tree_cache)


def evaluate(ad: dict, name: str, cache: dict | None = None):
    """The evaluated value of attribute ``name`` of ``ad`` (for -af); UNDEFINED -> None."""
    key, val = ads.lookup(ad, name)
    if key is None:
        return None
    if type(val) is not Expr:
        return val
    cad = classad2.ClassAd({k: ads.to_classad_value(v, cache) for k, v in ad.items()})
    return ads.from_classad_value(cad.eval(key))
