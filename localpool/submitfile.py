"""The submit description language subset: commands, macros and queue statements.

Parsing is split from job-ad building (commands/submit.py): this module turns text into
ordered steps and expands ``$(...)`` macros for one proc; keys are case-insensitive,
``+Attr`` is rewritten to ``MY.Attr`` as condor_submit does.
"""
from __future__ import annotations

import glob
import logging
import os
import re
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class SubmitError(Exception):
    """A submit failure; condor_submit prints "\\nERROR: <message>\\n" and exits 1."""


class ParseError(SubmitError):
    def __init__(self, line: int, where: str = "command file"):
        self.line = line
        if where == "command file":
            super().__init__(f"Failed to parse command file (line {line}).")
        else:
            super().__init__(f"Failed to parse -a argument line (#{line}).")


@dataclass
class Queue:
    """One queue statement: ``count`` procs per item; items are dicts var -> value."""
    count: int
    items: list[dict] | None  # None: no item list (one implicit item)
    line: int


@dataclass
class Description:
    """Ordered steps: ("set", key, value) and ("queue", Queue)."""
    steps: list = field(default_factory=list)

    @property
    def queues(self) -> list[Queue]:
        return [s[1] for s in self.steps if s[0] == "queue"]


_KEY = re.compile(r"^(\+[A-Za-z_][\w.]*|[A-Za-z_][\w.:-]*)$")
_QUEUE = re.compile(r"^queue(\s+|$)(.*)$", re.I | re.S)
_QUEUE_KW = re.compile(r"^(.*?)(?<![\w.])(in|from|matching)(?![\w.])(.*)$", re.I | re.S)


def normalize_key(key: str) -> str:
    key = key.strip()
    if key.startswith("+"):
        return "MY." + key[1:]
    if key[:3].lower() == "my.":
        return "MY." + key[3:]
    return key


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(line number, text) with backslash continuations joined."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for num, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not pending:
            start = num
        if line.rstrip().endswith("\\") and not line.lstrip().startswith("#"):
            pending += line.rstrip()[:-1]
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def parse(text: str, *, base_dir: str, appended: list[str] = (), preset: list[tuple[str, str]] = (),
          expand_queue_line=None) -> Description:
    """Parse a submit description; ``appended`` are -a lines (placed before the first queue).

    ``expand_queue_line(text)`` expands macros in a queue statement with the variables
    known at that point (needed for things like ``queue $(N)``).
    """
    desc = Description()
    for k, v in preset:
        desc.steps.append(("set", normalize_key(k), v))
    lines = _logical_lines(text)
    extra_steps: list = []
    extra_queue: list = []
    for idx, line in enumerate(appended, 1):
        kind = _classify(line.strip())
        if kind == "queue":
            if extra_queue:
                raise SubmitError("only one -queue command allowed")
            extra_queue.append((idx, line.strip()))
        elif kind == "set":
            key, _, value = line.strip().partition("=")
            if not _KEY.match(key.strip()):
                raise ParseError(idx, "append")
            extra_steps.append(("set", normalize_key(key), value.strip()))
        elif kind == "blank":
            continue
        else:
            raise ParseError(idx, "append")

    variables: dict[str, str] = {}
    for step in desc.steps:
        variables[step[1].lower()] = step[2]

    def add_set(key: str, value: str) -> None:
        desc.steps.append(("set", key, value))
        variables[key.lower()] = value

    appended_done = False
    i = 0
    while i < len(lines):
        num, line = lines[i]
        i += 1
        s = line.strip()
        kind = _classify(s)
        if kind == "blank":
            continue
        if kind == "queue":
            if not appended_done:
                for st in extra_steps:
                    add_set(st[1], st[2])
                appended_done = True
            if extra_queue:
                continue  # the -a queue statement replaces the file's
            stmt = s
            if "(" in stmt and ")" not in stmt[stmt.index("("):]:
                body = [stmt]
                while i < len(lines):
                    n2, l2 = lines[i]
                    i += 1
                    body.append(l2)
                    if l2.strip().startswith(")") or l2.rstrip().endswith(")"):
                        break
                else:
                    raise ParseError(num)
                stmt = "\n".join(body)
            desc.steps.append(("queue", _parse_queue(stmt, num, base_dir, variables, expand_queue_line)))
            continue
        if kind != "set":
            raise ParseError(num)
        key, _, value = s.partition("=")
        key = key.strip()
        if key.endswith(":"):  # "key := value" is also accepted by HTCondor
            key = key[:-1].strip()
        if not _KEY.match(key):
            raise ParseError(num)
        add_set(normalize_key(key), value.strip())
    if not appended_done:
        for st in extra_steps:
            add_set(st[1], st[2])
    for idx, stmt in extra_queue:
        desc.steps.append(("queue", _parse_queue(stmt, idx, base_dir, variables, expand_queue_line)))
    return desc


def _classify(s: str) -> str:
    if not s or s.startswith("#"):
        return "blank"
    if s.split(None, 1)[0].lower() == "queue" and not s[5:].lstrip().startswith("="):
        return "queue"
    if "=" in s:
        return "set"
    return "bad"


