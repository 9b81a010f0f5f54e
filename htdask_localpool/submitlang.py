"""The submit description language, read by HTCondor's own code (htcondor2.Submit).

HTCondor's SubmitHash parses the text (macros, ``+Attr`` -> ``MY.Attr``, if/else, include),
``getQArgs()`` / ``itemdata()`` read every queue form (``in``, ``from`` file / inline /
command ``|``, ``matching files|dirs``, slices) and ``expand()`` expands every value,
macro functions included (``$F*()``, ``$INT``, ``$REAL``, ``$CHOICE``, ``$RANDOM_CHOICE``,
``$ENV``, ``$(name:default)``).  This module only adds what the binding leaves to
condor_submit itself (submit.cpp): several queue statements in one file, the queue count
expression, the ``-append`` / ``name=value`` lines, and the live variables condor_submit sets
for each job: $(Cluster) $(ClusterId) $(Process) $(ProcId) $(JobId) $(Step) $(Row)
$(ItemIndex) $(Item) / the queue variables, and $(SUBMIT_FILE).

htcondor2 is imported here only, so programs that never read a submit file don't pay for it.
"""
from __future__ import annotations

import logging
import re

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


_QUEUE_LINE = re.compile(r"^\s*queue(?:\s+(.*))?$", re.I | re.S)
_FOREACH_KW = re.compile(r"(?<![\w.$(])(in|from|matching)(?![\w.])", re.I)
_MACRO_REF = re.compile(r"\$\(([A-Za-z_][\w.]*)(?::[^)]*)?\)")


class Queue:
    """One queue statement with the submit commands in force at that point.

    ``rows`` are the item dicts (var -> value) from ``itemdata()``, or None (one implicit
    item); ``count`` jobs are queued per row.  (A plain class: dataclasses costs imports.)
    """
    __slots__ = ("submit", "keys", "count", "vars", "rows", "line")

    def __init__(self, submit, keys: list[str], count: int, vars: list[str], rows: list[dict] | None, line: int):
        self.submit = submit  # htcondor2.Submit
        self.keys = keys  # the submit commands set (not the live variables), as written
        self.count, self.vars, self.rows, self.line = count, vars, rows, line

    @property
    def num_jobs(self) -> int:
        return self.count * (len(self.rows) if self.rows is not None else 1)


class Description:
    def __init__(self):
        self.queues: list[Queue] = []
        self.had_queue = False


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first physical line number, text) with backslash continuations joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
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


def _is_queue(line: str) -> bool:
    m = _QUEUE_LINE.match(line)
    if not m:
        return False
    rest = (m.group(1) or "").lstrip()
    return not (rest.startswith("=") or rest.startswith(":="))


def _statements(lines: list[tuple[int, str]]):
    """Yield ("cmd", line, text) and ("queue", line, full statement text) in order.

    A queue item list opened with "(" and not closed on the same line runs to the line
    whose text starts with ")" (HTCondor's rule for multi-line item lists).
    """
    i = 0
    while i < len(lines):
        num, line = lines[i]
        i += 1
        if not _is_queue(line):
            yield "cmd", num, line
            continue
        stmt = [line]
        kw = _FOREACH_KW.search(line)
        tail = line[kw.end():].strip() if kw else ""
        if tail.startswith("(") and not tail.endswith(")"):
            while i < len(lines):
                stmt.append(lines[i][1])
                i += 1
                if stmt[-1].strip().startswith(")"):
                    break
            else:
                raise ParseError(num)
        yield "queue", num, "\n".join(stmt)


def _new_submit(text: str):
    import htcondor2

    return htcondor2.Submit(text)


def _first_bad_line(cmds: list[tuple[int, str]]) -> int:
    """The line at which HTCondor's parser first fails (only called after a failure)."""
    for k in range(1, len(cmds) + 1):
        try:
            _new_submit("\n".join(t for _n, t in cmds[:k]) + "\n")
        except ValueError:
            return cmds[k - 1][0]
    return cmds[-1][0] if cmds else 0


