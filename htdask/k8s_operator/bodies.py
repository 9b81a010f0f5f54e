"""Kubernetes object bodies for one DaskCluster, as dask-gateway's KubeController makes them.

Mirrors ``dask_gateway_server/backends/kubernetes/controller.py`` (2026.3.0): ``make_secret``,
``make_pod`` (scheduler only -- our workers are HTCondor jobs), ``make_service``,
``make_ingressroute``, ``make_ingressroutetcp``, plus the ``ownerReferences`` its ``create_*``
methods add.  Two deliberate differences, both invisible to the API server's result:

* the Service ports say ``targetPort`` (the wire name); upstream writes ``target_port``, which its
  asyncio client serialises through the model to the same ``targetPort``;
* the Service body carries ``apiVersion``/``kind`` like every other body here.

Every function is pure: the random parts (TLS keypair, API token) are arguments.
"""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

from dask_gateway_server import __version__ as GATEWAY_VERSION

GROUP = "gateway.dask.org"
VERSION = "v1alpha1"
PLURAL = "daskclusters"
TRAEFIK_GROUP = "traefik.io"
TRAEFIK_VERSION = "v1alpha1"

LABEL_INSTANCE = "gateway.dask.org/instance"
LABEL_CLUSTER = "gateway.dask.org/cluster"
LABEL_COMPONENT = "app.kubernetes.io/component"
SCHEDULER = "dask-scheduler"
WORKER = "dask-worker"
CREDENTIALS = "credentials"

#: KubeBackendAndControllerMixin.common_labels default
COMMON_LABELS = {
    "app.kubernetes.io/name": "dask-gateway",
    "app.kubernetes.io/version": GATEWAY_VERSION.replace("+", "_"),
}

CREDENTIALS_MOUNT = "/etc/dask-credentials/"
SCHEDULER_PORT, DASHBOARD_PORT, API_PORT = 8786, 8787, 8788


def secret_name(name: str) -> str:
    return f"dask-credentials-{name}"


def scheduler_pod_name(name: str) -> str:
    return f"dask-scheduler-{name}"


def service_name(name: str) -> str:
    return f"dask-{name}"


def route_name(name: str) -> str:
    return f"dask-{name}"


def labels(instance: str, name: str, component: str | None = None) -> dict[str, str]:
    out = dict(COMMON_LABELS)
    out.update({LABEL_INSTANCE: instance, LABEL_CLUSTER: name})
    if component:
        out[LABEL_COMPONENT] = component
    return out


def worker_selector(instance: str, name: str) -> str:
    """``status.selector`` (the CRD's scale labelSelectorPath): the labels dask-gateway gives a cluster's
    worker pods, as a label selector string. Our workers are HTCondor jobs, so no pod matches it."""
    return f"{LABEL_COMPONENT}={WORKER},{LABEL_CLUSTER}={name},{LABEL_INSTANCE}={instance}"


def owner_reference(obj: dict) -> dict:
    """The ownerReference upstream puts on children (no controller/blockOwnerDeletion flags)."""
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"]}


def _child(api_version: str, kind: str, *, instance: str, cluster: str, component: str, name: str,
           annotations: dict | None, owner: dict, **content) -> dict:
    """An object of the DaskCluster `cluster`: our labels for `component`, the annotations, its `name` and
    its ownerReference (`owner`), then `content` (``data``, ``spec``)."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "labels": labels(instance, cluster, component),
            "annotations": dict(annotations or {}),
            "name": name,
            "ownerReferences": [owner],
        },
        **content,
    }


def merge_json_objects(a: dict, b: dict | None) -> dict:
    """dask-gateway's merge: dicts merge recursively (``b`` wins), lists append; inputs not mutated."""
    if not b:
        return a
    a = a.copy()
    for key, b_val in b.items():
        if key in a:
            a_val = a[key]
            if isinstance(a_val, dict) and isinstance(b_val, dict):
                a[key] = merge_json_objects(a_val, b_val)
            elif isinstance(a_val, list) and isinstance(b_val, list):
                a[key] = a_val + b_val
            else:
                a[key] = b_val
        else:
            a[key] = b_val
    return a


