"""docs/deploy.md runs as written where it can, and what it installs is consistent.

* Its ```` ```sh test ```` blocks run, in order, in one bash at the top of the checkout (as tests/test_readme.py
  runs the quick start), with HTDASK_PREFIX (its `venv` = the checkout's virtualenv), HTDASK_ETC and UNIT_DIR
  in a scratch directory and WORKER_PYTHON = the virtualenv's python. Commands that need a Kubernetes cluster
  or a running systemd meet stand-ins on PATH that record their arguments (and stdin): `kubectl apply`,
  `kubectl create token`, `helm`, `systemctl`; everything else runs for real: `kubectl create ... --dry-run=client`
  and `kubectl config` (kubectl 1.32 when installed), `systemd-analyze verify` (systemd 252 here; where it is
  missing, a stand-in parses each unit and checks that the programs it starts exist, and says so), the worker
  environment check. The test then checks what the stand-ins were given.
* deploy/helm/dask-gateway-values.yaml, merged over dask-gateway 2026.3.0's chart values as Helm merges them,
  is valid against the chart's values.schema.yaml (tests/data/dask-gateway-2026.3.0/), sets
  `controller.enabled: false` and a Traefik `tcp` entry point, and names the instance and API Service
  deploy/k8s/operator.yaml uses.
* deploy/systemd/*: every unit parses, runs the programs the compose file and the manifests run, with the
  privileges docs/deploy.md explains.
"""
from __future__ import annotations

import configparser
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from htdask.demo.services import REPO

DOC = REPO / "docs" / "deploy.md"
SYSTEMD = REPO / "deploy" / "systemd"
K8S = REPO / "deploy" / "k8s"
VALUES = REPO / "deploy" / "helm" / "dask-gateway-values.yaml"
CHART = Path(__file__).resolve().parent / "data" / "dask-gateway-2026.3.0"
K8S_VERSION = "1.32.0"


