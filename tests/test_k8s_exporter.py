"""deploy/k8s/exporter.yaml: valid Kubernetes objects, scraped by annotation or by the port named `metrics`.

Kept apart from operator.yaml (tests/test_k8s_manifests.py: its RBAC matches the operator's API calls);
the exporter calls no Kubernetes API, so it gets no token at all.
"""
from __future__ import annotations

import json

import kubernetes.client as k8s
import yaml

from htdask.demo.services import REPO

MANIFEST = REPO / "deploy" / "k8s" / "exporter.yaml"
MODELS = {"Deployment": "V1Deployment", "Service": "V1Service"}


def objects() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Service"]
    return {d["kind"]: d for d in docs}


def test_objects_are_valid_for_the_kubernetes_api():
    api = k8s.ApiClient()
    for kind, obj in objects().items():
        model = api.deserialize(json.dumps(obj), MODELS[kind], "application/json")
        assert api.sanitize_for_serialization(model) == obj, kind


def test_exporter_is_scraped_on_the_port_named_metrics():
    deployment, service = objects()["Deployment"], objects()["Service"]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["command"][:2] == ["htdask", "exporter"]  # the installed program (Dockerfile)
    port = container["command"][container["command"].index("--port") + 1]
    assert container["ports"] == [{"name": "metrics", "containerPort": int(port), "protocol": "TCP"}]
    for annotations in (pod["metadata"]["annotations"], service["metadata"]["annotations"]):
        assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": port,
                               "prometheus.io/path": "/metrics"}
    assert service["spec"]["ports"] == [{"name": "metrics", "port": int(port), "targetPort": "metrics",
                                         "protocol": "TCP"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "htdask-exporter"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_exporter_runs_unprivileged_without_an_api_token():
    pod = objects()["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    redis = [e for e in pod["containers"][0]["env"] if e["name"] == "REDIS_URL"][0]
    assert redis["valueFrom"]["secretKeyRef"] == {"name": "htdask-redis", "key": "url"}
