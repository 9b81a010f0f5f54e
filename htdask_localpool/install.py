"""Install the pool's programs where every Unix user can run them.

The condor_* programs run as the jobs' owners (the controller switches to them), who often cannot
enter the checkout (a clone under /root is mode 0700). `install(dest)` copies the `htdask_localpool`
package into `dest/htdask_localpool/` (directories 0755, files 0644, bytecode compiled) and writes
`dest/htdask_localpool/bin/condor_*` launchers whose first line names `python` (an interpreter with
classad2 that every user can run). Stdlib only.

    python -m htdask_localpool install DIR [--python PATH]    # prints DIR/htdask_localpool/bin: put it on PATH
"""
from __future__ import annotations

import compileall
import os
import shutil
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
PROGRAMS = ("condor_submit", "condor_q", "condor_rm", "condor_hold", "condor_release", "condor_history",
            "condor_suspend", "condor_continue")


def install(dest: str | os.PathLike, python: str | None = None) -> Path:
    """Copy the package under `dest` (created 0755) and return its bin directory."""
    dest = Path(dest).absolute()
    target = dest / "htdask_localpool"
    for d in (dest, target):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
    shutil.copytree(PACKAGE, target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "bin", "README.md"))
    bindir = target / "bin"
    bindir.mkdir(exist_ok=True)
    python = python or sys.executable
    for name in PROGRAMS:
        body = (PACKAGE / "bin" / name).read_text().split("\n", 1)[1]  # without its #! line
        path = bindir / name
        path.write_text(f"#!{python}\n{body}")
    compileall.compile_dir(str(target), quiet=1)
    for root, dirs, files in os.walk(target):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o755 if Path(root) == bindir else 0o644)
    return bindir
