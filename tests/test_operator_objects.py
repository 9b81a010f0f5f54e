"""The objects the operator tests feed in, and the check that they are what dask-gateway writes.

``daskcluster()`` is a DaskCluster exactly as dask-gateway 2026.3.0's KubeBackend.make_cluster_object
writes it for user alice (KubeClusterConfig with the image, commands, 2 cores / 4 GiB per worker
and one environment variable below), plus the fields the API server adds on create.  The test at
the bottom regenerates it with the real KubeBackend when ``kubernetes_asyncio`` (dask-gateway-server's
``kubernetes`` extra, which its backend module imports) is installed.

Also here: the broker fixture that points the Celery app at a test redis-server, and helpers that
read the kombu messages of a Redis queue list.
"""
from __future__ import annotations

import base64
import copy
import json
import threading

import pytest

from htdask.k8s_operator.config import OperatorConfig

NAMESPACE = "dask-users"
NAME = "b75241596d2541abaf558ef67ccd2bab"
UID = "6b1e4a7e-1c1f-4f0e-9a51-0d3b2f6c9e11"
POD_UID = "0f5c2d9a-77a2-4d6e-8a0b-3d1f26c4b8e5"
INSTANCE = "dask-gateway"
API_URL = "http://api-dask-gateway.dask-gateway:8000/api"
VERSION_LABEL = "2026.3.0"
T0 = 1_780_000_000.0  # "now" in the handler tests (2026-05-28T20:26:40Z)

CONFIG = {
    "adaptive_period": 3.0, "cluster_max_cores": None, "cluster_max_memory": None, "cluster_max_workers": None,
    "environment": {"OMP_NUM_THREADS": "1"}, "idle_timeout": 0.0, "image": "ghcr.io/dask/dask-gateway:2026.3.0",
    "image_pull_policy": None, "image_pull_secrets": [], "namespace": NAMESPACE,
    "scheduler_cmd": ["dask", "scheduler"], "scheduler_cores": 1.0, "scheduler_cores_limit": 1.0,
    "scheduler_extra_container_config": {}, "scheduler_extra_pod_annotations": {},
    "scheduler_extra_pod_config": {}, "scheduler_extra_pod_labels": {}, "scheduler_memory": 2147483648,
    "scheduler_memory_limit": 2147483648, "worker_cmd": ["dask", "worker"], "worker_cores": 2.0,
    "worker_cores_limit": 2.0, "worker_extra_container_config": {}, "worker_extra_pod_annotations": {},
    "worker_extra_pod_config": {}, "worker_extra_pod_labels": {}, "worker_memory": 4294967296,
    "worker_memory_limit": 4294967296, "worker_threads": 2,
}

CLUSTER_LABELS = {
    "app.kubernetes.io/name": "dask-gateway",
    "app.kubernetes.io/version": VERSION_LABEL,
    "gateway.dask.org/instance": INSTANCE,
    "gateway.dask.org/cluster": NAME,
}


def daskcluster(*, name: str = NAME, namespace: str = NAMESPACE, replicas: int | None = None,
                active: bool | None = None, status: dict | None = None, finalizers: list | None = None,
                username: str = "alice", deleting: bool = False, rv: str = "1001", options: dict | None = None) -> dict:
    """A DaskCluster as KubeBackend writes it (+ server fields); replicas/active as its heartbeat and
    stop_cluster patch them in; status/finalizers as an operator left them."""
    labels = dict(CLUSTER_LABELS, **{"gateway.dask.org/cluster": name})
    obj = {
        "apiVersion": "gateway.dask.org/v1alpha1",
        "kind": "DaskCluster",
        "metadata": {
            "name": name, "namespace": namespace, "uid": UID, "resourceVersion": rv, "generation": 1,
            "creationTimestamp": "2026-05-28T20:20:00Z", "labels": labels, "annotations": {},
        },
        "spec": {"username": username, "options": {"worker_cores": 2, "worker_memory": 4, **(options or {})},
                 "config": copy.deepcopy(CONFIG)},
    }
    if replicas is not None:
        obj["spec"]["replicas"] = replicas
    if active is not None:
        obj["spec"]["active"] = active
    if status is not None:
        obj["status"] = copy.deepcopy(status)
    if finalizers is not None:
        obj["metadata"]["finalizers"] = list(finalizers)
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-05-28T20:30:00Z"
        obj["metadata"]["deletionGracePeriodSeconds"] = 0
    return obj


