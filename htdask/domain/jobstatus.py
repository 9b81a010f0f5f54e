"""HTCondor's job states and hold codes, named once: the one table every layer reads.

`JobStatus` is the job ClassAd's JobStatus (HTCondor manual, "Job ClassAd Attributes": 1 Idle,
2 Running, 3 Removed, 4 Completed, 5 Held, 6 Transferring Output, 7 Suspended). Each state has
- `key`: the word used in summaries (state key `summary:<name>`), `status --json`, the metrics'
  `state` label and the status page (`idle`, ..., `transferring_output`, `suspended`);
- `title`: the word shown to people (`htdask jobs`, the status table's headers);
- `letter`: condor_q's one-letter ST column.

`QUEUED` are the states a job is in while it is still in the schedd's queue and holds a worker slot
or waits for one (held jobs until the hold policy replaces them): they count toward a cluster's
target, are removed by a delete and are never replaced while they last. A job that is Removed or
Completed has left (or is leaving) the queue; how it ended is `htdask.domain.jobend`'s business.

Hold codes are HTCondor's HoldReasonCode values (manual, "HoldReasonCode"); a hold with code 1
(`condor_hold`, UserRequest) is always a person's, HOLD_KEEP_CODES may name more (`kept_hold`).
"""
from __future__ import annotations

import enum
from typing import Iterable


class JobStatus(enum.IntEnum):
    """The job ClassAd's JobStatus."""

    IDLE = 1
    RUNNING = 2
    REMOVED = 3
    COMPLETED = 4
    HELD = 5
    TRANSFERRING_OUTPUT = 6
    SUSPENDED = 7

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def title(self) -> str:
        return self.name.replace("_", " ").capitalize()

    @property
    def letter(self) -> str:
        return "IRXCH>S"[self.value - 1]


#: every state's key, in JobStatus order (the fields of a summary and of `status --json`)
KEYS = tuple(s.key for s in JobStatus)
#: states of a job still in the queue that holds a worker slot or waits for one (see the module docstring)
QUEUED = frozenset({JobStatus.IDLE, JobStatus.RUNNING, JobStatus.HELD, JobStatus.TRANSFERRING_OUTPUT,
                    JobStatus.SUSPENDED})
#: the queued states other than running, in the order people read them (status notes, `--wait`)
WAITING = (JobStatus.IDLE, JobStatus.HELD, JobStatus.SUSPENDED, JobStatus.TRANSFERRING_OUTPUT)


def title(status) -> str:
    """'Idle', ..., 'Transferring output', 'Suspended'; 'JobStatus N' for a code HTCondor does not define."""
    try:
        return JobStatus(status).title
    except ValueError:
        return f"JobStatus {status}"


def counts_text(counts: dict, states: Iterable[JobStatus] = WAITING) -> str:
    """'1 idle, 0 held, 2 suspended, 0 transferring output' from a summary-shaped dict (keys `KEYS`)."""
    return ", ".join(f"{int(counts.get(s.key) or 0)} {s.title.lower()}" for s in states)


#: HoldReasonCode of `condor_hold` (UserRequest): always a hold a person made
HOLD_CODE_USER_REQUEST = 1
#: HoldReasonCode of a policy hold (JobPolicy: periodic_hold, on_exit_hold)
HOLD_CODE_JOB_POLICY = 3
#: HoldReasonCode of a job that exceeded the resources it asked for (e.g. its memory request)
HOLD_CODE_OUT_OF_RESOURCES = 34
#: HoldReasonSubCode of the worker job's own policy hold (code 3, `on_exit_hold`) when its program or
#: environment is missing on the execute host: htdask/domain/worker_start.sh exits with it
#: (`htdask.domain.jobfiles.MISSING_EXIT`)
HOLD_SUBCODE_MISSING_PROGRAM = 86


def missing_program_hold(status, hold_code, hold_subcode) -> bool:
    """True for a worker job held because its program or environment is missing on the execute host
    (HoldReasonCode 3, HoldReasonSubCode 86). No release or replacement can cure it (the job would run the
    same program on the same kind of host): it stays held, its reason shown by `status`, until the cluster
    is scaled down or deleted."""
    return (status == JobStatus.HELD and hold_code == HOLD_CODE_JOB_POLICY
            and hold_subcode == HOLD_SUBCODE_MISSING_PROGRAM)


def kept_hold(status, hold_code, keep_codes: Iterable[int] = ()) -> bool:
    """True for a job held by a person: HoldReasonCode 1 (`condor_hold`) or one of `keep_codes`
    (HOLD_KEEP_CODES). Such a job is never released or replaced and counts as a worker of its cluster."""
    return status == JobStatus.HELD and hold_code is not None and (
        hold_code == HOLD_CODE_USER_REQUEST or hold_code in keep_codes)