def doc_blocks() -> list[tuple[bool, str]]:
    """(run by the test, text) of every sh block of docs/deploy.md, in order."""
    return [(info.strip() == "test", body)
            for info, body in re.findall(r"^```sh([^\n]*)\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)]


def test_the_doc_has_its_sections_and_runnable_blocks():
    text = DOC.read_text()
    for heading in ("## The submit node", "### Why the Celery worker runs as root", "## The execute side",
                    "## Kubernetes", "### dask-gateway, without its controller", "### htdask's manifests",
                    "### The operator", "## Hosts without Kubernetes"):
        assert heading in text, heading
    for words in ("LOG_DIR", "SPOOL_DIR", "QUEUE_SUPER_USERS", "controller.enabled", "8786", "Sentinel",
                  "deploy/systemd", "beat.yaml", "flower.yaml", "exporter.yaml"):
        assert words in text, words
    runnable = [b for run, b in doc_blocks() if run]
    assert len(runnable) >= 6
    assert any("systemd-analyze verify" in b for b in runnable) and any("helm upgrade --install" in b for b in runnable)


# ---- running the blocks ----------------------------------------------------------------------------------

STANDIN_KUBECTL = r"""#!/bin/bash
# kubectl where docs/deploy.md needs a cluster: records `apply` (files, and stdin as one file per call) and
# answers `create token`; everything else (create --dry-run=client, config) is the real kubectl.
echo "$*" >> "$CAPTURE/kubectl.log"
if [[ " $* " == *" apply "* ]]; then
  prev=""
  for a in "$@"; do
    if [[ $prev == "-f" ]]; then
      if [[ $a == "-" ]]; then cat > "$CAPTURE/stdin-$(ls "$CAPTURE" | grep -c '^stdin-').yaml"
      else echo "$a" >> "$CAPTURE/applied"; fi
    fi
    prev=$a
  done
  exit 0
fi
if [[ " $* " == *" create token "* ]]; then echo "standin-token-0123456789"; exit 0; fi
exec "$REAL_KUBECTL" "$@"
"""
STANDIN_RECORDER = """#!/bin/bash
echo "$*" >> "$CAPTURE/{name}.log"
"""
#: systemd-analyze verify where systemd is missing: parse each unit (templates resolved in the cwd) and check
#: that the programs of its Exec lines exist and are executable
STANDIN_VERIFY = r"""#!{python}
import configparser, os, sys
names = [a for a in sys.argv[2:] if not a.startswith("-")]
bad = 0
for name in names:
    path = name if os.path.exists(name) else name.split("@")[0] + "@" + name[name.rfind("."):]
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(open(path).read())
    for section in cp.sections():
        for key, value in cp.items(section):
            if key.startswith("Exec"):
                exe = value.split()[0].lstrip("-@+!")
                if not os.access(exe, os.X_OK):
                    print(f"{name}: Command {exe} is not executable", file=sys.stderr)
                    bad = 1
sys.exit(bad)
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Run the doc's runnable blocks once; yields (result, scratch directory, capture directory, notes)."""
    tmp_path = tmp_path_factory.mktemp("deploy-doc")
    real_kubectl = shutil.which("kubectl")
    if not real_kubectl:
        pytest.skip("kubectl is not installed (its create --dry-run and config commands run for real here)")
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("needs the checkout's .venv (make test creates it)")
    bin_dir, capture, etc, units, prefix = (tmp_path / d for d in ("bin", "capture", "etc", "units", "prefix"))
    for d in (bin_dir, capture, units, prefix):
        d.mkdir()
    (prefix / "venv").symlink_to((REPO / ".venv").resolve())
    (bin_dir / "kubectl").write_text(STANDIN_KUBECTL)
    for name in ("helm", "systemctl"):
        (bin_dir / name).write_text(STANDIN_RECORDER.format(name=name))
    notes = []
    if not shutil.which("systemd-analyze"):
        notes.append("systemd-analyze is not installed: the units were parsed and their programs checked instead")
        (bin_dir / "systemd-analyze").write_text(STANDIN_VERIFY.replace("{python}", str(REPO / ".venv/bin/python")))
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    script = "set -euo pipefail\n" + "\n".join(b for run, b in doc_blocks() if run)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KUBECONFIG", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", CAPTURE=str(capture), REAL_KUBECTL=real_kubectl,
               HTDASK_PREFIX=str(prefix), HTDASK_ETC=str(etc), UNIT_DIR=str(units), HOME=str(tmp_path),
               WORKER_PYTHON=str(prefix / "venv" / "bin" / "python"))
    res = subprocess.run(["bash", "-c", script], cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    yield res, tmp_path, capture, notes


def log_lines(capture: Path, name: str) -> list[list[str]]:
    f = capture / f"{name}.log"
    return [shlex.split(line) for line in f.read_text().splitlines()] if f.exists() else []


def test_the_runnable_blocks_run_as_written(ran):
    res, tmp, capture, notes = ran
    assert "worker environment:" in res.stdout and "distributed" in res.stdout
    etc = tmp / "etc"
    for name in ("htdask.env", "flower.env", "operator.env", "operator.kubeconfig", "operator.token"):
        assert (etc / name).stat().st_mode & 0o077 == 0, f"{name} is readable by others"
    assert re.fullmatch(r"FLOWER_BASIC_AUTH=admin:[0-9a-f]{24}\n", (etc / "flower.env").read_text())
    for note in notes:
        print(note)


def test_the_units_it_enables_are_the_ones_it_installed_and_verified(ran):
    res, tmp, capture, _ = ran
    installed = {p.name for p in (tmp / "units").iterdir()}
    assert installed == {p.name for p in SYSTEMD.iterdir() if p.suffix in (".service", ".timer")}
    enabled = [u for args in log_lines(capture, "systemctl") if args[:2] == ["enable", "--now"] for u in args[2:]]
    assert {"htdask-worker@local.service", "htdask-beat.service", "htdask-operator.service"} <= set(enabled)
    for unit in enabled:
        template = re.sub(r"@[^.]+\.", "@.", unit)
        assert unit in installed or template in installed, unit
    verified = next(b for run, b in doc_blocks() if run and "systemd-analyze verify" in b)
    assert all(u in verified for u in enabled), "every unit enabled was verified first"
    for path in (tmp / "units").iterdir():
        text = path.read_text()
        assert "/opt/htdask" not in text, f"the prefix was substituted: {path.name}"
        for env_file in re.findall(r"^EnvironmentFile=(.*)$", text, flags=re.M):
            assert env_file.startswith(str(tmp / "etc") + "/"), f"{path.name}: {env_file}"


def test_the_secrets_it_creates_are_the_ones_the_manifests_read(ran):
    import kubernetes_validate
    res, tmp, capture, _ = ran
    created = [yaml.safe_load(f.read_text()) for f in sorted(capture.glob("stdin-*.yaml"))]
    for obj in created:
        assert obj["metadata"]["namespace"] == "htdask"
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    have = {(o["kind"], o["metadata"]["name"], key) for o in created for key in (o.get("data") or {})}
    applied = (capture / "applied").read_text().split()
    assert {"deploy/k8s/crd.yaml", "deploy/k8s/rbac.yaml", "deploy/k8s/beat.yaml", "deploy/k8s/flower.yaml",
            "deploy/k8s/exporter.yaml"} <= set(applied)
    needed = set()
    for name in applied + ["deploy/k8s/operator.yaml"]:
        for obj in yaml.safe_load_all((REPO / name).read_text()):
            if obj:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
                needed |= references(obj)
    assert needed and needed <= have, f"read by the manifests but not created: {needed - have}"


def references(obj) -> set[tuple[str, str, str]]:
    """(kind, name, key) of every Secret key and ConfigMap item a manifest reads."""
    out = set()
    if isinstance(obj, dict):
        if "secretKeyRef" in obj:
            out.add(("Secret", obj["secretKeyRef"]["name"], obj["secretKeyRef"]["key"]))
        if "configMap" in obj and "name" in obj["configMap"]:
            for sub in ("passwd", "group"):
                out.add(("ConfigMap", obj["configMap"]["name"], sub))
        for v in obj.values():
            out |= references(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= references(v)
    return out


def test_the_helm_install_is_the_charts_with_our_values(ran):
    res, tmp, capture, _ = ran
    [install] = [a for a in log_lines(capture, "helm") if a[:2] == ["upgrade", "--install"]]
    opts = dict(zip(install, install[1:]))  # each option with the word after it
    assert install[2:4] == ["dask-gateway", "dask-gateway"] and "--skip-crds" in install
    assert opts["--repo"] == "https://helm.dask.org", "the chart by --repo, as dask-gateway's install guide has it"
    assert opts["--version"] == "2026.3.0" and opts["--values"] == "deploy/helm/dask-gateway-values.yaml"
    assert opts["--set"].startswith("gateway.auth.simple.password=")
    api_url = operator_env()["DASK_GATEWAY_API_URL"]
    assert api_url == f"http://api-{values()['fullnameOverride']}.{opts['--namespace']}:8000/api", \
        "the operator's API URL is the chart's API Service in the namespace the doc installs it to"
    assert json.loads(operator_env()["OPERATOR_PROXY_WEB_MIDDLEWARES"]) == [
        {"name": f"clusters-prefix-{values()['fullnameOverride']}", "namespace": opts["--namespace"]}], \
        "the operator's routes use the chart's Middleware that strips /clusters/<name> (else the dashboard is a 404)"
    assert not [a for a in log_lines(capture, "helm") if a[:1] == ["repo"]], "no named repo: --repo"


def test_the_operator_kubeconfig_and_settings_it_writes_work(ran):
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from htdask.k8s_operator.config import OperatorConfig
    res, tmp, capture, _ = ran
    conf = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(tmp / "etc" / "operator.kubeconfig"), client_configuration=conf)
    assert conf.host == "https://k8s.example.org:6443"
    assert "Bearer standin-token-0123456789" in conf.api_key.values(), conf.api_key
    env = dict(line.split("=", 1) for line in (tmp / "etc" / "operator.env").read_text().splitlines())
    assert env == operator_env()
    fields = {"DASK_GATEWAY_INSTANCE": "instance", "DASK_GATEWAY_API_URL": "api_url",
              "OPERATOR_SCHEDULER_ADDRESS": "scheduler_address", "OPERATOR_CREDENTIALS_DIR": "credentials_dir",
              "OPERATOR_WORKER_PORT_RANGE": "worker_port_range", "OPERATOR_NANNY_PORT_RANGE": "nanny_port_range",
              "OPERATOR_PROXY_WEB_MIDDLEWARES": "proxy_web_middlewares"}
    assert set(env) == set(fields), "operator.env sets these, the dashboard's Middleware among them"
    cfg = OperatorConfig.model_validate({fields[k]: v for k, v in env.items()})
    cfg.require()
    assert cfg.instance == values()["fullnameOverride"] == deployment_env("operator.yaml")["DASK_GATEWAY_INSTANCE"]
    assert cfg.api_url == deployment_env("operator.yaml")["DASK_GATEWAY_API_URL"]
    assert cfg.proxy_web_middlewares == json.loads(deployment_env("operator.yaml")["OPERATOR_PROXY_WEB_MIDDLEWARES"])
    assert cfg.proxy_web_middlewares == [{"name": f"clusters-prefix-{cfg.instance}", "namespace": "dask-gateway"}]
    assert cfg.scheduler_address.startswith("gateway://") and ":8786/" in cfg.scheduler_address
    assert cfg.proxy_tcp_entrypoint == "tcp", "the entry point the chart creates when its tcp port is a number"


def operator_env() -> dict[str, str]:
    """The operator.env the doc writes (from its heredoc)."""
    text = DOC.read_text()
    body = text.split('cat > "$HTDASK_ETC/operator.env" <<\'EOF\'\n', 1)[1].split("\nEOF\n", 1)[0]
    return dict(line.split("=", 1) for line in body.splitlines())


def deployment_env(name: str) -> dict[str, str]:
    [dep] = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d and d["kind"] == "Deployment"]
    return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


# ---- the Helm values -----------------------------------------------------------------------------------

def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def helm_merge(base, override):
    """Helm's coalescing of user values over a chart's: maps merge key by key, null deletes, the rest replaces."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = helm_merge(out.get(k), v)
    return out


def chart_schema() -> dict:
    schema = yaml.safe_load((CHART / "values.schema.yaml").read_text())
    schema.pop('$schema"', None)  # a typo of the chart's YAML (its generator drops it too)
    return schema


def test_helm_values_are_valid_for_the_chart_and_turn_its_controller_off():
    import jsonschema
    merged = helm_merge(yaml.safe_load((CHART / "values.yaml").read_text()), values())
    jsonschema.Draft7Validator(chart_schema()).validate(merged)
    assert merged["controller"]["enabled"] is False, "htdask's operator is the controller"
    tcp = merged["traefik"]["service"]["ports"]["tcp"]["port"]
    assert isinstance(tcp, int) and tcp == 8786, "Traefik gets a tcp entry point of its own (the chart's `tcp`)"
    assert merged["traefik"]["installTraefik"] is True
    from htdask.settings import OperatorSettings
    assert OperatorSettings.model_fields["proxy_tcp_entrypoint"].default == "tcp"
    assert merged["gateway"]["backend"]["image"]["tag"] == "2026.3.0"
    import dask_gateway_server
    assert dask_gateway_server.__version__ == "2026.3.0", "the chart, the scheduler image and our pin agree"


@pytest.mark.parametrize("mistake", [{"controller": {"enable": False}}, {"traefik": {"service": {"ports": {
    "tcp": {"port": [8786]}}}}}, {"gateway": {"auth": {"type": "password"}}}])
def test_the_charts_schema_catches_a_mistake_in_the_values(mistake):
    import jsonschema
    merged = helm_merge(helm_merge(yaml.safe_load((CHART / "values.yaml").read_text()), values()), mistake)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(chart_schema()).validate(merged)


# ---- the systemd units ---------------------------------------------------------------------------------

def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string((SYSTEMD / name).read_text())
    return cp


@pytest.mark.parametrize("name,user,program", [
    ("htdask-worker@.service", "root", ["celery", "-A", "tasks", "worker", "-Q", "%i"]),
    ("htdask-beat.service", "htdask", ["celery", "-A", "tasks", "beat"]),
    ("htdask-flower.service", "htdask", ["celery", "-A", "tasks", "flower"]),
    ("htdask-exporter.service", "htdask", ["htdask", "exporter"]),
    ("htdask-operator.service", "root", ["htdask", "operator"]),
    ("htdask-gateway.service", "htdask", ["dask-gateway-server", "-f"]),
])
def test_units_run_the_controllers_programs_as_the_doc_says(name, user, program):
    cp = unit(name)
    service = cp["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].startswith("/opt/htdask/venv/bin/")
    assert [os.path.basename(argv[0])] + argv[1:len(program)] == program
    assert (REPO / ".venv" / "bin" / os.path.basename(argv[0])).exists(), "a program the installed package provides"
    assert service["User"] == user
    assert service["Restart"] == "always" and "EnvironmentFile" in service
    assert "--basic-auth" not in service["ExecStart"], "no password on a command line"
    assert cp["Install"]["WantedBy"] == "multi-user.target"


def test_the_worker_unit_matches_the_compose_worker_and_its_health_check():
    argv = shlex.split(unit("htdask-worker@.service")["Service"]["ExecStart"])
    assert argv[argv.index("-n") + 1] == "worker@%%h", "systemd's %%h is the worker@HOST worker-health pings"
    assert int(unit("htdask-worker@.service")["Service"]["TimeoutStopSec"]) >= 300, "warm shutdown of a round"
    health = unit("htdask-worker-health@.service")["Service"]["ExecStart"]
    assert "htdask worker-health" in health and "systemctl kill --signal=SIGKILL htdask-worker@%i.service" in health
    assert unit("htdask-worker-health@.timer")["Timer"]["OnUnitActiveSec"]


def test_the_env_example_names_settings_of_the_model():
    names = {line.split("=", 1)[0].lstrip("# ") for line in (SYSTEMD / "htdask.env.example").read_text().splitlines()
             if re.match(r"#? ?[A-Z_]+=", line)}
    env_names = settings_env_names()
    assert names and names <= env_names, names - env_names


def settings_env_names() -> set[str]:
    """Every environment variable of the settings model (as the README's tables list them)."""
    text = (REPO / "README.md").read_text()
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, flags=re.M))
