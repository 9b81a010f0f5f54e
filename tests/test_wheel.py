"""What a site installs is what the tests ran: the wheel, built from the tracked files, installed into a
fresh virtualenv and run from a directory outside the checkout.

- The wheel (`pip wheel --no-deps .` on a copy of the tracked files, as a site builds it) has exactly the
  allowed top-level names (the design card's `tasks`, `workers`, `cli`, `beat_schedule`, plus `htdask` and
  `htdask_localpool`), every tracked module of them and the pool's programs, and its build warns of no
  package left out.
- The virtualenv: `python -m venv --without-pip` (the base interpreter of this environment), the wheel
  installed into it with `pip install --no-deps --no-index`, and its dependencies borrowed from this
  environment without a network install: a `.pth` file in its site-packages runs
  `site.addsitedir(<this environment's site-packages>)`, and the dependencies' programs (`celery`, `dask`,
  `dask-gateway-server`, ...) get launchers in its `bin/` (from their `console_scripts` entry points) so they
  run its interpreter and see the installed `tasks`. Nothing puts the checkout on `sys.path`: no
  PYTHONPATH, the working directory is a fresh one, and the test checks where `htdask` and `tasks` come from.
- In it: every module of the wheel imports; the README quick start's blocks run as written except that
  the installed copy replaces the checkout (`make ...` and `. .venv/bin/activate` become activating this
  venv; `python cli.py` becomes `htdask`), then `htdask logs`, the exporter (`htdask exporter`, /metrics) and
  the installed gateway config (`dask-gateway-server -f .../htdask/gateway/config.py`: a cluster of one
  worker through the Dask Gateway client) against the same local pool.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from htdask.demo.procs import free_port
from htdask.demo.services import REPO, have_redis
from tests.test_readme import _alive, quick_start_blocks

#: the installed top-level names: the design card's four and two of ours (docs/design.md, "What is installed")
TOP_LEVEL = {"tasks", "workers", "cli.py", "beat_schedule.py", "htdask", "htdask_localpool"}
SHIPPED = ["tasks", "workers", "htdask", "htdask_localpool", "cli.py", "beat_schedule.py"]
#: not an importable module: dask-gateway-server's config file (get_config()), run by the quick start below
NOT_IMPORTED = {"htdask.gateway.config"}
CHECKOUT_VARS = ("PYTHONPATH", "VIRTUAL_ENV", "REDIS_URL", "LOCALPOOL_DIR", "DEFAULT_OWNER", "DASK_SCHEDULER_ADDRESS",
                 "SCHEDD_NAME", "SCHEDDS", "CONDOR_BIN_DIR", "LOG_DIR", "PYTHONSTARTUP")


def _tracked() -> list[str]:
    res = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, text=True)
    if res.returncode:
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [p for p in res.stdout.split("\0") if p and (REPO / p).is_file()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel path, pip's output): `pip wheel --no-deps` on a copy of the tracked files."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    for rel in _tracked():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(base / "dist"),
                          str(src)], capture_output=True, text=True, timeout=600, cwd=str(base))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    [wheel] = (base / "dist").glob("htdask-*.whl")
    return wheel, res.stdout + res.stderr


@pytest.fixture(scope="module")
def venv(built):
    """A fresh virtualenv (reachable by every user: jobs run its interpreter) with the wheel installed."""
    wheel, _ = built
    top = Path(tempfile.mkdtemp(prefix="htdask-wheel-"))
    os.chmod(top, 0o755)
    env_dir = top / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
        python = env_dir / "bin" / "python"
        site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        ours = os.path.realpath(sysconfig.get_paths()["purelib"])
        (site / "_htdask_dependencies.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
        res = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=300, cwd=str(top), env=_clean_env())
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        res = subprocess.run([str(python), "-c", LAUNCHERS, str(env_dir / "bin")], capture_output=True, text=True,
                             timeout=120, cwd=str(top), env=_clean_env())
        assert res.returncode == 0, res.stderr
        yield env_dir
    finally:
        shutil.rmtree(top, ignore_errors=True)


#: writes bin/<name> for every console_scripts entry point the venv sees and has no program for (as pip
#: writes them: with the __main__ guard, which a Dask nanny's spawned worker process needs)
LAUNCHERS = r"""
import os, sys
from importlib.metadata import entry_points
bindir = sys.argv[1]
for ep in entry_points(group="console_scripts"):
    path = os.path.join(bindir, ep.name)
    if os.path.exists(path) or "/" in ep.name:
        continue
    top, _, rest = ep.attr.partition(".")
    with open(path, "w") as f:
        f.write(f"#!{sys.executable}\nimport sys\nfrom {ep.module} import {top}\n"
                f"if __name__ == '__main__':\n    sys.exit({top}{'.' + rest if rest else ''}())\n")
    os.chmod(path, 0o755)