def _split_items(text: str) -> list[str]:
    return [t for t in re.split(r"[,\s]+", text.strip()) if t]


def _parse_queue(stmt: str, line: int, base_dir: str, variables: dict, expand) -> Queue:
    if expand is not None:  # macros in the statement head (count, names), not in the items
        cut = stmt.find("(")
        head_text = stmt if cut < 0 else stmt[:cut]
        stmt = expand(head_text, variables) + ("" if cut < 0 else stmt[cut:])
    m = _QUEUE.match(stmt.strip())
    rest = m.group(2).strip() if m else ""
    if not rest:
        return Queue(1, None, line)
    km = _QUEUE_KW.match(rest)
    if not km:
        return Queue(_count(rest, line), None, line)
    head, kw, tail = km.group(1).strip(), km.group(2).lower(), km.group(3).strip()
    count = 1
    head_tokens = head.replace(",", " , ").split()
    if head_tokens and re.fullmatch(r"\d+", head_tokens[0]):
        count = int(head_tokens[0])
        head = head[len(head_tokens[0]):].strip()
    names = [n for n in re.split(r"[,\s]+", head) if n] or ["Item"]
    for n in names:
        if not re.fullmatch(r"[A-Za-z_][\w.]*", n):
            raise ParseError(line)
    if kw == "in":
        body = _paren_body(tail, line)
        values = _split_items(body)
        rows = [[v] for v in values]
    elif kw == "from":
        if tail.startswith("("):
            body = _paren_body(tail, line)
        else:
            path = os.path.join(base_dir, tail)
            try:
                with open(path) as f:
                    body = f.read()
            except OSError as exc:
                raise SubmitError(f"Failed to open file '{tail}' for queue items: {exc.strerror}")
        rows = []
        for raw in body.splitlines():
            raw = raw.strip()
            if not raw or raw.startswith("#"):
                continue
            if len(names) == 1:
                rows.append([raw])
            else:
                rows.append(re.split(r"\s*,\s*|\s+", raw, maxsplit=len(names) - 1))
    else:  # matching
        words = tail
        want = None
        lw = words.split(None, 1)
        if lw and lw[0].lower() in ("files", "dirs"):
            want = lw[0].lower()
            words = lw[1] if len(lw) > 1 else ""
        if words.startswith("("):
            words = _paren_body(words, line)
        values = []
        for pat in _split_items(words):
            for hit in sorted(glob.glob(os.path.join(base_dir, pat))):
                if want == "files" and not os.path.isfile(hit):
                    continue
                if want == "dirs" and not os.path.isdir(hit):
                    continue
                rel = os.path.relpath(hit, base_dir)
                if rel not in values:
                    values.append(rel)
        rows = [[v] for v in values]
    items = []
    for row in rows:
        item = {}
        for idx, n in enumerate(names):
            item[n] = row[idx] if idx < len(row) else ""
        items.append(item)
    return Queue(count, items, line)


def _paren_body(tail: str, line: int) -> str:
    tail = tail.strip()
    if not tail.startswith("(") or ")" not in tail:
        raise ParseError(line)
    return tail[1:tail.rindex(")")]


def _count(text: str, line: int) -> int:
    t = text.strip()
    if re.fullmatch(r"\d+", t):
        return int(t)
    try:  # an integer expression, e.g. "queue 2*3"
        import classad2

        v = classad2.ExprTree(t).eval()
        if isinstance(v, int) and not isinstance(v, bool) and not isinstance(v, classad2.Value) and v >= 0:
            return int(v)
    except Exception:
        pass
    raise ParseError(line)


# ---------------------------------------------------------------- macros

_MAX_DEPTH = 32


def expand(text: str, lookup, depth: int = 0) -> str:
    """Expand $(name), $(name:default) and $ENV(name); $$(...) is left for match time."""
    if "$" not in text:
        return text
    if depth > _MAX_DEPTH:
        raise SubmitError(f"Macro expansion is too deep (loop?) in: {text}")
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        if text.startswith("$$(", i):
            end = _close(text, i + 2)
            out.append(text[i:end + 1] if end >= 0 else text[i:])
            i = end + 1 if end >= 0 else n
            continue
        m = re.match(r"\$(ENV)?\(", text[i:], re.I)
        if not m:
            out.append(ch)
            i += 1
            continue
        open_at = i + m.end() - 1
        end = _close(text, open_at)
        if end < 0:
            out.append(text[i:])
            break
        body = text[open_at + 1:end]
        if m.group(1):
            name, _, default = body.partition(":")
            value = os.environ.get(name.strip(), default)
        else:
            name, sep, default = body.partition(":")
            value = lookup(name.strip())
            if value is None:
                value = default if sep else ""
            value = expand(value, lookup, depth + 1)
        out.append(value)
        i = end + 1
    return "".join(out)


def _close(text: str, open_at: int) -> int:
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return -1