def k8s_timestamp(now: float) -> str:
    """Seconds since the epoch as Kubernetes writes timestamps (``completionTime``)."""
    return datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_k8s_timestamp(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


# ---- the credentials Secret -------------------------------------------------------------------

def secret_body(cluster: dict, instance: str, tls_cert: bytes, tls_key: bytes, api_token: str,
                annotations: dict | None = None) -> dict:
    """``make_secret`` + the DaskCluster ownerReference (``create_secret_if_not_exists``)."""
    name = cluster["metadata"]["name"]
    return _child("v1", "Secret", instance=instance, cluster=name, component=CREDENTIALS, name=secret_name(name),
                  annotations=annotations, owner=owner_reference(cluster), data={
                      "dask.crt": base64.b64encode(tls_cert).decode(),
                      "dask.pem": base64.b64encode(tls_key).decode(),
                      "api-token": base64.b64encode(api_token.encode()).decode(),
                  })


# ---- the scheduler Pod ------------------------------------------------------------------------

def scheduler_env(namespace: str, name: str, config: dict, api_url: str) -> list[dict]:
    """``KubeController.get_env``: the user's environment, then the gateway and TLS variables."""
    env = dict(config.get("environment") or {})
    env.update({
        "DASK_GATEWAY_API_URL": api_url,
        "DASK_GATEWAY_CLUSTER_NAME": f"{namespace}.{name}",
        "DASK_GATEWAY_API_TOKEN": CREDENTIALS_MOUNT + "api-token",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": CREDENTIALS_MOUNT + "dask.crt",
        "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT": CREDENTIALS_MOUNT + "dask.crt",
        "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY": CREDENTIALS_MOUNT + "dask.pem",
        "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT": CREDENTIALS_MOUNT + "dask.crt",
        "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY": CREDENTIALS_MOUNT + "dask.pem",
    })
    return [{"name": k, "value": v} for k, v in env.items()]


def scheduler_command(config: dict) -> list[str]:
    """``KubeController.get_scheduler_command``: fixed ports, heartbeats only on changes."""
    return list(config.get("scheduler_cmd") or ["dask-scheduler"]) + [
        "--protocol", "tls",
        "--host", "",
        "--port", str(SCHEDULER_PORT),
        "--dashboard-address", f":{DASHBOARD_PORT}",
        "--dg-api-address", f":{API_PORT}",
        "--preload", "dask_gateway.scheduler_preload",
        "--dg-heartbeat-period", "0",
        "--dg-adaptive-period", str(config.get("adaptive_period", 3.0)),
        "--dg-idle-timeout", str(config.get("idle_timeout", 0.0)),
    ]


def scheduler_pod_body(cluster: dict, instance: str, api_url: str, annotations: dict | None = None) -> dict:
    """``make_pod(namespace, name, config)`` for the scheduler + the DaskCluster ownerReference."""
    meta = cluster["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    config: dict[str, Any] = cluster.get("spec", {}).get("config") or {}
    mem_req = config.get("scheduler_memory", 2 * 2**30)
    mem_lim = config.get("scheduler_memory_limit", mem_req)
    cpu_req = float(config.get("scheduler_cores", 1))
    cpu_lim = float(config.get("scheduler_cores_limit", cpu_req))
    container = {
        "name": SCHEDULER,
        "image": config.get("image", "daskgateway/dask-gateway:latest"),
        "args": scheduler_command(config),
        "env": scheduler_env(namespace, name, config, api_url),
        "resources": {
            "requests": {"cpu": f"{cpu_req:.3f}", "memory": str(mem_req)},
            "limits": {"cpu": f"{cpu_lim:.3f}", "memory": str(mem_lim)},
        },
        "volumeMounts": [{"name": "dask-credentials", "mountPath": CREDENTIALS_MOUNT, "readOnly": True}],
        "ports": [
            {"name": "scheduler", "containerPort": SCHEDULER_PORT},
            {"name": "dashboard", "containerPort": DASHBOARD_PORT},
            {"name": "api", "containerPort": API_PORT},
        ],
    }
    if config.get("image_pull_policy"):
        container["imagePullPolicy"] = config["image_pull_policy"]
    container["readinessProbe"] = {
        "httpGet": {"port": API_PORT, "path": "/api/health"},
        "periodSeconds": 5,
        "failureThreshold": 3,
    }
    container = merge_json_objects(container, config.get("scheduler_extra_container_config"))

    pod_annotations = dict(annotations or {})
    pod_annotations.update(config.get("scheduler_extra_pod_annotations") or {})
    pod_labels = labels(instance, name, SCHEDULER)
    pod_labels.update(config.get("scheduler_extra_pod_labels") or {})

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": pod_labels, "annotations": pod_annotations},
        "spec": {
            "containers": [container],
            "volumes": [{"name": "dask-credentials", "secret": {"secretName": secret_name(name)}}],
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
        },
    }
    if config.get("image_pull_secrets"):
        pod["spec"]["imagePullSecrets"] = config["image_pull_secrets"]
    pod["spec"] = merge_json_objects(pod["spec"], config.get("scheduler_extra_pod_config"))
    pod["metadata"]["name"] = scheduler_pod_name(name)
    pod["metadata"]["ownerReferences"] = [owner_reference(cluster)]
    return pod


# ---- the scheduler Service and the traefik routes ---------------------------------------------

def service_body(cluster: dict, instance: str, scheduler_pod: dict, annotations: dict | None = None) -> dict:
    """``make_service`` + the scheduler-pod ownerReference (``create_service_if_not_exists``)."""
    name = cluster["metadata"]["name"]
    return _child("v1", "Service", instance=instance, cluster=name, component=SCHEDULER, name=service_name(name),
                  annotations=annotations, owner=pod_owner_reference(scheduler_pod), spec={
                      "clusterIP": "None",
                      "selector": {LABEL_CLUSTER: name, LABEL_INSTANCE: instance, LABEL_COMPONENT: SCHEDULER},
                      "ports": [
                          {"name": "scheduler", "port": SCHEDULER_PORT, "targetPort": "scheduler"},
                          {"name": "dashboard", "port": DASHBOARD_PORT, "targetPort": "dashboard"},
                          {"name": "api", "port": API_PORT, "targetPort": "api"},
                      ],
                  })


def pod_owner_reference(pod: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}


def _route(kind: str, cluster: dict, instance: str, scheduler_pod: dict, annotations: dict | None,
           entrypoint: str, route: dict, **spec) -> dict:
    """A Traefik route of `kind` to the cluster's Service, owned by its scheduler pod."""
    name = cluster["metadata"]["name"]
    return _child(f"{TRAEFIK_GROUP}/{TRAEFIK_VERSION}", kind, instance=instance, cluster=name, component=SCHEDULER,
                  name=route_name(name), annotations=annotations, owner=pod_owner_reference(scheduler_pod),
                  spec={"entryPoints": [entrypoint], "routes": [route], **spec})


def ingressroute_body(cluster: dict, instance: str, scheduler_pod: dict, *, proxy_prefix: str = "",
                      entrypoint: str = "web", middlewares: list | None = None,
                      annotations: dict | None = None) -> dict:
    """``make_ingressroute``: the dashboard under ``<prefix>/clusters/<namespace>.<name>/``."""
    namespace, name = cluster["metadata"]["namespace"], cluster["metadata"]["name"]
    route = f"{proxy_prefix}/clusters/{namespace}.{name}/"
    return _route("IngressRoute", cluster, instance, scheduler_pod, annotations, entrypoint, {
        "kind": "Rule",
        "match": f"PathPrefix(`{route}`)",
        "services": [{"name": service_name(name), "namespace": namespace, "port": DASHBOARD_PORT}],
        "middlewares": list(middlewares or []),
    })


def ingressroutetcp_body(cluster: dict, instance: str, scheduler_pod: dict, *, entrypoint: str = "tcp",
                         annotations: dict | None = None) -> dict:
    """``make_ingressroutetcp``: TLS passthrough by SNI ``daskgateway-<namespace>.<name>``."""
    namespace, name = cluster["metadata"]["namespace"], cluster["metadata"]["name"]
    return _route("IngressRouteTCP", cluster, instance, scheduler_pod, annotations, entrypoint, {
        "match": f"HostSNI(`daskgateway-{namespace}.{name}`)",
        "services": [{"name": service_name(name), "namespace": namespace, "port": SCHEDULER_PORT}],
    }, tls={"passthrough": True})
