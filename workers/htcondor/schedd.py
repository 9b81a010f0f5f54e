"""The one schedd interface the task layer uses, whatever talks to HTCondor underneath.

`workers.htcondor.get_schedd()` picks the implementation from CONDOR_BACKEND: `cli` (default; the condor_* programs,
which also works across users via run-as-user) or `bindings` (htcondor2, in-process).  Both raise
ScheddError for any failure, so callers handle one exception family.
"""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

from htdask.domain import brief
from htdask.domain.validation import ValidationError, validate_job_id
from htdask.domain.submitvalues import validate_reason

if TYPE_CHECKING:
    from htdask.domain.submitdesc import CombinedDescription, SubmitDescription

log = logging.getLogger(__name__)

#: job ids named in one condor_rm/hold/release (separate argv words of ~12 bytes: far below ARG_MAX);
#: a longer list is acted on in several calls
IDS_PER_CALL = 2000
#: characters of a constraint given to a schedd: it is one argv word, and Linux refuses a word over
#: 128 KiB (MAX_ARG_STRLEN) with "Argument list too long"; callers split longer ones
#: (htdask.domain.jobspec.jobs_constraints keeps each under CONSTRAINT_MAX)
CONSTRAINT_LIMIT = 100_000


def _meaningful_line(stderr: str) -> str:
    """The stderr line that explains a failure: the first line saying 'error', else the first that
    is not a warning or condor_submit's monitoring hint, else the last non-empty one."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    if not lines:
        return ""
    for ln in lines:
        if "error" in ln.lower():
            return ln[:300]
    for ln in lines:
        if not ln.lower().startswith(("warning", "to monitor your job")):
            return ln[:300]
    return lines[-1][:300]


class ScheddError(Exception):
    """A schedd operation failed; str() is one line with the stderr's meaningful line."""

    def __init__(self, message: str, argv: Sequence[str] | None = None, returncode: int | None = None,
                 stderr: str = ""):
        self.message = message
        self.argv = list(argv) if argv is not None else None
        self.returncode = returncode
        self.stderr = stderr or ""
        super().__init__(message)

    def __str__(self) -> str:
        line = _meaningful_line(self.stderr)
        if line and line not in self.message:
            return f"{self.message}: {line}"
        return self.message


class ScheddTimeout(ScheddError):
    """A condor_* command ran past CONDOR_TIMEOUT and was killed."""


class ParseError(ScheddError):
    """A command's output could not be parsed (truncated, garbled, or not the expected format)."""


@dataclass(frozen=True)
class ActResult:
    """Outcome of remove/hold/release; ok with a message also when nothing matched."""

    ok: bool
    message: str
    matched: bool = True  # False when nothing matched (still ok)


class Schedd(abc.ABC):
    """Submit, query and act on jobs of one schedd."""

    #: whether `submit` takes a CombinedDescription (several queue statements in one condor_submit)
    combines_descriptions: bool = True

    @abc.abstractmethod
    def submit(self, desc: "SubmitDescription | CombinedDescription", user: str | None = None) -> list[str]:
        """Submit `desc` in one transaction (all its jobs or none); the new job ids 'C.P' in order, which
        for a CombinedDescription is part after part, each part's items in order."""

    @abc.abstractmethod
    def query(self, constraint: str = "true", projection: Sequence[str] | None = None) -> Iterator[dict]:
        """The queue's ads matching `constraint` (every user's jobs), one dict at a time."""

    def remove(self, ids: Sequence[str] | None = None, constraint: str | None = None,
               user: str | None = None, reason: str | None = None) -> ActResult:
        """Remove jobs given by ids or by constraint (exactly one of them); more than IDS_PER_CALL ids
        take several calls (one ActResult for all)."""
        return self._act_all("remove", ids, constraint, user, reason)

    def hold(self, ids: Sequence[str] | None = None, constraint: str | None = None,
             user: str | None = None, reason: str | None = None) -> ActResult:
        """Hold jobs given by ids or by constraint."""
        return self._act_all("hold", ids, constraint, user, reason)

    def release(self, ids: Sequence[str] | None = None, constraint: str | None = None,
                user: str | None = None, reason: str | None = None) -> ActResult:
        """Release held jobs given by ids or by constraint."""
        return self._act_all("release", ids, constraint, user, reason)

    def _act_all(self, action: str, ids, constraint, user, reason) -> ActResult:
        ids, constraint = _selection(ids, constraint)
        reason = _reason(reason)
        if ids is None or len(ids) <= IDS_PER_CALL:
            return self._act(action, ids, constraint, user, reason)
        results = [self._act(action, ids[i:i + IDS_PER_CALL], None, user, reason)
                   for i in range(0, len(ids), IDS_PER_CALL)]
        return ActResult(all(r.ok for r in results), brief.lines([r.message for r in results], 2),
                         matched=any(r.matched for r in results))

    @abc.abstractmethod
    def _act(self, action: str, ids: list[str] | None, constraint: str | None, user: str | None,
             reason: str | None) -> ActResult:
        """Apply `action` ("remove", "hold" or "release") to the jobs given by checked `ids` (a non-empty
        list of 'C.P') or by a checked one-line `constraint` (the other is None); `reason` is checked."""

    @abc.abstractmethod
    def history(self, constraint: str | None = None, projection: Sequence[str] | None = None,
                limit: int | None = None) -> Iterator[dict]:
        """Ads of jobs that left the queue, most recent first."""


def check_constraint(constraint: object) -> str:
    """A ClassAd constraint given to a schedd: a non-empty string on one line (it becomes one argv word)."""
    if not isinstance(constraint, str) or not constraint.strip():
        raise ValidationError("constraint", constraint, "must be a non-empty ClassAd expression")
    if "\n" in constraint or "\x00" in constraint:
        raise ValidationError("constraint", constraint, "must be one line")
    if len(constraint.encode()) > CONSTRAINT_LIMIT:
        raise ValidationError("constraint", constraint,
                              f"is longer than {CONSTRAINT_LIMIT} bytes (one argument); split it")
    return constraint


def _selection(ids: Sequence[str] | None, constraint: str | None) -> tuple[list[str] | None, str | None]:
    if (ids is None) == (constraint is None):
        raise ValidationError("job selection", (ids, constraint), "give exactly one of ids or constraint")
    if ids is None:
        return None, check_constraint(constraint)
    if isinstance(ids, str) or not ids:
        raise ValidationError("job ids", ids, "must be a non-empty list of 'C.P' ids")
    return [validate_job_id(i) for i in ids], None


def _reason(reason: str | None) -> str | None:
    return None if reason is None else validate_reason(reason)
