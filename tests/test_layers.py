"""The layers of docs/design.md, checked on the source: every import of every shipped module (module
level or inside a function, parsed with ast, nothing imported) must be allowed by `ALLOWED`, no
shipped module may import test tooling, and the import graph of shipped modules has no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: shipped top-level packages and modules (pyproject.toml) -> the project layers each may import.
#: Arrows point down: an entry point enqueues through tasks/, tasks/ call workers/, everyone may use
#: htdask/domain/ (pure values and rules) and htdask/state/ (the Redis keys); htdask_localpool/ stands apart. Of workers/,
#: entry points use only the owner checks at their boundary (identity, and runas' user policy).
OWNER_CHECKS = {"workers.identity", "workers.runas"}
ALLOWED: dict[str, set[str]] = {
    "settings": set(),  # the settings model: the bottom layer, every layer may import it
    "domain": set(),
    "state": {"domain"},
    "workers": {"domain", "state"},
    "tasks": {"workers", "domain", "state", "beat_schedule"},
    "beat_schedule": {"tasks"},
    "gateway": {"tasks", "domain", "state", *OWNER_CHECKS},
    "k8s_operator": {"tasks", "domain", "state", *OWNER_CHECKS},
    "exporter": {"tasks", "domain", "state"},
    "htdask": {"tasks", "domain", "state", *OWNER_CHECKS, "k8s_operator", "exporter", "demo"},  # its commands
    "cli": {"htdask"},
    "htdask_localpool": set(),
    "demo": {"htdask", "gateway", "k8s_operator", "tasks", "workers", "domain", "state", "htdask_localpool"},
}
#: inside workers/: the HTCondor adapter knows nothing of identity (and nothing above it)
ALLOWED_INSIDE = {
    "workers.htcondor": {"workers.htcondor", "workers.runas", "domain"},
    "workers.identity": {"workers.identity", "workers.runas", "domain", "state"},
}
NEVER = ("harness", "tests", "bench")


def _modules() -> dict[str, Path]:
    found = {}
    for top in ALLOWED:
        path = REPO / top
        files = sorted(path.rglob("*.py")) if path.is_dir() else [REPO / f"{top}.py"]
        for f in files:
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = f
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The modules `name` imports: `from a import b` counts as a.b when that is a module, else a."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in MODULES else base)
    return out


GRAPH = {name: {m for m in _imports(name, path) if m in MODULES or m.split(".")[0] in NEVER}
         for name, path in MODULES.items()}


def _top(name: str) -> str:
    return name.split(".")[0]


def _allowed(importer: str, imported: str) -> bool:
    if _top(imported) in NEVER:
        return False
    if _top(imported) == "settings":
        return True
    for inner, may in ALLOWED_INSIDE.items():
        if importer == inner or importer.startswith(inner + "."):
            return any(imported == m or imported.startswith(m + ".") for m in may)
    if _top(importer) == _top(imported):
        return True
    return any(imported == m or imported.startswith(m + ".") for m in ALLOWED[_top(importer)])


def test_every_shipped_package_is_found():
    assert {"htdask.domain.validation", "workers.htcondor.schedd", "htdask.gateway.backend", "tasks.api", "cli"} <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_follow_the_layers(name):
    bad = sorted(m for m in GRAPH[name] if not _allowed(name, m))
    assert not bad, f"{name} may not import {bad} (docs/design.md, layers)"


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt in GRAPH and not state.get(nxt):
                visit(nxt)
        path.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if not state.get(name):
            visit(name)


def test_the_checker_sees_a_violation_and_a_cycle(tmp_path):
    """The rules above can fail: a forbidden import and a two-module cycle are reported."""
    assert not _allowed("htdask.domain.validation", "state")
    assert not _allowed("htdask.gateway.backend", "workers.htcondor.cli")
    assert not _allowed("workers.htcondor.cli", "workers.identity")
    assert not _allowed("tasks.api", "harness.venv_dir")
    assert _allowed("htdask.gateway.backend", "tasks.api") and _allowed("tasks.poll", "workers.htcondor.schedd")
    f = tmp_path / "x.py"
    f.write_text("from htdask.domain import validation\nimport tasks.api\ndef f():\n    from harness import venv_dir\n")
    assert {"htdask.domain.validation", "tasks.api", "harness"} <= _imports("domain.x", f)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_are_small(name):
    """DEVELOPERS.md: small modules (<= 400 lines)."""
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= 400, f"{MODULES[name].relative_to(REPO)} has {lines} lines"