"""


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CHECKOUT_VARS}
    return {**env, **extra}


def test_the_wheel_holds_the_allowed_top_level_names_only(built):
    wheel, log = built
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == TOP_LEVEL, f"unexpected: {sorted(tops - TOP_LEVEL)}, missing: {sorted(TOP_LEVEL - tops)}"
    assert not re.search(r"would be ignored|absent from the `packages` configuration", log), \
        "the build left a package out (pyproject.toml, [tool.setuptools.packages.find])"


def test_every_tracked_module_of_the_shipped_packages_is_in_the_wheel(built):
    wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = [p for p in _tracked() if p.split("/")[0] in SHIPPED]
    missing = sorted(p for p in tracked if p.endswith(".py") and p not in names)
    assert not missing, f"tracked modules not in the wheel: {missing}"
    data = ["htdask/demo/fake_dask_worker"] + [p for p in tracked if p.startswith("htdask_localpool/bin/")]
    launchers = {f"condor_{c}" for c in ("submit", "q", "rm", "hold", "release", "history", "suspend", "continue")}
    assert {p.rsplit("/", 1)[1] for p in data} >= launchers and not [p for p in data if p not in names], data
    assert "workers/identity/__init__.py" in names  # the module the hand-written package list left out


def test_every_module_of_the_wheel_imports_from_the_installed_copy(built, venv, tmp_path):
    wheel, _ = built
    modules = sorted({n[:-3].replace("/", ".").removesuffix(".__init__")
                      for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")} - NOT_IMPORTED)
    code = ("import importlib, sys\nbad = []\nfor m in sys.argv[1:]:\n    try:\n        importlib.import_module(m)\n"
            "    except BaseException as e:\n        bad.append(f'{m}: {type(e).__name__}: {e}')\n"
            "print('\\n'.join(bad)); import htdask, tasks, htdask_localpool\n"
            "print('FROM', htdask.__file__, tasks.__file__, htdask_localpool.__file__)\n")
    res = subprocess.run([str(venv / "bin" / "python"), "-c", code, *modules], capture_output=True, text=True,
                         cwd=str(tmp_path), env=_clean_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out, _, where = res.stdout.rpartition("FROM ")
    assert not out.strip(), f"modules that do not import from the wheel:\n{out}"
    assert {"workers.identity", "htdask.gateway.backend", "htdask_localpool.commands.submit"} <= set(modules)
    for path in where.split():
        assert Path(path).is_relative_to(venv) and not Path(path).is_relative_to(REPO), path


def test_the_image_installs_the_wheel_the_same_way():
    """The Dockerfile builds the wheel and pip-installs it (its pinned runtime dependencies with it): no
    checkout on PYTHONPATH, no requirements.txt (tests and profilers) in the image, and what compose and the
    Kubernetes manifests run are the installed programs."""
    text = (REPO / "Dockerfile").read_text()
    steps = [line.split("#")[0] for line in re.sub(r"\\\n", " ", text).splitlines() if not line.startswith("#")]
    runs = " ".join(steps)
    assert re.search(r"pip wheel [^&]*--no-deps [^&]*\.", runs) and re.search(r"pip install [^&]*htdask-\*\.whl", runs)
    assert "PYTHONPATH" not in runs and "requirements.txt" not in runs, "the image runs the checkout's files"
    assert not re.search(r"^COPY \. ", "\n".join(steps[steps.index(next(s for s in steps if s.startswith(
        "FROM python") and " AS " not in s)):]), flags=re.M), "the runtime stage copies the sources"
    commands = re.findall(r"(?:command|test): \[([^\]]*)\]", "\n".join(
        (REPO / p).read_text() for p in ("compose/docker-compose.yml", "deploy/k8s/exporter.yaml",
                                         "deploy/k8s/operator.yaml", "deploy/k8s/worker.yaml")))
    assert commands and not [c for c in commands if "cli.py" in c], "the image has no cli.py: run `htdask ...`"


#: run after the quick start's own steps (before its stop block): the rest of what a site runs
AFTER_QUICK_START = r"""
python -c 'import htdask, tasks; print("installed at", htdask.__file__, tasks.__file__)'
htdask logs mycluster --tail 3
htdask exporter --address 127.0.0.1 --port "$EXPORTER_PORT" > "$HTDASK_HOME/exporter.log" 2>&1 &
echo $! > "$HTDASK_HOME/exporter.pid"
python - <<'PY'
import os, time, urllib.request
url = f"http://127.0.0.1:{os.environ['EXPORTER_PORT']}/metrics"
for _ in range(300):
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        break
    except OSError:
        time.sleep(0.2)
print("exporter:", sum(line.startswith("htdask_") for line in text.splitlines()), "htdask_ samples")
PY
config="$(python -c 'import htdask.gateway, os; print(os.path.dirname(htdask.gateway.__file__))')/config.py"
GATEWAY_ADDRESS="127.0.0.1:$GATEWAY_PORT" GATEWAY_PASSWORD=wheel-test dask-gateway-server -f "$config" \
  > "$HTDASK_HOME/gateway.log" 2>&1 & echo $! > "$HTDASK_HOME/gateway.pid"