def parse(text: str, *, appended: list[str] = (), preset: list[tuple[str, str]] = ()) -> Description:
    """Read a submit description; ``appended`` are -a lines, ``preset`` command-line name=value.

    Raises ParseError (line number of the file, or of the -a line) or SubmitError.
    """
    pre = [(0, f"{k} = {v}") for k, v in preset]
    extra_cmds: list[tuple[int, str]] = []
    extra_queue: list[tuple[int, str]] = []
    for idx, line in enumerate(appended, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if _is_queue(s):
            if extra_queue:
                raise SubmitError("only one -queue command allowed")
            extra_queue.append((idx, s))
        elif "=" in s:
            try:
                _new_submit(s + "\n")
            except ValueError:
                raise ParseError(idx, "append") from None
            extra_cmds.append((-idx, s))
        else:
            raise ParseError(idx, "append")

    desc = Description()
    cmds: list[tuple[int, str]] = list(pre)
    appended_done = False
    for kind, num, body in _statements(_logical_lines(text)):
        if kind == "cmd":
            cmds.append((num, body))
            continue
        if not appended_done:
            cmds += extra_cmds
            appended_done = True
        if extra_queue:
            continue  # a -queue argument replaces the file's queue statements
        desc.had_queue = True
        desc.queues.append(_queue(cmds, body, num))
    if not appended_done:
        cmds += extra_cmds
    for idx, stmt in extra_queue:
        desc.had_queue = True
        desc.queues.append(_queue(cmds, stmt, idx, where="append"))
    return desc


def _queue(cmds: list[tuple[int, str]], stmt: str, line: int, where: str = "command file") -> Queue:
    body = "\n".join(t for _n, t in cmds) + "\n"
    try:
        sub = _new_submit(body)
    except ValueError:
        bad = _first_bad_line([c for c in cmds if c[0] > 0])
        raise ParseError(bad or line) from None
    keys = list(sub.keys())
    _check_macro_loops(sub, keys)
    qargs = (_QUEUE_LINE.match(stmt.split("\n", 1)[0]).group(1) or "")
    if "\n" in stmt:
        qargs += "\n" + stmt.split("\n", 1)[1]
    qargs = qargs.strip()
    try:
        sub.setQArgs(qargs)
        items = sub.itemdata()
        rows = None if items is None else list(items)
    except (ValueError, RuntimeError, KeyError) as exc:
        msg = str(exc)
        if msg.startswith("can't open file"):
            raise SubmitError(msg) from None
        raise ParseError(line, where) from None
    count_text, names = _split_count(qargs)
    if rows is not None:
        if names is None:
            names = list(rows[0].keys()) if rows else []
        rows = [r if isinstance(r, dict) else {names[0] if names else "Item": r} for r in rows]
    count = _count(sub, count_text, line, where)
    return Queue(sub, keys, count, names or (["Item"] if rows is not None else []), rows, line)


def _split_count(qargs: str) -> tuple[str, list[str] | None]:
    """(count expression text, variable names or None), split as SubmitForeachArgs::parse_queue_args does:
    before the in/from/matching keyword, scan back over what can be loop variables (letters, digits
    after letters, '_', '.', ',' and spaces); what remains is the count expression."""
    head = qargs.split("(", 1)[0]
    kw = _FOREACH_KW.search(head)
    if not kw:
        return qargs.split("\n", 1)[0].strip(), None
    before = head[:kw.start()].rstrip()
    pvars = pt = len(before)
    while pt > 0:
        ch = before[pt - 1]
        if ch.isdigit():
            pt -= 1
            while pt > 0:
                ch = before[pt - 1]
                if ch.isalpha():
                    break
                if not ch.isdigit():
                    ch = "!"
                    break
                pt -= 1
        if ch.isspace() or ch.isalpha() or ch in ",_.":
            pvars = pt - 1
        else:
            break
        pt -= 1
    names = [n for n in re.split(r"[\s,]+", before[pvars:]) if n]
    return before[:pvars].strip(), (names or ["Item"])


def _count(sub, text: str, line: int, where: str) -> int:
    if not text:
        return 1
    if "$" in text:
        sub["_LocalPoolQueueCount"] = text
        try:
            text = sub.expand("_LocalPoolQueueCount").strip()
        except KeyError:
            raise ParseError(line, where) from None
    if text.isdigit():
        return int(text)
    import classad2

    try:
        v = classad2.ExprTree(text).eval()
    except Exception:
        raise ParseError(line, where) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v >= 2**31 - 1:
        raise ParseError(line, where)
    return int(v)


def _check_macro_loops(sub, keys: list[str]) -> None:
    """HTCondor's expander recurses forever on $(a) -> $(b) -> $(a): refuse such text first."""
    refs: dict[str, set[str]] = {}
    for k in keys:
        raw = sub[k]
        if "$(" in raw:
            refs[k.lower()] = {r.lower() for r in _MACRO_REF.findall(raw)}
    if not refs:
        return
    state: dict[str, int] = {}

    def visit(k: str, path: list[str]) -> None:
        s = state.get(k)
        if s == 2 or k not in refs:
            return
        if s == 1:
            raise SubmitError(f"Macro expansion loop: {' -> '.join(path + [k])}")
        state[k] = 1
        for r in refs[k]:
            visit(r, path + [k])
        state[k] = 2

    for k in refs:
        visit(k, [])


class Expander:
    """Expanded values of one queue statement's commands for each job, as condor_submit sets them."""

    def __init__(self, q: Queue, cluster: int, submit_file: str, submit_time: int):
        self.q = q
        self.sub = q.submit
        self.names = {k.lower(): k for k in q.keys}
        for v in q.vars:
            self.names.setdefault(v.lower(), v)
        sub = self.sub
        for k in ("Cluster", "ClusterId"):
            sub[k] = str(cluster)
        if submit_file:
            sub["SUBMIT_FILE"] = submit_file
        sub["SUBMIT_TIME"] = str(submit_time)
        self.cluster = cluster
        # commands with no macro in them (nor in a queue variable) expand to themselves: do them once
        live = {v.lower() for v in q.vars}
        self.static: dict[str, tuple[str, str]] = {}
        self.dynamic: list[tuple[str, str]] = []
        for low, key in self.names.items():
            if low in live:
                continue
            raw = sub[key]
            if "$" in raw:
                self.dynamic.append((low, key))
            else:
                self.static[low] = (key, raw.strip())
        # a live variable is referred to by name: $(Process), $INT(Process), $(x:$(Step))...
        text = "\n".join(sub[key] for _low, key in self.dynamic).lower()
        self.live = [n for n in ("Process", "ProcId", "JobId", "Step", "Row", "ItemIndex")
                     if re.search(r"\b" + n.lower() + r"\b", text)]

    def values(self, proc: int, step: int, row: int, item: dict | None) -> dict[str, tuple[str, str]]:
        """lower-case command -> (command as written, expanded value) for one job."""
        sub = self.sub
        p = str(proc)
        for name in self.live:  # only the live variables some value may refer to (setting costs)
            sub[name] = (p if name in ("Process", "ProcId") else f"{self.cluster}.{p}" if name == "JobId"
                         else str(step) if name == "Step" else str(row))
        out = dict(self.static)
        if item is not None:
            for k, v in item.items():
                sub[k] = v
                out[k.lower()] = (self.names.get(k.lower(), k), v.strip())
        for low, key in self.dynamic:
            try:
                out[low] = (key, sub.expand(key).strip())
            except KeyError:
                raise SubmitError(f"Failed to expand the macros of {key} = {sub[key]}") from None
        return out
