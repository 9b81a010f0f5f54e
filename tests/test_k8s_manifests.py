"""deploy/k8s: the manifests parse and are valid against the Kubernetes 1.32 schemas, the CRD is dask-gateway's
plus printer columns and the scale subresource (by the API server's rules), and the RBAC grants exactly the API
calls the operator makes (derived from htdask.k8s_operator.client.API_CALLS, whose rows
tests/test_operator_apply.py and tests/test_operator_e2e.py check against the requests the API
server emulator receives)."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from htdask.k8s_operator import bodies
from htdask.k8s_operator.client import API_CALLS, NAMESPACED_OPS, rbac_requirements
from htdask.k8s_operator.config import OperatorConfig

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
FILES = ("crd.yaml", "rbac.yaml", "operator.yaml")
UPSTREAM = Path(__file__).resolve().parent / "data" / "dask-gateway-2026.3.0"
K8S_VERSION = "1.32.0"


def upstream_crd() -> dict:
    return yaml.safe_load((UPSTREAM / "daskclusters.yaml").read_text())


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]


def by_kind(kind: str) -> list[dict]:
    return [d for name in FILES for d in docs(name) if d["kind"] == kind]


def one(kind: str) -> dict:
    found = by_kind(kind)
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def grants(rules: list[dict]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    out.add((g, r, v))
    return out


@pytest.mark.parametrize("name", FILES)
def test_manifests_parse_into_named_objects(name):
    objects = docs(name)
    assert objects
    for obj in objects:
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"]


@pytest.mark.parametrize("kind,model", [("ServiceAccount", "V1ServiceAccount"), ("ClusterRole", "V1ClusterRole"),
                                        ("ClusterRoleBinding", "V1ClusterRoleBinding"), ("Role", "V1Role"),
                                        ("RoleBinding", "V1RoleBinding"), ("Deployment", "V1Deployment"),
                                        ("Namespace", "V1Namespace")])
def test_manifests_are_valid_objects_of_their_kind(kind, model):
    """Every field is one the Kubernetes API knows: the client's model keeps them all."""
    api = k8s.ApiClient()
    for obj in by_kind(kind):
        assert api.sanitize_for_serialization(api.deserialize(json.dumps(obj), model, "application/json")) == obj


def test_crd_keeps_dask_gateways_crd():
    """Everything of dask-gateway's own CRD (tests/data/dask-gateway-2026.3.0/daskclusters.yaml, the chart's
    crds/) is kept: names, scope, version, the status subresource, a root schema that keeps unknown fields."""
    ours, theirs = one("CustomResourceDefinition"), upstream_crd()
    assert ours["metadata"]["name"] == theirs["metadata"]["name"] == f"{bodies.PLURAL}.{bodies.GROUP}"
    for key in ("group", "names", "scope"):
        assert ours["spec"][key] == theirs["spec"][key], key
    [version], [upstream] = ours["spec"]["versions"], theirs["spec"]["versions"]
    assert {k: version[k] for k in ("name", "served", "storage")} == {k: upstream[k] for k in ("name", "served", "storage")}
    assert version["name"] == bodies.VERSION
    assert version["subresources"]["status"] == upstream["subresources"]["status"] == {}, \
        "the operator patches daskclusters/status"
    schema, their_schema = version["schema"]["openAPIV3Schema"], upstream["schema"]["openAPIV3Schema"]
    assert {k: schema[k] for k in their_schema} == their_schema
    objects = [n for n in schema_nodes(schema) if n.get("type") == "object"]
    assert objects and all(n.get("x-kubernetes-preserve-unknown-fields") is True for n in objects), \
        "no field dask-gateway (or a user's cluster options) writes is ever pruned"


def test_crd_accepts_every_daskcluster_dask_gateway_writes():
    """The objects dask-gateway's KubeBackend creates and patches (tests/test_operator_objects.py) and the status
    the operator writes are valid under the CRD's schema."""
    import jsonschema
    from tests.test_operator_objects import daskcluster
    schema = one("CustomResourceDefinition")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    written = daskcluster(status={"phase": "Running", "selector": "a=b", "htcondor": {
        "cluster": "x-1", "owner": "alice", "schedd": "local", "requested": 3, "requestedAt": "2026-05-28T20:25:00Z",
        "idle": 0, "running": 3, "held": 0, "error": "e"}, "credentials": "c", "schedulerPod": "p"}, replicas=3)
    for obj in (daskcluster(), daskcluster(replicas=0), written):
        jsonschema.validate(obj, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(daskcluster(replicas=-1), schema)


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOY.glob("*.yaml")))
def test_every_manifest_is_valid_against_the_kubernetes_1_32_schemas(name):
    """deploy/k8s/*.yaml against the Kubernetes 1.32 OpenAPI schemas, strict (no field the API does not know):
    kubernetes-validate (PyPI, pinned in requirements-dev.txt) ships them as JSON schemas (its
    kubernetes-json-schema/v1.32.0-local-strict), so this needs no network."""
    import kubernetes_validate
    for obj in docs(name):
        assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == "1.32", (name, obj["kind"])


