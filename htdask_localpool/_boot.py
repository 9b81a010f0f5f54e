"""Interpreter bootstrap for the launchers: make classad2 importable.

The launchers run under whatever python3 is first on PATH (possibly as another Unix
user).  If that interpreter lacks classad2, re-exec with the repository's
.venv/bin/python when this user may run it; otherwise (e.g. the venv's interpreter
lives under an unreadable /root) fall back to adding the venv's site-packages to
sys.path -- classad2 is an abi3 extension, so any CPython 3 of the same minor can load it.
Stdlib only.
"""
from __future__ import annotations

import glob
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FLAG = "_LOCALPOOL_REEXEC"


def ensure_classad2() -> bool:
    try:
        import classad2  # noqa: F401
        return True
    except ImportError:
        pass
    venv_py = os.path.join(REPO_ROOT, ".venv", "bin", "python")
    if os.environ.get(_FLAG) != "1" and os.access(venv_py, os.X_OK):
        os.environ[_FLAG] = "1"
        try:
            os.execv(venv_py, [venv_py] + sys.argv)
        except OSError:
            pass
    ver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for sp in glob.glob(os.path.join(REPO_ROOT, ".venv", "lib", ver, "site-packages")):
        if sp not in sys.path:
            sys.path.append(sp)
    try:
        import classad2  # noqa: F401
        return True
    except ImportError:
        return False