python - <<'PY'
import os, time, urllib.request
from dask_gateway import BasicAuth, Gateway
address = f"http://127.0.0.1:{os.environ['GATEWAY_PORT']}"
for _ in range(300):
    try:
        urllib.request.urlopen(f"{address}/api/health", timeout=5)
        break
    except OSError:
        time.sleep(0.2)
gateway = Gateway(address, auth=BasicAuth("alice", "wheel-test"))
with gateway.new_cluster() as cluster:
    cluster.scale(1)
    with cluster.get_client(set_as_default=False) as client:
        client.wait_for_workers(1, timeout=240)
        print("gateway: cluster", cluster.name, "has", len(client.scheduler_info()["workers"]), "worker(s)")
PY
"""


def _installed_quick_start(venv: Path) -> tuple[list[str], str]:
    """The quick start's blocks with the installed copy in place of the checkout."""
    *steps, stop = quick_start_blocks()
    out = []
    for block in steps + [stop]:
        lines = []
        for line in block.splitlines():
            if re.match(r"\s*make\s", line) or re.match(r"\s*(python -m )?pip install", line):
                continue  # the checkout's venv, the site's install: done by the fixtures
            line = re.sub(r"^(\s*)\.\s+\.venv/bin/activate\b", rf'\1. "{venv}/bin/activate"', line)
            line = re.sub(r"(\.venv/bin/)?python3? (\./)?cli\.py\b|\./cli\.py\b", "htdask", line)
            lines.append(line)
        out.append("\n".join(lines) + "\n")
    text = "".join(out)
    assert "cli.py" not in text and ".venv" not in text, f"the quick start still uses the checkout:\n{text}"
    if f'. "{venv}/bin/activate"' not in text:  # a quick start that installs and activates its own way
        out[0] = f'. "{venv}/bin/activate"\n' + out[0]
    return out[:-1], out[-1]


@pytest.mark.stack  # redis-server, Celery worker and beat, the pool
@pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")
def test_the_quick_start_runs_from_the_installed_wheel(venv):
    steps, stop = _installed_quick_start(venv)
    home = Path(tempfile.mkdtemp(prefix="htdask-wheel-home-"))
    os.chmod(home, 0o755)
    cwd = home / "elsewhere"  # a directory outside the checkout, nothing of ours in it
    cwd.mkdir()
    script = ("set -euo pipefail\ntrap 'set +e\n" + stop.replace("'", "'\\''") + "' EXIT\n" + "\n".join(steps)
              + AFTER_QUICK_START)
    env = _clean_env(HTDASK_HOME=str(home), REDIS_PORT=str(free_port()), FLOWER_PORT=str(free_port()),
                     DASK_PORT=str(free_port()), EXPORTER_PORT=str(free_port()), GATEWAY_PORT=str(free_port()),
                     LOG_DIR=str(home / "logs"), PATH=_path_without_checkout())
    try:
        res = subprocess.run(["bash", "-c", script], cwd=str(cwd), env=env, capture_output=True, text=True,
                             timeout=900)
        logs = "\n".join(f"--- {p.relative_to(home)}\n{p.read_text(errors='replace')[-1500:]}"
                         for p in [*home.glob("*.log"), *sorted(home.glob("logs/*/*.err"))[-3:]])
        assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}\n{logs}"
        out = res.stdout
        assert "cluster mycluster: scale to 2 enqueued" in out and "cluster mycluster: deleted" in out, out
        assert re.search(r"^CLUSTER\s+OWNER\s+SCHEDD", out, flags=re.M), out
        installed = re.search(r"^installed at (\S+) (\S+)$", out, flags=re.M)
        assert installed and all(Path(p).is_relative_to(venv) for p in installed.groups()), out
        assert re.search(r"^==> .*mycluster.*\.(out|err) <==$", out, flags=re.M), "htdask logs printed a worker's"
        samples = re.search(r"^exporter: (\d+) htdask_ samples$", out, flags=re.M)
        assert samples and int(samples.group(1)) > 0, out
        assert re.search(r"^gateway: cluster \S+ has 1 worker\(s\)$", out, flags=re.M), f"{out}\n{logs}"
        pids = [int(p.read_text()) for p in home.glob("*.pid") if p.read_text().strip().isdigit()]
        assert len(pids) >= 6, pids  # worker, beat, Flower, scheduler, exporter, gateway
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        assert not [p for p in pids if _alive(p)], "a process outlived the quick start's stop block"
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(env["REDIS_PORT"]))) != 0, "redis-server was stopped"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _path_without_checkout() -> str:
    """PATH without this environment's bin (the venv's activate script puts its own first)."""
    ours = {str(Path(sys.executable).parent), os.path.realpath(Path(sys.executable).parent)}
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and p not in ours and os.path.realpath(p) not in ours)