def test_the_1_32_schemas_catch_what_the_api_server_refuses():
    """The validation above can fail: a misspelt field, a column without jsonPath, a scale without its path."""
    import kubernetes_validate
    crd = one("CustomResourceDefinition")
    for mutate in (lambda v: v["subresources"]["scale"].update(specReplicaPath=".spec.replicas"),
                   lambda v: v["additionalPrinterColumns"][0].pop("jsonPath"),
                   lambda v: v["subresources"]["scale"].pop("statusReplicasPath")):
        bad = copy.deepcopy(crd)
        mutate(bad["spec"]["versions"][0])
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_crd_follows_the_api_servers_rules_for_schemas_columns_and_scale():
    """apiextensions-apiserver's rules (pkg/apis/apiextensions/validation) that a JSON schema cannot express, plus
    ours: every printer column and scale path names a field the schema declares, of the right type."""
    assert crd_problems(one("CustomResourceDefinition")) == []


@pytest.mark.parametrize("mutation,problem", [
    (lambda v: v["additionalPrinterColumns"].append({"name": "X", "type": "integer", "jsonPath": ".status.nope"}),
     "column X: .status.nope is not in the schema"),
    (lambda v: v["additionalPrinterColumns"].append({"name": "Y", "type": "integer", "jsonPath": ".status.phase"}),
     "column Y: .status.phase is string, not integer"),
    (lambda v: v["additionalPrinterColumns"].append({"name": "Z", "type": "timestamp", "jsonPath": ".status.phase"}),
     "column Z: type timestamp"),
    (lambda v: v["subresources"]["scale"].update(specReplicasPath=".status.htcondor.running"),
     "specReplicasPath .status.htcondor.running is not under .spec."),
    (lambda v: v["subresources"]["scale"].update(statusReplicasPath=".status.phase"),
     "statusReplicasPath .status.phase is string, not integer"),
    (lambda v: v["subresources"]["scale"].update(labelSelectorPath=".status.htcondor.held"),
     "labelSelectorPath .status.htcondor.held is integer, not string"),
    (lambda v: v["schema"]["openAPIV3Schema"].update(additionalProperties=True),
     "root: additionalProperties is not allowed at the root with the status subresource"),
    (lambda v: v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"].update(x={"minimum": 1}),
     "status.x: no type"),
    (lambda v: v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["replicas"].update(default=-1),
     "spec.replicas: default -1 is below minimum 0"),
])
def test_crd_rules_catch_what_they_check(mutation, problem):
    bad = copy.deepcopy(one("CustomResourceDefinition"))
    mutation(bad["spec"]["versions"][0])
    assert any(p.startswith(problem) for p in crd_problems(bad)), crd_problems(bad)


# ---- Kubernetes' rules for a CRD (apiextensions-apiserver, pkg/apis/apiextensions/validation/validation.go) ----

#: validation.go allowedFieldsAtRootSchema (Go names -> the JSON keys), when the status subresource is on
ROOT_FIELDS = {"description", "type", "format", "title", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
               "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "multipleOf", "required",
               "items", "properties", "externalDocs", "example", "x-kubernetes-preserve-unknown-fields",
               "x-kubernetes-validations"}
COLUMN_TYPES = {"integer", "number", "string", "boolean", "date"}
COLUMN_FORMATS = {"int32", "int64", "float", "double", "byte", "date", "date-time", "password"}
#: ObjectMeta fields a column may name (the schema never declares metadata)
META_TYPES = {"name": "string", "namespace": "string", "uid": "string", "generation": "integer",
              "creationTimestamp": "date", "deletionTimestamp": "date", "resourceVersion": "string"}


def schema_nodes(node: dict, path: str = ""):
    yield node
    for key, child in (node.get("properties") or {}).items():
        yield from schema_nodes(child, f"{path}.{key}" if path else key)
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], path + "[]")


