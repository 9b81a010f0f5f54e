"""HTCondor JobStatus codes, named once so nobody compares against bare integers."""
from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)


class JobStatus(enum.IntEnum):
    """The job ClassAd's JobStatus (docs/codes-other-values/job-status-codes.rst)."""

    IDLE = 1
    RUNNING = 2
    REMOVED = 3
    COMPLETED = 4
    HELD = 5
    TRANSFERRING_OUTPUT = 6
    SUSPENDED = 7


#: condor_q's one-letter status column, for compact displays.
LETTERS = {
    JobStatus.IDLE: "I",
    JobStatus.RUNNING: "R",
    JobStatus.REMOVED: "X",
    JobStatus.COMPLETED: "C",
    JobStatus.HELD: "H",
    JobStatus.TRANSFERRING_OUTPUT: ">",
    JobStatus.SUSPENDED: "S",
}

#: HoldReasonCode of a job that exceeded its memory request (the common hold, see user-needs.md).
HOLD_CODE_USER_REQUEST = 1
HOLD_CODE_OUT_OF_RESOURCES = 34
