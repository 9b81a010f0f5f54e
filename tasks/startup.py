"""Start-up checks of a Celery worker: an unusable setup stops it at once with one line naming the setting.

Without them such a worker accepts requests and fails every one of them, visible only in `status`.
Checked when a worker starts (celery's `worker_init`), not when a client imports the app:

- running as root, the worker needs `DEFAULT_OWNER` (jobs never run as root; clusters without an owner
  run as DEFAULT_OWNER), and that account must be one we may submit as (`workers.runas.check_user`);
- with `CONDOR_BACKEND=cli` (the default), `condor_submit`, `condor_q` and `condor_rm` must be found
  (CONDOR_BIN_DIR, else PATH).

Root on purpose: a submit-node worker runs as root (docs/deploy.md) to become each cluster's owner for
`condor_submit`/`condor_rm`. Celery's `check_privileges` warns about that on every start (a SecurityWarning
advising `--uid`, which would break submitting as the owners); that one warning is filtered here (celery's
`celeryd_init`, sent just before the check) and the worker logs instead one INFO line saying why it runs as
root. Celery's refusal to run as root with pickle accepted is untouched (our tasks accept JSON only).
"""
from __future__ import annotations

import logging
import os
import sys
import warnings

from celery.exceptions import SecurityWarning
from celery.signals import celeryd_after_setup, celeryd_init, worker_init

log = logging.getLogger(__name__)
#: the start of celery.platforms.ROOT_DISCOURAGED, the warning a worker running as root gets
ROOT_WARNING = r"You're running the worker with superuser privileges"
ROOT_LINE = ("running as root on purpose: the worker becomes each cluster's owner to run condor_submit and "
             "condor_rm (docs/deploy.md); jobs run as their owners, never as root")

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


@celeryd_init.connect
def _root_on_purpose(**_):
    """Filter celery's root SecurityWarning (its check runs right after this signal), only that one."""
    if os.geteuid() == 0:
        warnings.filterwarnings("ignore", message=ROOT_WARNING, category=SecurityWarning)


@celeryd_after_setup.connect
def _say_why_root(**_):
    if os.geteuid() == 0:
        log.info(ROOT_LINE)
