"""HTCondor's `arguments` and `environment` syntaxes (old V1 and new quoted V2).

New syntax: the whole value in double quotes, "" = a literal double quote, whitespace
separates entries, single quotes group text containing spaces, '' = a literal single
quote inside a quoted section.  Old syntax: arguments split on whitespace, environment
entries separated by ';'.  The job ad keeps the "V2 raw" form (outer quotes removed).
Stdlib only (the runner parses these to start the job).
"""
from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)


class SyntaxProblem(ValueError):
    """The text is not valid in the syntax it claims; str() is HTCondor-like."""


def is_v2_quoted(text: str) -> bool:
    s = text.strip()
    return len(s) >= 2 and s[0] == '"' and s[-1] == '"'


def v2_quoted_to_raw(text: str) -> str:
    """Strip the outer double quotes and turn "" into "."""
    s = text.strip()[1:-1]
    if '"' in s.replace('""', ""):
        raise SyntaxProblem(f"Found unterminated double quote in string: {text.strip()}")
    return s.replace('""', '"')


_V2_TOKEN = re.compile(r"(?:[^\s']|'(?:[^']|'')*')+")
_V2_QUOTED = re.compile(r"'((?:[^']|'')*)'")


def _unquote_section(m) -> str:
    return m.group(1).replace("''", "'")


def split_v2_raw(raw: str) -> list[str]:
    """Tokens of a V2 raw string (single-quote grouping, '' = literal quote)."""
    tokens: list[str] = []
    end = 0
    for m in _V2_TOKEN.finditer(raw):
        if not raw[end:m.start()].isspace() and m.start() != end:
            break  # something that is neither whitespace nor a token: an unterminated quote
        tok = m.group()
        tokens.append(_V2_QUOTED.sub(_unquote_section, tok) if "'" in tok else tok)
        end = m.end()
    if raw[end:] and not raw[end:].isspace():
        raise SyntaxProblem(f"Unterminated single quote in: {raw}")
    return tokens


_NEEDS_QUOTES = re.compile(r"[\s']")


def quote_v2_token(token: str) -> str:
    if token == "" or _NEEDS_QUOTES.search(token):
        return "'" + token.replace("'", "''") + "'"
    return token


def join_v2_raw(tokens) -> str:
    return " ".join(quote_v2_token(t) for t in tokens)


# ---------------------------------------------------------------- arguments

def parse_arguments(text: str) -> tuple[str, str, list[str]]:
    """Submit `arguments` value -> (ad attribute, ad value, argv list).

    New syntax is stored in ``Arguments`` (V2 raw), old syntax in ``Args`` (V1), as
    condor_submit does.
    """
    if is_v2_quoted(text):
        raw = v2_quoted_to_raw(text)
        argv = split_v2_raw(raw)
        return "Arguments", join_v2_raw(argv), argv
    v1 = text.strip()
    return "Args", v1, v1.split()


def argv_from_ad(ad: dict) -> list[str]:
    if isinstance(ad.get("Arguments"), str):
        return split_v2_raw(ad["Arguments"])
    if isinstance(ad.get("Args"), str):
        return ad["Args"].split()
    return []


# ---------------------------------------------------------------- environment

def parse_environment(text: str) -> dict[str, str]:
    """Submit `environment` value (either syntax) -> ordered dict of variables."""
    env: dict[str, str] = {}
    if is_v2_quoted(text):
        for tok in split_v2_raw(v2_quoted_to_raw(text)):
            name, sep, value = tok.partition("=")
            if not sep or not name:
                raise SyntaxProblem(f"Environment entry is missing '=': {tok}")
            env[name] = value
        return env
    for entry in text.split(";"):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, value = entry.partition("=")
        if not sep or not name.strip():
            raise SyntaxProblem(f"Environment entry is missing '=': {entry}")
        env[name.strip()] = value
    return env


def environment_to_ad(env: dict[str, str]) -> str:
    """The job ad's ``Environment`` string (V2 raw)."""
    return join_v2_raw(f"{k}={v}" for k, v in env.items())


def environment_from_ad(ad: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    if isinstance(ad.get("Environment"), str):
        for tok in split_v2_raw(ad["Environment"]):
            name, _, value = tok.partition("=")
            if name:
                env[name] = value
    elif isinstance(ad.get("Env"), str):
        for entry in ad["Env"].split(";"):
            name, sep, value = entry.partition("=")
            if sep and name.strip():
                env[name.strip()] = value
    return env
