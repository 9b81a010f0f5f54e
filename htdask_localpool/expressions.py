"""ClassAd expressions of submit commands, parsed once (jobad and requirements share the memo)."""
from __future__ import annotations

from htdask_localpool import ads
from htdask_localpool.submitlang import SubmitError

_parsed: dict[str, object] = {}


def expression(text: str, key: str):
    """A ClassAd value (literal -> Python value, else classad2-unparsed Expr) or SubmitError.

    Memoised: the jobs of one submit mostly share their expressions (values are not mutated)."""
    got = _parsed.get(text, _parsed)
    if got is not _parsed:
        return got
    try:
        got = _parsed[text] = ads.parse_value(text)
    except ValueError:
        raise SubmitError(f"Parse error in expression: \n\t{key} = {text}\n\t") from None
    return got
