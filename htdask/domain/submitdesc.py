"""SubmitDescription: a submit file as data, rendered in one place.

Values are raw submit-language strings (the caller validates and quotes values from outside through
htdask.domain.validation; macros like $(DaskWorkerName) written by our own code are allowed here); this
class only guarantees that each entry stays on its own line and that the queue statement is
well formed, so one description can be handed to condor_submit or to htcondor2.Submit alike.
"""
from __future__ import annotations

import copy
import logging
import re
from typing import Iterable, Iterator, Sequence

from htdask.domain.validation import ValidationError
from htdask.domain.submitvalues import check_raw_line, check_submit_safe, validate_submit_key

log = logging.getLogger(__name__)

_ITEM_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# An item value: no separators (',' and whitespace split items), no quotes, no macros, no ')' that
# could end the inline list.
_ITEM_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+=-]+\Z")


def _canonical_key(key: str) -> str:
    """'+Attr' and 'my.Attr' become 'MY.Attr', as HTCondor itself rewrites them."""
    if key.startswith("+"):
        return "MY." + key[1:]
    if key[:3].upper() == "MY.":
        return "MY." + key[3:]
    return key


class SubmitDescription:
    """Ordered submit commands (key -> raw value) plus one queue statement."""

    def __init__(self, commands: Iterable[tuple[str, str]] | dict[str, str] = ()):
        self._commands: dict[str, str] = {}
        self._lower: dict[str, str] = {}  # lower-case key -> key as stored (keys are case-insensitive)
        self.count: int = 1
        self.item_vars: tuple[str, ...] = ()
        self.item_rows: tuple[tuple[str, ...], ...] = ()
        items = commands.items() if isinstance(commands, dict) else commands
        for k, v in items:
            self[k] = v

    # --- commands -----------------------------------------------------------------------------
    def __setitem__(self, key: str, value: str) -> None:
        key = _canonical_key(validate_submit_key(key))
        value = check_raw_line(value, f"value of {key}")
        old = self._lower.get(key.lower())
        if old is not None and old != key:
            del self._commands[old]
        self._commands[key] = value
        self._lower[key.lower()] = key

    def set(self, key: str, value: str) -> "SubmitDescription":
        """Set a command (raw value); returns self so calls chain."""
        self[key] = value
        return self

    def set_attr(self, name: str, value: str) -> "SubmitDescription":
        """Set job attribute `name` (a raw ClassAd expression, strings already quoted) as MY.name."""
        if name.startswith("+") or name[:3].upper() == "MY.":
            raise ValidationError("attribute name", name, "give the bare name, without '+' or 'MY.'")
        self["MY." + name] = value
        return self

    def __getitem__(self, key: str) -> str:
        stored = self._lower.get(_canonical_key(key).lower())
        if stored is None:
            raise KeyError(key)
        return self._commands[stored]

    def get(self, key: str, default: str | None = None) -> str | None:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and _canonical_key(key).lower() in self._lower

    def __delitem__(self, key: str) -> None:
        stored = self._lower.pop(_canonical_key(key).lower())
        del self._commands[stored]

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._commands.items()))

    def commands(self) -> dict[str, str]:
        """A copy of the commands in order (what htcondor2.Submit(dict) takes)."""
        return dict(self._commands)

    def attrs(self) -> dict[str, str]:
        """The MY.* job attributes, keyed by bare attribute name."""
        return {k[3:]: v for k, v in self._commands.items() if k.startswith("MY.")}

    def command_keys(self) -> frozenset[str]:
        """The commands this description assigns, lower-cased (submit keys are case-insensitive)."""
        return frozenset(self._lower)

    # --- queue statement ---------------------------------------------------------------------
    def queue(self, count: int = 1) -> "SubmitDescription":
        """`queue N` (drops any item data)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValidationError("queue count", count, "must be a non-negative integer")
        self.count = count
        self.item_vars = ()
        self.item_rows = ()
        return self

    def with_items(self, vars: Sequence[str], rows: Iterable[Sequence[object]]) -> "SubmitDescription":
        """A copy queueing one job per row: `queue a,b from (\\n1,x\\n2,y\\n)`."""
        vars = tuple(vars)
        if not vars:
            raise ValidationError("queue variables", vars, "need at least one variable")
        for v in vars:
            if not isinstance(v, str) or not _ITEM_VAR.match(v):
                raise ValidationError("queue variable", v, "must match [A-Za-z_][A-Za-z0-9_]*")
        checked = []
        for row in rows:
            row = tuple(str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in row)
            if len(row) != len(vars):
                raise ValidationError("queue item", row, f"needs {len(vars)} values ({', '.join(vars)})")
            for x in row:
                check_submit_safe(x, "queue item value", allow_empty=False, max_len=1024)
                if not _ITEM_VALUE.match(x):
                    raise ValidationError("queue item value", x,
                                          "may only hold letters, digits and _.:/@+=-")
            checked.append(row)
        if not checked:
            raise ValidationError("queue items", [], "need at least one item")
        new = copy.deepcopy(self)
        new.count = 1
        new.item_vars = vars
        new.item_rows = tuple(checked)
        return new

    @property
    def num_jobs(self) -> int:
        return len(self.item_rows) * self.count if self.item_vars else self.count

    def queue_args(self) -> str:
        """What follows 'queue' (htcondor2.Submit.setQArgs form), e.g. '3' or 'a,b from (\\n1,x\\n)'."""
        if self.item_vars:
            n = f"{self.count} " if self.count != 1 else ""
            lines = "".join(",".join(r) + "\n" for r in self.item_rows)
            return f"{n}{','.join(self.item_vars)} from (\n{lines})"
        return "" if self.count == 1 else str(self.count)

    # --- output ------------------------------------------------------------------------------
    def render(self) -> str:
        """The submit file text, ending with the queue statement and a newline."""
        out = [f"{k} = {v}\n" for k, v in self._commands.items()]
        qa = self.queue_args()
        out.append(f"queue {qa}\n" if qa else "queue\n")
        return "".join(out)

    __str__ = render

    def __repr__(self) -> str:
        return f"SubmitDescription({len(self._commands)} commands, {self.num_jobs} jobs)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubmitDescription) and self.render() == other.render()


class CombinedDescription:
    """Several descriptions in ONE submit file: each part's commands, then its own queue statement.

    condor_submit queues the jobs of every queue statement of a file into one cluster, ProcIds numbered
    in order across the statements (condor_submit manual, "queue": a file may hold several). A command
    keeps its value until it is assigned again, so a value one part assigns would stay in force for the
    next part's jobs if that part did not assign the same command: every part must assign exactly the
    same commands (`SubmitDescription.command_keys`), which is checked here; then each job sees only its
    own part's values. Rendered text is the parts' texts one after the other; one part renders exactly
    as that description alone. ValidationError when there is no part or the parts' commands differ.
    """

    def __init__(self, parts: Iterable[SubmitDescription]):
        self.parts: tuple[SubmitDescription, ...] = tuple(parts)
        if not self.parts:
            raise ValidationError("combined description", [], "needs at least one part")
        keys = self.parts[0].command_keys()
        for part in self.parts[1:]:
            if part.command_keys() != keys:
                odd = sorted(part.command_keys() ^ keys)
                raise ValidationError("combined description", odd[:5],
                                      "parts must assign the same submit commands (a value would carry over)")

    @property
    def num_jobs(self) -> int:
        return sum(part.num_jobs for part in self.parts)

    def render(self) -> str:
        """The submit file text: every part's commands followed by its queue statement."""
        return "".join(part.render() for part in self.parts)

    __str__ = render

    def __repr__(self) -> str:
        return f"CombinedDescription({len(self.parts)} parts, {self.num_jobs} jobs)"
