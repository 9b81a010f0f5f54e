"""Where a pool keeps its state, and how shared files are created.

The pool is used by several Unix users at once (root's runner, commands run as the
job owners), so the directory is world-writable with the sticky bit and every shared
file is created 0666 whatever the caller's umask.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
from pathlib import Path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
ROOT_DEFAULT_DIR = "/var/tmp/localpool-root"


def pool_dir() -> Path:
    """``$LOCALPOOL_DIR``, else ~/.localpool (home from the passwd entry), root: /var/tmp/localpool-root."""
    env = os.environ.get("LOCALPOOL_DIR")
    if env:
        return Path(env).expanduser().absolute()
    if os.geteuid() == 0:
        return Path(ROOT_DEFAULT_DIR)
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        home = os.path.expanduser("~")
    return Path(home) / ".localpool"


@contextlib.contextmanager
def open_umask(mask: int = 0):
    """Temporarily set the process umask (the programs are single-threaded)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def ensure_dir(path: Path, mode: int = 0o1777) -> Path:
    """Create ``path`` (and parents) if missing; a directory we create gets ``mode`` exactly."""
    if path.is_dir():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return path
    os.chmod(path, mode)
    return path


def ensure_pool_dir() -> Path:
    d = ensure_dir(pool_dir())
    return d


def open_shared(path: Path, flags: int) -> int:
    """os.open with O_CREAT and mode 0666 regardless of umask; returns the fd."""
    with open_umask(0):
        return os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, 0o666)


def touch_shared(path: Path) -> None:
    if not path.exists():
        os.close(open_shared(path, os.O_RDWR))


def hostname() -> str:
    return socket.gethostname()


def current_user() -> str:
    """The Unix user running this process (HTCondor's Owner)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def is_root() -> bool:
    return os.geteuid() == 0


class PoolFiles:
    """The names of the files inside one pool directory."""

    def __init__(self, root: Path | None = None):
        self.root = root or pool_dir()
        self.db = self.root / "pool.db"
        self.calls = self.root / "calls.log"
        self.pidfile = self.root / "runner.pid"
        self.runner_lock = self.root / "runner.lock"
        self.start_lock = self.root / "start.lock"
        self.wake = self.root / "wake.fifo"
        self.runner_log = self.root / "runner.log"
        self.scratch = self.root / "scratch"
