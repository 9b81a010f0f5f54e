"""The deployment documents tell one install (a site following any of them gets the same one).

docs/deploy.md, htdask/k8s_operator/README.md ("Running it", "Trying the real stack"), the headers of
deploy/helm/dask-gateway-values.yaml, deploy/k8s/*.yaml and deploy/systemd/* once contradicted each other:

* the CRD: every `helm` install of dask-gateway's chart passes `--skip-crds`, and every document that installs
  the chart applies our deploy/k8s/crd.yaml (dask-gateway's CRD plus printer columns and the scale
  subresource); none says the chart's CRD is the one to use; the real stack's API server emulator serves
  deploy/k8s/crd.yaml;
* the chart: every `helm` command names it as dask-gateway's install guide does (`dask-gateway` with
  `--repo https://helm.dask.org`), never through a `helm repo add` name (`dask/dask-gateway`,
  `dask-gateway/dask-gateway`);
* the operator's environment: every place that configures the operator sets OPERATOR_PROXY_WEB_MIDDLEWARES
  (the chart's `clusters-prefix-<fullname>` Middleware; without it the dashboard link is a 404), and the
  concrete ones agree with the chart's fullname (deploy/helm/dask-gateway-values.yaml) and release namespace
  (docs/deploy.md's `helm --namespace`);
* where the operator runs: the documents say the submit node is the usual place and a pod only when the
  submit node is a Kubernetes node.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "deploy.md"
K8S_README = REPO / "htdask" / "k8s_operator" / "README.md"
VALUES = REPO / "deploy" / "helm" / "dask-gateway-values.yaml"
OPERATOR_YAML = REPO / "deploy" / "k8s" / "operator.yaml"
ENV_EXAMPLE = REPO / "deploy" / "systemd" / "htdask.env.example"
CHART_REPO = "https://helm.dask.org"
#: helm's options that take a value (the rest of the words after `helm upgrade|install` are release and chart)
TAKE = {"--repo", "--version", "--namespace", "-n", "--values", "-f", "--set", "--set-string", "--set-file"}

pytestmark = pytest.mark.unit


def documents() -> list[Path]:
    """Every tracked document, manifest, unit and compose file (not tests/: they quote commands to check them)."""
    out = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True)
    return [REPO / p for p in out.stdout.splitlines()
            if not p.startswith(("tests/", ".venv")) and (REPO / p).is_file()
            and (p.endswith((".md", ".yaml", ".yml", ".service", ".example", ".txt")) or p == "Makefile")]


def helm_commands(path: Path) -> list[str]:
    """Every `helm ...` command in `path`, continuation lines joined (also inside `#` comments)."""
    text = re.sub(r"\\\n[ \t]*(?:#[ \t]*)?", " ", path.read_text())
    return [m.group(0).strip() for m in re.finditer(r"\bhelm\s+(?:upgrade|install|repo|template|pull)\b[^`\n]*", text)]


def test_every_helm_command_installs_the_chart_by_repo_with_skip_crds():
    found = {p: helm_commands(p) for p in documents()}
    found = {p: cmds for p, cmds in found.items() if cmds}
    where = {p.relative_to(REPO).as_posix() for p in found}
    assert {"docs/deploy.md", "deploy/helm/dask-gateway-values.yaml", "htdask/k8s_operator/README.md"} <= where, where
    for path, cmds in found.items():
        for cmd in cmds:
            name = f"{path.relative_to(REPO)}: {cmd}"
            words = shlex.split(cmd.replace("--repo=", "--repo "))
            assert words[1] in ("upgrade", "install"), f"{name}: only `helm upgrade --install`/`helm install`"
            assert "--skip-crds" in words, f"{name}: without --skip-crds the chart's CRD replaces ours"
            assert words[words.index("--repo") + 1] == CHART_REPO if "--repo" in words else False, \
                f"{name}: the chart by `--repo {CHART_REPO}`, as dask-gateway's install guide names it"
            positional = [w for i, w in enumerate(words[2:], 2) if not w.startswith("-") and words[i - 1] not in TAKE]
            assert positional[1:2] == ["dask-gateway"], f"{name}: release then chart `dask-gateway`: {positional}"
            assert not re.search(r"\S+/dask-gateway\b", " ".join(positional)), f"{name}: a repo-named chart"


def test_every_document_installing_the_chart_applies_our_crd():
    for path in documents():
        text = path.read_text()
        rel = path.relative_to(REPO).as_posix()
        assert not re.search(r"chart installs the CRD|not `?crd\.yaml", text), f"{rel} says the chart's CRD is used"
        if helm_commands(path) and rel != "deploy/k8s/crd.yaml":
            assert re.search(r"kubectl apply (?:[^\n`]* )?-f deploy/k8s/crd\.yaml", text), \
                f"{rel} installs the chart but does not apply deploy/k8s/crd.yaml"
    crd = next(d for d in yaml.safe_load_all((REPO / "deploy" / "k8s" / "crd.yaml").read_text()) if d)
    versions = crd["spec"]["versions"]
    assert all(v["subresources"].get("scale") and v.get("additionalPrinterColumns") for v in versions)


def test_the_real_stack_serves_our_crd():
    from tests import k8s_scale
    assert k8s_scale.CRD_FILE.resolve() == (REPO / "deploy" / "k8s" / "crd.yaml").resolve()
    assert ("gateway.dask.org", "v1alpha1", "daskclusters") in k8s_scale.crd_views()


def expected_middlewares() -> list[dict]:
    """The chart's Middleware for the release docs/deploy.md installs: clusters-prefix-<fullname> in its namespace."""
    fullname = yaml.safe_load(VALUES.read_text())["fullnameOverride"]
    [install] = [shlex.split(c) for c in helm_commands(DOC) if c.split()[1:3] == ["upgrade", "--install"]]
    namespace = install[install.index("--namespace") + 1]
    return [{"name": f"clusters-prefix-{fullname}"[:63].rstrip("-"), "namespace": namespace}]


