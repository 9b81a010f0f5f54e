"""Installing and running from anywhere.

- `pip install .` gives the `htdask` command (the same click group as `python cli.py`), `--version`.
- The pool's programs installed from a private (0700) checkout run as another Unix user, and the jobs'
  interpreter is one every user can run (CI runs the whole suite from a 0700 clone: .ci/run).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


import pytest

from htdask.demo.services import REPO
from htdask import __version__
from htdask.domain.pyenv import job_python, reachable_by_all, runnable_by_all

IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache",
                                ".localpool", ".demo")


@pytest.mark.slow
def test_pip_install_gives_the_htdask_command(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=IGNORE)  # pip builds in the source tree: not in the checkout
    target = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                          str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    exe = target / "bin" / "htdask"
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([str(exe), "--version"], env=env, cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, f"htdask, version {__version__}"), out.stderr
    out = subprocess.run([str(exe), "status", "--help"], env=env, cwd=str(tmp_path), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--watch" in out.stdout and "Examples:" in out.stdout
    # shell completion, as documented (_HTDASK_COMPLETE)
    out = subprocess.run([str(exe)], env={**env, "_HTDASK_COMPLETE": "bash_source"}, cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "_htdask_completion" in out.stdout, (out.stdout[:300], out.stderr[-500:])
    assert (target / "htdask_localpool" / "bin" / "condor_submit").exists(), "the pool's launchers are package data"
    assert (target / "htdask" / "domain" / "worker_start.sh").exists(), "the worker jobs' start script is package data"


def test_the_jobs_interpreter_is_runnable_by_every_user():
    python, extra = job_python()
    assert runnable_by_all(python), (python, "jobs run as other users; see harness/venv_dir.py")
    site = extra.get("PYTHONPATH")
    assert site is None or reachable_by_all(site)


@pytest.mark.pool
def test_pool_programs_from_a_private_checkout_run_as_another_user(unix_user):
    private = Path(tempfile.mkdtemp())  # 0700, like /root
    public = Path(tempfile.mkdtemp(prefix="htdask-install-"))
    os.chmod(public, 0o1777)
    try:
        shutil.copytree(REPO / "htdask_localpool", private / "checkout" / "htdask_localpool", ignore=IGNORE)
        res = subprocess.run([sys.executable, "-m", "htdask_localpool", "install", str(public / "code"),
                              "--python", job_python()[0]], cwd=str(private / "checkout"), capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        bindir = Path(res.stdout.strip())
        assert bindir == public / "code" / "htdask_localpool" / "bin"
        env = {"PATH": "/usr/bin:/bin", "LOCALPOOL_DIR": str(public / "pool"), "HOME": unix_user.pw_dir}
        out = subprocess.run([str(bindir / "condor_q"), "-json", "-allusers"], env=env, cwd="/",
                             capture_output=True, text=True, timeout=60, user=unix_user.pw_uid,
                             group=unix_user.pw_gid, extra_groups=[])
        assert out.returncode == 0, out.stderr
        # the source copy is out of the user's reach: the launcher must not have needed it
        assert not os.access(private, os.X_OK) or os.geteuid() == 0
    finally:
        subprocess.run([sys.executable, "-m", "htdask_localpool", "stop"], cwd=str(REPO), timeout=60,
                       env={**os.environ, "LOCALPOOL_DIR": str(public / "pool")}, capture_output=True)
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(public, ignore_errors=True)


def pins(path: Path) -> list[str]:
    """The requirement lines of a requirements file (comments and `-r` includes left out)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return sorted(line for line in lines if line and not line.startswith("-"))


def test_the_package_depends_on_requirements_txt_which_is_the_runtime():
    import tomllib
    with open(REPO / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    assert sorted(deps) == pins(REPO / "requirements.txt")


def test_the_image_installs_the_runtime_and_make_test_the_tests_packages_too():
    """The production image gets no test or benchmark tool (it installs the wheel, whose dependencies are
    pyproject's, the same as requirements.txt); `make test` (its venv) gets both files."""
    runtime = {re.split(r"[<>=\[ ]", p, 1)[0].lower() for p in pins(REPO / "requirements.txt")}
    dev_text = (REPO / "requirements-dev.txt").read_text()
    dev = {re.split(r"[<>=\[ ]", p, 1)[0].lower() for p in pins(REPO / "requirements-dev.txt")}
    assert {"pytest", "py-spy", "kmock", "fakeredis", "pytest-asyncio", "kubernetes_asyncio"} <= dev
    assert not runtime & {"pytest", "pytest-timeout", "py-spy", "kmock", "fakeredis", "pytest-asyncio",
                          "kubernetes_asyncio"}
    assert "-r requirements.txt" in dev_text.splitlines()
    installs = [ln for ln in (REPO / "Dockerfile").read_text().splitlines() if "pip install" in ln]
    assert installs and all("requirements-dev" not in ln for ln in installs), installs
    assert any(".whl" in ln for ln in installs), installs  # the wheel: its dependencies are pyproject's
    make = (REPO / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\): (.*)$", make, re.M)[1].split()
    assert {"requirements.txt", "requirements-dev.txt"} <= set(stamp)
    assert "pip install -q -r requirements-dev.txt" in make


def test_gitignore_ignores_the_venv_link():
    """`make venv` may make .venv a symbolic link (harness/venv_dir.py): `.venv/` would match only a directory."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "check-ignore", "-q", "--no-index", ".venv"], cwd=str(REPO))
    assert out.returncode == 0, ".venv (a link or a directory) is not ignored by .gitignore"


def test_make_venv_gives_the_htdask_command_of_the_checkout(tmp_path):
    """The README's one form, `htdask`, after `make venv` and `. .venv/bin/activate`: harness/htdask in the
    virtualenv's bin runs the checkout of the current directory, with that virtualenv's python."""
    make = (REPO / "Makefile").read_text()
    assert "test -e $(VENV)/bin/htdask || install -m 0755 harness/htdask $(VENV)/bin/htdask" in make
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')  # the virtualenv's python
    (bindir / "python").chmod(0o755)
    shutil.copy(REPO / "harness" / "htdask", bindir / "htdask")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    out = subprocess.run(["htdask", "--version"], cwd=str(REPO), env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and __version__ in out.stdout, out
    out = subprocess.run(["htdask", "status", "--help"], cwd=str(REPO), env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("Usage: htdask status"), out
    installed = subprocess.run([sys.executable, "-c", "import htdask"], cwd=str(tmp_path), env=env,
                               capture_output=True).returncode == 0
    if installed:  # pip installed htdask into this venv: it runs anywhere, as it should
        return
    elsewhere = subprocess.run(["htdask", "--version"], cwd=str(tmp_path), env=env, capture_output=True,
                               text=True, timeout=60)
    assert elsewhere.returncode == 1 and elsewhere.stderr.strip().splitlines() == [
        "error: htdask: no htdask checkout here: run it at the top of one, or pip install . first"], elsewhere
