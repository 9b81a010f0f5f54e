"""The `dask` commands the gateway's schedulers and workers run, on an interpreter every user can run.

Jobs run as unprivileged users; `htdask.domain.pyenv.job_python` picks an interpreter they can reach (the
venv's own, through its real path, or a system CPython of the same minor version with the venv's
packages on PYTHONPATH).
"""
from __future__ import annotations

from pathlib import Path

from htdask.domain.pyenv import job_python, runnable_by_all, shared_copy  # noqa: F401 (re-exported)


def dask_command(sub: str) -> list[str]:
    """`dask <sub>` (distributed 2026 has no dask-scheduler / dask-worker programs), as a list."""
    python, extra = job_python()
    exe = Path(python).parent / "dask"
    if not extra and runnable_by_all(exe):
        return [str(exe), sub]
    return [python, "-m", "dask", sub]


def job_environment() -> dict[str, str]:
    """Variables the commands of `dask_command` need (PYTHONPATH with the fallback interpreter)."""
    return dict(job_python()[1])