def operator_envs() -> dict[str, dict[str, str]]:
    """Each concrete operator environment the deploy files give: place -> {variable: value}."""
    text = DOC.read_text()
    heredoc = text.split('cat > "$HTDASK_ETC/operator.env" <<\'EOF\'\n', 1)[1].split("\nEOF\n", 1)[0]
    [dep] = [d for d in yaml.safe_load_all(OPERATOR_YAML.read_text()) if d and d["kind"] == "Deployment"]
    example = dict(m.groups() for m in re.finditer(r"^# ((?:DASK_GATEWAY|OPERATOR)_[A-Z_]+)=(.*)$",
                                                    ENV_EXAMPLE.read_text(), flags=re.M))
    return {
        "docs/deploy.md operator.env": dict(line.split("=", 1) for line in heredoc.splitlines()),
        "deploy/k8s/operator.yaml": {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]},
        "deploy/systemd/htdask.env.example": example,
    }


def test_every_operator_environment_has_the_dashboard_middleware():
    expected = expected_middlewares()
    envs = operator_envs()
    for place, env in envs.items():
        assert env.get("DASK_GATEWAY_INSTANCE"), f"{place}: not an operator environment"
        assert "OPERATOR_PROXY_WEB_MIDDLEWARES" in env, f"{place}: no OPERATOR_PROXY_WEB_MIDDLEWARES"
        assert json.loads(env["OPERATOR_PROXY_WEB_MIDDLEWARES"]) == expected, place
    for key in ("DASK_GATEWAY_INSTANCE", "DASK_GATEWAY_API_URL"):
        assert len({env[key] for env in envs.values()}) == 1, f"{key} differs: {[env[key] for env in envs.values()]}"
    # whatever else sets the operator's instance (compose, the README's steps) names the middleware setting too
    for path in documents():
        text = path.read_text()
        if re.search(r"DASK_GATEWAY_INSTANCE(?:=|:| *\n *value:)", text):
            assert "OPERATOR_PROXY_WEB_MIDDLEWARES" in text, f"{path.relative_to(REPO)} configures the operator " \
                                                             "without OPERATOR_PROXY_WEB_MIDDLEWARES"
    stack = (REPO / "tests" / "k8s_stack.py").read_text()
    assert 'OPERATOR_PROXY_WEB_MIDDLEWARES=json.dumps([{"name": f"clusters-prefix-{INSTANCE}"' in stack


def test_the_documents_agree_where_the_operator_runs():
    for path in (DOC, K8S_README, OPERATOR_YAML, ENV_EXAMPLE.parent / "htdask-operator.service"):
        text = " ".join(path.read_text().split())
        assert re.search(r"(?i)on the submit node", text), f"{path.relative_to(REPO)}: the usual place"
    for path in (DOC, K8S_README, OPERATOR_YAML):
        text = " ".join(path.read_text().replace("#", " ").split())
        assert re.search(r"(?i)only when the submit node is a Kubernetes node", text), \
            f"{path.relative_to(REPO)}: when a pod is right"
    readme = K8S_README.read_text()
    step2 = readme.split("2. Our", 1)[1].split("\n3. ", 1)[0]
    assert "operator.yaml" not in step2 and "htdask-operator.service" in step2, \
        "the real stack's steps run the operator on the submit node, as tests/k8s_stack.py does"
