"""Print where `make` keeps the virtualenv: `.venv`, or a directory every Unix user can reach.

Jobs and run-as-user commands run as other users and need this venv's interpreter and packages.
In a checkout they can enter (or when not root: jobs then run as ourselves) the venv is `.venv`.
A clone in a private directory (e.g. under /root, mode 0700) gets its venv under
/var/lib/htdask/venv-<hash of requirements*.txt and Python version>, shared by clones with the same
requirements, and `make` links `.venv` to it. Stdlib only (runs before the venv exists).

    python3 harness/venv_dir.py [CHECKOUT]
"""
from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path

SHARED = Path("/var/lib/htdask")


def enterable_by_all(path: Path) -> bool:
    """o+x on `path` and every directory above it (literal and real path)."""
    for p in {path.absolute(), path.resolve()}:
        for d in [p, *p.parents]:
            try:
                if not d.stat().st_mode & stat.S_IXOTH:
                    return False
            except OSError:
                return False
    return True


def venv_dir(checkout: Path) -> str:
    if os.geteuid() != 0 or enterable_by_all(checkout):
        return ".venv"
    digest = hashlib.sha256()
    for name in ("requirements.txt", "requirements-dev.txt"):
        path = checkout / name
        digest.update(path.read_bytes() if path.exists() else b"")
    digest.update(sys.version.encode())
    return str(SHARED / f"venv-{digest.hexdigest()[:12]}")


if __name__ == "__main__":
    print(venv_dir(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
