"""Who a condor_* command may run as, and how to switch to that user.

Jobs must be owned by the person whose cluster they serve (so the schedd enforces ownership, quotas
and accounting), so the controller runs condor_submit/condor_rm as that Unix user.  That requires
root, and it must never hand root or a system account to anything: root, uids below MIN_SUBMIT_UID
(default 1000), users in DENY_USERS and unknown users are refused before any command runs.
"""
from __future__ import annotations

import logging
import os
import pwd
from dataclasses import dataclass

from htdask.settings import Settings, load
from htdask.domain.validation import ValidationError, validate_unix_user_name

log = logging.getLogger(__name__)


class UserRefused(ValidationError):
    """We will not run a command as this user (root, system account, denied, unknown, or no root)."""

    def __init__(self, user: object, reason: str):
        super().__init__("submit user", user, reason)


@dataclass(frozen=True)
class RunAs:
    """A checked target user: what subprocess.Popen needs to become them."""

    name: str
    uid: int
    gid: int
    home: str
    switch: bool  # False: the current process already is this user

    def popen_kwargs(self) -> dict:
        """Keyword arguments for subprocess.Popen (user/group/extra_groups when switching)."""
        if not self.switch:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for the command: `base` (default os.environ) with HOME/USER/LOGNAME."""
        env = dict(os.environ if base is None else base)
        if self.switch:
            env.update(HOME=self.home, USER=self.name, LOGNAME=self.name)
        return env

    def cwd(self) -> str | None:
        """A working directory the user can enter: their home if it exists, else /; None = ours."""
        if not self.switch:
            return None
        return self.home if os.path.isdir(self.home) else "/"


def min_submit_uid(settings: Settings | None = None) -> int:
    """MIN_SUBMIT_UID, at least 1: root is never allowed, whatever the setting (htdask/settings/model.py)."""
    return (settings or load()).min_submit_uid


#: the kernel's overflow uid: `nobody`, shared by unrelated daemons, so its jobs would belong to no one
OVERFLOW_UID = 65534


def deny_users(settings: Settings | None = None) -> set[str]:
    """DENY_USERS (comma separated) plus root and nobody, always."""
    return {*(settings or load()).deny_users, "root", "nobody"}


def check_user(user: object) -> pwd.struct_passwd:
    """The passwd entry of a user we may submit as, or UserRefused saying why not."""
    try:
        name = validate_unix_user_name(user, "submit user")
    except ValidationError as e:
        raise UserRefused(user, e.reason) from None
    if name in deny_users():
        raise UserRefused(user, "is in the deny list (DENY_USERS, root, nobody)")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UserRefused(user, "no such Unix user") from None
    if entry.pw_uid == 0:
        raise UserRefused(user, "has uid 0 (root)")
    if entry.pw_uid == OVERFLOW_UID:
        raise UserRefused(user, f"has the overflow uid {OVERFLOW_UID} (nobody)")
    floor = min_submit_uid()
    if entry.pw_uid < floor:
        raise UserRefused(user, f"uid {entry.pw_uid} is below MIN_SUBMIT_UID {floor} (a system account)")
    return entry


def resolve(user: str | None) -> RunAs | None:
    """How to run a command as `user`: None = as ourselves; raises UserRefused before anything runs."""
    if user is None:
        return None
    entry = check_user(user)
    euid = os.geteuid()
    if euid == entry.pw_uid:
        return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, switch=False)
    if euid != 0:
        raise UserRefused(user, f"cannot switch to user {entry.pw_name} without root")
    log.debug("will run as %s (uid %d)", entry.pw_name, entry.pw_uid)
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, switch=True)