def scheduler_pod(state: str = "ready", name: str = NAME, namespace: str = NAMESPACE) -> dict:
    """The scheduler pod as the API returns it: ``pending``, ``running`` (not ready yet), ``ready``,
    ``terminated``."""
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"dask-scheduler-{name}", "namespace": namespace, "uid": POD_UID,
                     "resourceVersion": "2001",
                     "labels": {**CLUSTER_LABELS, "gateway.dask.org/cluster": name,
                                "app.kubernetes.io/component": "dask-scheduler"}},
        "spec": {"containers": [{"name": "dask-scheduler", "image": CONFIG["image"]}]},
        "status": {"phase": "Pending"},
    }
    if state == "pending":
        return pod
    cs = {"name": "dask-scheduler", "ready": state == "ready", "restartCount": 0, "image": CONFIG["image"],
          "imageID": "", "state": {"running": {"startedAt": "2026-05-28T20:21:00Z"}}}
    if state == "terminated":
        pod["status"]["phase"] = "Failed"
        cs["state"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
    else:
        pod["status"]["phase"] = "Running"
    pod["status"]["containerStatuses"] = [cs]
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True" if state == "ready" else "False"}]
    return pod


def operator_config(**changes) -> OperatorConfig:
    values = dict(instance=INSTANCE, api_url=API_URL, namespace="htdask", status_interval=10.0,
                  resync_seconds=15.0)
    values.update(changes)
    return OperatorConfig(**values)


def fixed_credentials(name: str) -> tuple[bytes, bytes, str]:
    return (f"-----BEGIN CERTIFICATE-----\ncert of {name}\n-----END CERTIFICATE-----\n".encode(),
            f"-----BEGIN PRIVATE KEY-----\nkey of {name}\n-----END PRIVATE KEY-----\n".encode(),
            "0123456789abcdef0123456789abcdef")


def b64(s: str | bytes) -> str:
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


# ---- Redis broker ---------------------------------------------------------------------------------

def _point_celery_at(app, url: str) -> None:
    """Point the (already imported) Celery app at another broker/backend: its producer pool and
    result backend are cached from the first use, so they are dropped too."""
    app.conf.broker_url = url
    app.conf.result_backend = url
    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
    app._backend_cache = None
    app._local = threading.local()


@pytest.fixture
def broker(redis_server, monkeypatch):
    """A real redis-server as broker, backend and state store of tasks.api (queue `local`)."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("SCHEDD_NAME", "local")
    monkeypatch.delenv("SCHEDDS", raising=False)
    from tasks import context
    context.reset()
    from htdask.state import Store, connect
    from tasks.app import app
    saved = (app.conf.broker_url, app.conf.result_backend)
    _point_celery_at(app, redis_server.url)
    store = Store(connect(redis_server.url))
    yield store
    _point_celery_at(app, saved[0])
    app.conf.result_backend = saved[1]
    context.reset()


def request_fields(kwargs: dict) -> dict:
    """A task message's typed request (`{"request": <JSON>}`, htdask.domain.request; a scale request's also
    `handled_by`: the round its enqueue joined) as its fields, less its kind, schedd (the queue tells it)
    and unset ones; other kwargs as they are."""
    if "request" not in kwargs or not set(kwargs) <= {"request", "handled_by"}:
        return kwargs
    fields = json.loads(kwargs["request"])
    return {k: v for k, v in fields.items() if k not in ("kind", "schedd") and v is not None}


def queued(store, queue: str) -> list[dict]:
    """The kombu messages waiting in a Redis queue list, oldest first: task name and [args, kwargs]."""
    out = []
    for raw in reversed(store.r.lrange(queue, 0, -1)):
        msg = json.loads(raw)
        args, kwargs, _embed = json.loads(base64.b64decode(msg["body"]))
        kwargs = request_fields(kwargs)
        out.append({"task": msg["headers"]["task"], "args": args, "kwargs": kwargs, "id": msg["headers"]["id"],
                    "routing_key": msg["properties"]["delivery_info"]["routing_key"]})
    return out


# ---- the fixture is what dask-gateway writes ------------------------------------------------------

def test_daskcluster_fixture_is_what_kubebackend_writes():
    pytest.importorskip("kubernetes_asyncio", reason="dask-gateway's KubeBackend module imports kubernetes_asyncio "
                                                     "(dask-gateway-server[kubernetes])")
    import dask_gateway_server.backends.kubernetes.backend as kb
    backend = kb.KubeBackend(gateway_instance=INSTANCE, api_url=API_URL)
    config = kb.KubeClusterConfig(image="ghcr.io/dask/dask-gateway:2026.3.0", scheduler_cmd=["dask", "scheduler"],
                                  worker_cmd=["dask", "worker"], worker_cores=2, worker_memory="4 G",
                                  environment={"OMP_NUM_THREADS": "1"}, namespace=NAMESPACE)
    written = backend.make_cluster_object("alice", {"worker_cores": 2, "worker_memory": 4}, config)
    name = written["metadata"]["name"]
    assert len(name) == 32 and int(name, 16) >= 0, "dask-gateway names clusters uuid4().hex"
    expected = daskcluster(name=name)
    server_fields = ("namespace", "uid", "resourceVersion", "generation", "creationTimestamp")
    for f in server_fields:
        expected["metadata"].pop(f)
    assert written == expected


def test_scheduler_pod_fixture_is_a_valid_pod():
    from kubernetes import client as k8s
    api = k8s.ApiClient()
    for state in ("pending", "running", "ready", "terminated"):
        pod = scheduler_pod(state)
        model = api.deserialize(json.dumps(pod), "V1Pod", "application/json")
        # the model turns timestamps into datetimes, written back with +00:00 instead of Z
        expected = json.loads(json.dumps(pod).replace(':00Z"', ':00+00:00"'))
        assert api.sanitize_for_serialization(model) == expected, state
