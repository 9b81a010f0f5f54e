"""The layers of docs/design.md, checked on the source: every import of every shipped module (module
level or inside a function, parsed with ast, nothing imported) must be allowed by `ALLOWED`, no
shipped module may import test tooling, and the import graph of shipped modules has no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: the installed top-level names (pyproject.toml finds the packages; tests/test_wheel.py checks the wheel)
TOP = ("tasks", "workers", "cli", "beat_schedule", "htdask", "htdask_localpool")
#: the layers inside htdask/: htdask.<name>; htdask's own modules (main, commands, ...) are the CLI, "htdask"
SUBLAYERS = ("settings", "domain", "state", "gateway", "k8s_operator", "exporter", "demo")
#: layer -> the layers (or, for workers/, the modules) it may import.
#: Arrows point down: an entry point enqueues through tasks/, tasks/ call workers/, everyone may use
#: htdask.domain (pure values and rules) and htdask.state (the Redis keys); htdask_localpool stands apart. Of
#: workers/, entry points use only the owner checks at their boundary (identity, and runas' user policy).
OWNER_CHECKS = {"workers.identity", "workers.runas"}
DOMAIN, STATE = "htdask.domain", "htdask.state"
ALLOWED: dict[str, set[str]] = {
    "htdask.settings": set(),  # the settings model: the bottom layer, every layer may import it
    DOMAIN: set(),
    STATE: {DOMAIN},
    "workers": {DOMAIN, STATE},
    "tasks": {"workers", DOMAIN, STATE, "beat_schedule"},
    "beat_schedule": {"tasks"},
    "htdask.gateway": {"tasks", DOMAIN, STATE, *OWNER_CHECKS},
    "htdask.k8s_operator": {"tasks", DOMAIN, STATE, *OWNER_CHECKS},
    "htdask.exporter": {"tasks", DOMAIN, STATE},
    "htdask": {"tasks", DOMAIN, STATE, *OWNER_CHECKS, "htdask.k8s_operator", "htdask.exporter", "htdask.demo"},
    "cli": {"htdask"},
    "htdask_localpool": set(),
    "htdask.demo": {"htdask", "htdask.gateway", "htdask.k8s_operator", "tasks", "workers", DOMAIN, STATE,
                    "htdask_localpool"},
}
#: inside workers/: the HTCondor adapter knows nothing of identity (and nothing above it)
ALLOWED_INSIDE = {
    "workers.htcondor": {"workers.htcondor", "workers.runas", DOMAIN},
    "workers.identity": {"workers.identity", "workers.runas", DOMAIN, STATE},
}
NEVER = ("harness", "tests", "bench")


def _layer(name: str) -> str:
    """htdask.<one of SUBLAYERS>[...] -> that; anything else -> its top-level name (htdask: the CLI)."""
    parts = name.split(".")
    if parts[0] == "htdask" and len(parts) > 1 and parts[1] in SUBLAYERS:
        return f"htdask.{parts[1]}"
    return parts[0]


def _modules() -> dict[str, Path]:
    found = {}
    for top in TOP:
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
    if _layer(imported) == "htdask.settings":
        return True

    def among(may: set[str]) -> bool:  # a layer by its name, a module of workers/ and what is under it
        return any(_layer(imported) == m if m in ALLOWED else imported == m or imported.startswith(m + ".")
                   for m in may)

    for inner, may in ALLOWED_INSIDE.items():
        if importer == inner or importer.startswith(inner + "."):
            return among(may)
    if _layer(importer) == _layer(imported):
        return True
    return among(ALLOWED[_layer(importer)])


def test_every_shipped_package_is_found():
    assert {"htdask.domain.validation", "workers.htcondor.schedd", "htdask.gateway.backend", "tasks.api", "cli",
            "htdask.main", "htdask_localpool.commands.submit"} <= set(MODULES)


def test_every_package_under_htdask_is_a_layer():
    """A new directory under htdask/ gets its place in the layers here (and in docs/design.md) first."""
    dirs = {p.name for p in (REPO / "htdask").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert dirs == set(SUBLAYERS), sorted(dirs ^ set(SUBLAYERS))
    assert set(ALLOWED) == {_layer(m) for m in MODULES}


def test_the_htdask_package_itself_imports_nothing_of_ours():
    """Importing any htdask.<layer> runs htdask/__init__.py: it must not pull the CLI (or anything) in."""
    assert GRAPH["htdask"] == set()


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
    assert not _allowed("htdask.domain.validation", "htdask.state")
    assert not _allowed("htdask.gateway.backend", "workers.htcondor.cli")
    assert not _allowed("workers.htcondor.cli", "workers.identity")
    assert not _allowed("tasks.api", "harness.venv_dir")
    assert not _allowed("htdask.state.store", "htdask.main"), "the CLI is a layer of its own inside htdask/"
    assert not _allowed("htdask.exporter.server", "htdask.demo.services")
    assert not _allowed("htdask.gateway.backend", "htdask_localpool.store")
    assert _allowed("htdask.gateway.backend", "tasks.api") and _allowed("tasks.poll", "workers.htcondor.schedd")
    assert _allowed("htdask.main", "htdask.commands") and _allowed("htdask.demo.run", "htdask.main")
    assert _allowed("tasks.api", "htdask.settings") and _allowed("workers.runas", "htdask.domain.validation")
    f = tmp_path / "x.py"
    f.write_text("from htdask.domain import validation\nimport tasks.api\nfrom htdask import state\n"
                 "def f():\n    from harness import venv_dir\n")
    assert {"htdask.domain.validation", "tasks.api", "htdask.state", "harness"} <= _imports("htdask.domain.x", f)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_are_small(name):
    """DEVELOPERS.md: small modules (<= 400 lines)."""
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= 400, f"{MODULES[name].relative_to(REPO)} has {lines} lines"