def schema_type(schema: dict, path: str) -> str | None:
    """The declared type at a simple JSON path (``date`` for ObjectMeta times), None when not declared."""
    parts = path.lstrip(".").split(".")
    if parts[0] == "metadata" and len(parts) == 2:
        return META_TYPES.get(parts[1])
    node = schema
    for part in parts:
        node = (node.get("properties") or {}).get(part)
        if node is None:
            return None
    return node.get("type")


def simple_path(path: str) -> bool:
    """validateSimpleJSONPath: starts with '.', dot notation."""
    return bool(re.fullmatch(r"(\.[A-Za-z0-9_-]+)+", path or ""))


def crd_problems(crd: dict) -> list[str]:
    out = []
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        subresources = version.get("subresources") or {}
        if "status" in subresources:
            if schema.get("type") != "object":
                out.append("root: type must be object with the status subresource")
            out += [f"root: {k} is not allowed at the root with the status subresource" for k in schema
                    if k not in ROOT_FIELDS]
        out += structural_problems(schema, "")
        for col in version.get("additionalPrinterColumns") or ():
            name, ctype, path = col.get("name"), col.get("type"), col.get("jsonPath", "")
            if not name:
                out.append("column without a name")
            if ctype not in COLUMN_TYPES:
                out.append(f"column {name}: type {ctype} is not one of {sorted(COLUMN_TYPES)}")
            if col.get("format") and col["format"] not in COLUMN_FORMATS:
                out.append(f"column {name}: format {col['format']}")
            if not simple_path(path):
                out.append(f"column {name}: {path!r} is not a simple JSON path")
                continue
            declared = schema_type(schema, path)
            expected = "string" if ctype == "date" and not path.startswith(".metadata.") else ctype
            if declared is None:
                out.append(f"column {name}: {path} is not in the schema")
            elif declared != expected:
                out.append(f"column {name}: {path} is {declared}, not {expected}")
        scale = subresources.get("scale")
        if scale is not None:
            for key, under, expected in (("specReplicasPath", (".spec.",), "integer"),
                                         ("statusReplicasPath", (".status.",), "integer"),
                                         ("labelSelectorPath", (".spec.", ".status."), "string")):
                path = scale.get(key)
                if path is None and key == "labelSelectorPath":
                    continue
                if not simple_path(path) or not path.startswith(under):
                    out.append(f"{key} {path} is not under {' or '.join(under)}")
                    continue
                declared = schema_type(schema, path)
                if declared != expected:
                    out.append(f"{key} {path} is {declared or 'not in the schema'}, not {expected}")
    return out


def structural_problems(node: dict, path: str) -> list[str]:
    """A structural schema: every node has a type (unless it only preserves unknown fields or is
    int-or-string), and a default is valid for its node (requirePrunedDefaults: type, minimum)."""
    out = []
    where = path or "root"
    if not node.get("type") and not node.get("x-kubernetes-int-or-string") and \
            not node.get("x-kubernetes-preserve-unknown-fields"):
        out.append(f"{where}: no type")
    if "default" in node:
        value, t = node["default"], node.get("type")
        python = {"integer": int, "number": (int, float), "string": str, "boolean": bool, "object": dict,
                  "array": list}.get(t, object)
        if not isinstance(value, python) or (t in ("integer", "number") and isinstance(value, bool)):
            out.append(f"{where}: default {value!r} is not {t}")
        elif "minimum" in node and value < node["minimum"]:
            out.append(f"{where}: default {value!r} is below minimum {node['minimum']}")
    for key, child in (node.get("properties") or {}).items():
        out += structural_problems(child, f"{path}.{key}" if path else key)
    return out


def test_rbac_grants_exactly_the_calls_the_operator_makes():
    deployment = one("Deployment")
    sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    ns = deployment["metadata"]["namespace"]
    subject = {"kind": "ServiceAccount", "name": sa, "namespace": ns}

    crb = one("ClusterRoleBinding")
    assert subject in crb["subjects"] and crb["roleRef"]["kind"] == "ClusterRole"
    cluster_role = one("ClusterRole")
    assert crb["roleRef"]["name"] == cluster_role["metadata"]["name"]

    rb = one("RoleBinding")
    assert subject in rb["subjects"] and rb["metadata"]["namespace"] == ns
    role = one("Role")
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert role["metadata"]["namespace"] == ns, "the Lease lives in the operator's namespace"

    cluster_wide = rbac_requirements(op for op in API_CALLS if op not in NAMESPACED_OPS)
    in_namespace = rbac_requirements(NAMESPACED_OPS)
    assert grants(cluster_role["rules"]) == cluster_wide, "ClusterRole: every call, and no verb more"
    assert grants(role["rules"]) == in_namespace, "Role: the Lease calls, and no verb more"
    assert sa == one("ServiceAccount")["metadata"]["name"] and ns == one("ServiceAccount")["metadata"]["namespace"]


