"""Unix accounts for jobs: the controller never submits as root, so demos and tests need one."""
from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import subprocess


def ensure_user(name: str, *, home: bool = False) -> bool:
    """Create the unprivileged account `name` (uid >= 1000) unless it exists; True if created."""
    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        pass
    subprocess.run(["useradd", "-m" if home else "-M", "-s", "/usr/sbin/nologin", name], check=True,
                   capture_output=True, timeout=60)
    return True


def delete_user(name: str) -> None:
    subprocess.run(["userdel", "--remove", name], capture_output=True, timeout=60)


@contextlib.contextmanager
def temporary_user(prefix: str = "htdt", *, home: bool = True):
    """A fresh account for one test (its passwd entry), deleted afterwards; needs root."""
    if os.geteuid() != 0:
        raise PermissionError("creating a Unix user needs root")
    name = prefix + secrets.token_hex(3)
    ensure_user(name, home=home)
    try:
        entry = pwd.getpwnam(name)
        assert entry.pw_uid >= 1000, entry
        yield entry
    finally:
        delete_user(name)
