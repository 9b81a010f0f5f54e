"""Every file of ours that a comment, docstring or document cites exists (issue 24: "no comment citing a file
that does not exist").

A cited path is a word like ``tasks/removal.py`` or ``commands/act.py``: it must exist relative to the checkout,
to the citing file's directory or to one of that directory's parents (a package citing its own modules).
Paths that start with a directory we do not have are someone else's (``dask_gateway_server/...``) and are
not checked; upstream files that share a directory name with ours are listed in UPSTREAM.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOP = ("tasks", "workers", "htdask", "htdask_localpool", "tests", "bench", "deploy", "docs", "compose",
       "harness", "commands", "domain", "state", "settings", "gateway", "exporter", "k8s_operator", "demo")
# dask-gateway's own test modules, cited where tests/test_gateway_conformance.py translates them.
UPSTREAM = {"tests/test_db_backend.py", "tests/test_local_backend.py", "tests/test_client.py"}
CITED = re.compile(r"(?<![\w./-])((?:[A-Za-z_][\w.-]*/)+[\w.-]+\.(?:py|md|sh|ya?ml|json|toml|ini|lua|txt))\b")
TEXT = (".py", ".md", ".sh", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".txt")

pytestmark = pytest.mark.unit


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    here = Path(__file__).resolve()  # its own examples are made up
    return [REPO / f for f in out.stdout.split() if f.endswith(TEXT) and REPO / f != here]


def missing_citations(files: list[Path], root: Path) -> list[str]:
    """``["file:line: path", ...]`` for every cited path of ours that exists nowhere it could mean."""
    bad = []
    for f in files:
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            for cited in CITED.findall(line):
                if cited.split("/")[0] not in TOP or cited in UPSTREAM:
                    continue
                bases = [root, *[p for p in f.parents if root in p.parents or p == root]]
                if not any((b / cited).exists() for b in bases):
                    bad.append(f"{f.relative_to(root)}:{n}: {cited}")
    return bad


def test_every_cited_file_of_ours_exists():
    assert missing_citations(tracked_files(), REPO) == []


def test_the_check_sees_a_dangling_citation(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "real.py").write_text("")
    doc = tmp_path / "tasks" / "a.py"
    doc.write_text('"""Moved from tasks/real.py; see tasks/gone.py and dask_gateway_server/x.py."""\n')
    assert missing_citations([doc], tmp_path) == ["tasks/a.py:1: tasks/gone.py"]
