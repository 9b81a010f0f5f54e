"""Start-up checks of a Celery worker: an unusable setup stops it at once with one line naming the setting.

Without them such a worker accepts requests and fails every one of them, visible only in `status`.
Checked when a worker starts (celery's `worker_init`), not when a client imports the app:

- running as root, the worker needs `DEFAULT_OWNER` (jobs never run as root; clusters without an owner
  run as DEFAULT_OWNER), and that account must be one we may submit as (`workers.runas.check_user`);
- with `CONDOR_BACKEND=cli` (the default), `condor_submit`, `condor_q` and `condor_rm` must be found
  (CONDOR_BIN_DIR, else PATH).
"""
from __future__ import annotations

import os
import sys

from celery.signals import worker_init

PROGRAMS = ("condor_submit", "condor_q", "condor_rm")


class StartupError(Exception):
    """A setting that makes the worker unusable; the message names it."""


def check_worker() -> None:
    """Raise StartupError for the first unusable setting of a submit-node worker."""
    from workers.htcondor.cli import find_program
    from workers.runas import check_user
    from workers.htcondor.schedd import ScheddError
    from htdask.domain.validation import ValidationError
    from htdask.settings import freeze
    s = freeze()  # a worker's environment does not change after start: read it once
    owner = (s.default_owner or "").strip()
    if owner:
        try:
            check_user(owner)
        except ValidationError as e:
            raise StartupError(f"DEFAULT_OWNER: {e}") from None
    elif os.geteuid() == 0:
        raise StartupError("DEFAULT_OWNER is unset and the worker runs as root: jobs never run as root, so "
                           "set DEFAULT_OWNER to the unprivileged Unix user that clusters without an owner "
                           "run as")
    if s.condor_backend == "cli":
        for name in PROGRAMS:
            try:
                find_program(name, s)
            except ScheddError as e:
                raise StartupError(str(e)) from None


@worker_init.connect
def _check_on_start(**_):
    try:
        check_worker()
    except StartupError as e:
        print(f"htdask worker: refusing to start: {e}", file=sys.stderr, flush=True)
        os._exit(2)  # before the worker forks its pool: nothing to clean up, no traceback
