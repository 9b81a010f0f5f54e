"""Paths that the jobs' Unix users can reach: an interpreter with our packages, shared copies of files.

Jobs and run-as-user commands run as other (unprivileged) users. A checkout often lives in a private
directory (`/root/...`, mode 0700) that they cannot enter, so nothing they run may point into it:

- `job_python()` is an interpreter with this environment's packages that every user can run: the
  virtualenv's own interpreter when its directory is reachable (through its real path when `.venv` is a
  symlink, as `make` creates for a private checkout), else a system CPython of the same minor version
  with the venv's site-packages on PYTHONPATH (compiled extensions are built per minor version);
- `shared_copy(path)` copies a file of the checkout (a scheduler preload, a job's executable) into a
  private-to-this-process directory of mode 0755 under the temp directory, when the file itself is
  not reachable.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import stat
import sys
import sysconfig
import tempfile
from pathlib import Path


def reachable_by_all(path: str | os.PathLike, *, execute: bool = False) -> bool:
    """True when any user may reach `path` (o+x on every directory above it, on its literal path
    and on its real path) and read it (o+r; o+x too when `execute`)."""
    need = stat.S_IROTH | (stat.S_IXOTH if execute else 0)
    literal = Path(os.path.abspath(path))
    real = Path(os.path.realpath(path))
    try:
        mode = real.stat().st_mode
        if stat.S_ISREG(mode) and (mode & need) != need:
            return False
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
        for parent in list(literal.parents) + list(real.parents):
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


def runnable_by_all(path: str | os.PathLike) -> bool:
    """True when any user may execute the file `path`."""
    return os.path.isfile(path) and reachable_by_all(path, execute=True)


@functools.lru_cache(maxsize=1)
def job_python() -> tuple[str, dict[str, str]]:
    """(interpreter, extra environment) for programs that run as the jobs' users.

    Falls back to sys.executable (right when jobs run as this process's own user)."""
    real_site = os.path.realpath(sysconfig.get_paths()["purelib"])
    venv_python = os.path.join(os.path.realpath(sys.prefix), "bin", os.path.basename(sys.executable))
    if reachable_by_all(real_site):
        for cand in (sys.executable, venv_python):
            if runnable_by_all(cand):
                return cand, {}
        minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        for cand in (f"/usr/bin/{minor}", f"/usr/local/bin/{minor}", shutil.which(minor)):
            if cand and runnable_by_all(cand):
                return cand, {"PYTHONPATH": real_site}
    return sys.executable, {}


@functools.lru_cache(maxsize=1)
def _shared_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="htdask-shared-"))
    os.chmod(d, 0o755)
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def shared_copy(path: str | os.PathLike) -> str:
    """`path` itself when every user can read it, else a copy (mode 0755) every user can read."""
    if reachable_by_all(path):
        return str(path)
    src = Path(path)
    dest = _shared_dir() / src.name
    if not dest.exists():
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o755)
    return str(dest)
