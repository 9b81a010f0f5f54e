"""deploy/k8s: the manifests parse, the CRD is dask-gateway's, and the RBAC grants exactly the API
calls the operator makes (derived from htdask.k8s_operator.client.API_CALLS, whose rows
tests/test_operator_apply.py and tests/test_operator_e2e.py check against the requests the API
server emulator receives)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from htdask.k8s_operator import bodies
from htdask.k8s_operator.client import API_CALLS, NAMESPACED_OPS, rbac_requirements
from htdask.k8s_operator.config import OperatorConfig

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
FILES = ("crd.yaml", "rbac.yaml", "operator.yaml")


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


def test_crd_is_dask_gateways():
    crd = one("CustomResourceDefinition")
    assert crd["metadata"]["name"] == f"{bodies.PLURAL}.{bodies.GROUP}"
    spec = crd["spec"]
    assert spec["group"] == bodies.GROUP and spec["scope"] == "Namespaced"
    assert spec["names"] == {"kind": "DaskCluster", "listKind": "DaskClusterList", "plural": bodies.PLURAL,
                             "singular": "daskcluster"}
    [version] = spec["versions"]
    assert version["name"] == bodies.VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}, "the operator patches daskclusters/status"
    assert version["schema"] == {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}


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