def test_lease_rule_names_the_lease_the_operator_uses():
    deployment = one("Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    lease_name = env["OPERATOR_LEASE_NAME"]["value"]
    assert lease_name == OperatorConfig(instance="x", api_url="http://x").lease_name
    named = [r for r in one("Role")["rules"] if r.get("resourceNames")]
    assert named == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": [lease_name], "verbs": ["get", "update"]}]
    assert env["OPERATOR_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_operator_deployment_runs_one_replica_of_the_operator():
    deployment = one("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"] == ["htdask", "operator"]  # the installed program (Dockerfile)
    env = {e["name"] for e in container["env"]}
    assert {"DASK_GATEWAY_INSTANCE", "DASK_GATEWAY_API_URL", "REDIS_URL", "SCHEDD_NAME"} <= env
    redis = [e for e in container["env"] if e["name"] == "REDIS_URL"][0]
    assert "secretKeyRef" in redis["valueFrom"], "the Redis password comes from a Secret"
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_worker_deployment_has_the_liveness_probe_of_the_kombu_wedge():
    """deploy/k8s/worker.yaml: a valid Deployment whose livenessProbe is `htdask worker-health`, pinging the
    worker the manifest starts (-n worker@%h: found by its queue heartbeat, and one of the check's fallback names)."""
    (deployment,) = docs("worker.yaml")
    api = k8s.ApiClient()
    assert api.sanitize_for_serialization(api.deserialize(json.dumps(deployment), "V1Deployment",
                                                          "application/json")) == deployment
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    cmd = container["command"]
    assert cmd[:4] == ["celery", "-A", "tasks", "worker"] and cmd[cmd.index("-n") + 1] == "worker@%h"
    probe = container["livenessProbe"]
    assert probe["exec"]["command"][:2] == ["htdask", "worker-health"]
    assert probe["failureThreshold"] >= 2 and probe["timeoutSeconds"] > 10
    from htdask.health import default_nodes
    import socket
    assert f"worker@{socket.gethostname()}" in default_nodes()


def deployment(name: str) -> dict:
    [dep] = [d for d in docs(name) if d["kind"] == "Deployment"]
    return dep


@pytest.mark.parametrize("name,command", [("beat.yaml", ["celery", "-A", "tasks", "beat"]),
                                          ("flower.yaml", ["celery", "-A", "tasks", "flower"]),
                                          ("exporter.yaml", ["htdask", "exporter"])])
def test_beat_flower_and_exporter_run_unprivileged_on_redis_alone(name, command):
    """They talk to Redis only: no service account token, no root, no privilege escalation, the Redis URL from
    the Secret htdask-redis (as the operator's)."""
    dep = deployment(name)
    pod = dep["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"][:len(command)] == command
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "htdask-redis", "key": "url"}
    assert dep["metadata"]["namespace"] == "htdask"
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_beat_polls_the_schedds_and_may_run_twice():
    dep = deployment("beat.yaml")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SCHEDDS"] and float(env["POLL_INTERVAL"]) > 0
    assert dep["spec"]["replicas"] <= 2, "a standby beat waits on celery-redbeat's lock; more add nothing"
    schedule = dep["spec"]["template"]["spec"]["containers"][0]["command"]
    mounts = [m["mountPath"] for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]]
    assert any(schedule[schedule.index("-s") + 1].startswith(m + "/") for m in mounts), \
        "the schedule file is on a writable volume (the root filesystem is read-only)"


def test_flower_has_basic_auth_from_a_secret_and_a_service():
    dep = deployment("flower.yaml")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in container["command"] if "basic" in a], "never a password on the command line (ps)"
    env = {e["name"]: e for e in container["env"]}
    assert env["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == "htdask-flower"
    [service] = [d for d in docs("flower.yaml") if d["kind"] == "Service"]
    assert service["spec"]["type"] == "ClusterIP"
    port = int(next(a.split("=")[1] for a in container["command"] if a.startswith("--port=")))
    assert container["ports"][0]["containerPort"] == port
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    assert service["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
