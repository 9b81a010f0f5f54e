"""A Python that the jobs' Unix accounts can run, and the `dask` commands built on it.

Jobs run as unprivileged users. When the gateway's virtualenv interpreter is not reachable by them
(e.g. a pyenv Python under a 0700 /root), a system CPython of the same minor version runs the
venv's packages through PYTHONPATH (the compiled extensions are built for that minor version),
the way the local pool's launchers do.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
import sysconfig
from pathlib import Path


def runnable_by_all(path: str | os.PathLike) -> bool:
    """True when any user may execute `path` (o+x on the file and on every directory above it)."""
    real = Path(os.path.realpath(path))
    try:
        if not real.is_file() or not real.stat().st_mode & 0o001:
            return False
        for parent in real.parents:
            if not parent.stat().st_mode & 0o001:
                return False
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def job_python() -> tuple[str, dict[str, str]]:
    """(interpreter, extra environment) for programs that run as the jobs' users."""
    if runnable_by_all(sys.executable):
        return sys.executable, {}
    minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for cand in (f"/usr/bin/{minor}", f"/usr/local/bin/{minor}", shutil.which(minor)):
        if cand and os.path.realpath(cand) != os.path.realpath(sys.executable) and runnable_by_all(cand):
            site = sysconfig.get_paths()["purelib"]
            return cand, {"PYTHONPATH": site}
    return sys.executable, {}  # nothing better: works when jobs run as the gateway's own user


def dask_command(sub: str) -> list[str]:
    """`dask <sub>` (distributed 2026 has no dask-scheduler / dask-worker programs), as a list."""
    python, extra = job_python()
    exe = Path(sys.executable).parent / "dask"
    if python == sys.executable and exe.exists():
        return [str(exe), sub]
    return [python, "-m", "dask", sub]


def job_environment() -> dict[str, str]:
    """Variables the commands of `dask_command` need (PYTHONPATH with the fallback interpreter)."""
    return dict(job_python()[1])
