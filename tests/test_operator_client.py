"""The client layer at the kubernetes client's HTTP boundary, and apply() on a real Redis broker.

No API server can run here, so ``FakeKube`` stands in for the urllib3 pool manager under the real
kubernetes client: every CoreV1Api/CustomObjectsApi/CoordinationV1Api method runs for real
(parameter checks, model serialisation, URL and content type), and the fake records each HTTP
request and answers like a tiny API server (objects by path, 409 on existing names, 404 on missing
ones, JSON patches, resourceVersions, list/watch).  Tasks are enqueued with tasks.api on a real
redis-server and read back from the queue lists.
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import pwd
import stat
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from k8s_operator import bodies
from k8s_operator.client import API_CALLS, JSON_PATCH, CredentialsFiles, KubeClient, TaskBackend, apply
from k8s_operator.handlers import DELETE_TASK, FINALIZER, SCALE_TASK, Ref, reconcile
from k8s_operator.naming import htcondor_cluster_name
from tests.test_operator_handlers import (EXPECTED_OPTIONS, EXPECTED_POD, EXPECTED_SECRET,
                                          EXPECTED_SERVICE, running_status)
from tests.test_operator_objects import (NAME, NAMESPACE, T0, broker, daskcluster, fixed_credentials,  # noqa: F401
                                         operator_config, queued, scheduler_pod)

OURS = htcondor_cluster_name(NAMESPACE, NAME)
HOST = "https://k8s.invalid:6443"


# ---- the fake at the HTTP boundary ------------------------------------------------------------------

def parse_path(path: str) -> tuple[str, str, str | None, str, str | None, str | None]:
    """(group, version, namespace, resource, name, subresource) of an API path."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    else:
        group, version, rest = parts[1], parts[2], parts[3:]
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    return group, version, namespace, rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None


def rbac_of(request: dict) -> tuple[str, str, str]:
    """The (API group, resource[/subresource], verb) an HTTP request needs, as Kubernetes authorizes it."""
    group, _v, _ns, resource, name, sub = parse_path(request["path"])
    method = request["method"]
    if method == "GET":
        verb = "get" if name else ("watch" if request["query"].get("watch") == ["true"] else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return group, f"{resource}/{sub}" if sub else resource, verb


class FakeResponse:
    """What urllib3.PoolManager.request(..., preload_content=False) returns, as far as the client reads it."""

    def __init__(self, status: int, payload, lines: list[bytes] | None = None):
        self.status = status
        self.reason = {200: "OK", 201: "Created", 404: "Not Found", 409: "Conflict", 410: "Gone",
                       422: "Unprocessable Entity"}.get(status, "")
        self.headers = {"content-type": "application/json"}
        self.data = json.dumps(payload).encode() if payload is not None else b""
        self._lines = lines

    def stream(self, amt=None, decode_content=False):
        if self._lines is not None and not self._lines:
            time.sleep(0.05)  # a watch with nothing to say is held open by the server for a while
        yield from (self._lines or [])

    def getheaders(self):
        return self.headers

    def getheader(self, name, default=None):
        return self.headers.get(name, default)

    def close(self):
        pass

    def release_conn(self):
        pass


def _pointer(doc, path: str):
    keys = [k.replace("~1", "/").replace("~0", "~") for k in path.lstrip("/").split("/")]
    for k in keys[:-1]:
        doc = doc[int(k)] if isinstance(doc, list) else doc[k]
    return doc, keys[-1]


def json_patch(doc: dict, ops: list[dict]) -> dict:
    doc = copy.deepcopy(doc)
    for op in ops:
        parent, key = _pointer(doc, op["path"])
        if op["op"] == "test":
            value = parent[int(key)] if isinstance(parent, list) else parent.get(key)
            if value != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                parent.insert(len(parent) if key == "-" else int(key), op["value"])
            else:
                parent[key] = op["value"]
        elif op["op"] == "remove":
            del parent[int(key) if isinstance(parent, list) else key]
    return doc


class FakeKube:
    """A recording, answering stand-in for urllib3's pool manager (the kubernetes client's HTTP layer)."""

    def __init__(self):
        self.objects: dict[tuple, dict] = {}  # (group, namespace, resource, name) -> object
        self.requests: list[dict] = []
        self.fail: dict[tuple[str, str], int] = {}  # (method, path) -> status to answer once
        self.watch_lines: dict[tuple[str, str], list[list[bytes]]] = {}  # (group, resource) -> per watch call
        self._rv = itertools.count(5000)
        self._uid = itertools.count(1)

    # plumbing --------------------------------------------------------------------------------------
    def client(self) -> KubeClient:
        conf = k8s.Configuration(host=HOST)
        api_client = k8s.ApiClient(conf)
        api_client.rest_client.pool_manager = self
        return KubeClient(api_client)

    def put(self, obj: dict, group: str, resource: str) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        meta.setdefault("uid", f"uid-{next(self._uid)}")
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[(group, meta.get("namespace"), resource, meta["name"])] = obj
        return obj

    def get(self, group: str, namespace: str, resource: str, name: str) -> dict | None:
        return self.objects.get((group, namespace, resource, name))

    def requests_without_reads(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests if r["method"] != "GET"]

    # the HTTP side ---------------------------------------------------------------------------------
    def request(self, method, url, body=None, fields=None, timeout=None, headers=None, preload_content=False,
                **_kw):
        split = urlsplit(url)
        assert f"{split.scheme}://{split.netloc}" == HOST
        req = {"method": method, "path": split.path, "query": parse_qs(split.query),
               "content_type": (headers or {}).get("Content-Type"),
               "body": json.loads(body) if body else None}
        self.requests.append(req)
        status = self.fail.pop((method, split.path), None)
        if status:
            return FakeResponse(status, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status,
                                         "reason": "Injected", "message": "injected failure"})
        return self.answer(req)

    def status(self, code: int, reason: str) -> FakeResponse:
        return FakeResponse(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                   "reason": reason, "message": reason})

    def answer(self, req: dict) -> FakeResponse:
        group, version, ns, resource, name, sub = parse_path(req["path"])
        key = (group, ns, resource, name)
        method = req["method"]
        if method == "GET" and name is None:
            if req["query"].get("watch") == ["true"]:
                calls = self.watch_lines.get((group, resource)) or [[]]
                lines = calls.pop(0) if len(calls) > 1 else calls[0]
                return FakeResponse(200, None, lines)
            selector = dict(kv.split("=") for kv in req["query"].get("labelSelector", [""])[0].split(",") if kv)
            items = [o for (g, n, r, _), o in sorted(self.objects.items())
                     if g == group and r == resource and (ns is None or n == ns)
                     and all(o["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
            return FakeResponse(200, {"apiVersion": f"{group}/{version}".lstrip("/"), "kind": "List",
                                      "metadata": {"resourceVersion": str(next(self._rv))}, "items": items})
        if method == "POST":
            obj = copy.deepcopy(req["body"])
            key = (group, ns, resource, obj["metadata"]["name"])
            if key in self.objects:
                return self.status(409, "AlreadyExists")
            obj["metadata"]["namespace"] = ns
            return FakeResponse(201, self.put(obj, group, resource))
        if key not in self.objects:
            return self.status(404, "NotFound")
        current = self.objects[key]
        if method == "GET":
            return FakeResponse(200, current)
        if method == "DELETE":
            del self.objects[key]
            if resource in ("pods", "services"):  # the API server answers these with the object
                return FakeResponse(200, current)
            return FakeResponse(200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200})
        if method == "PUT":
            if req["body"]["metadata"].get("resourceVersion") not in (None, current["metadata"]["resourceVersion"]):
                return self.status(409, "Conflict")
            return FakeResponse(200, self.put(req["body"], group, resource))
        if method == "PATCH":
            assert req["content_type"] == JSON_PATCH, req
            try:
                patched = json_patch(current, req["body"])
            except (ValueError, KeyError, IndexError):
                return self.status(422, "Invalid")
            if sub == "status":  # the status subresource changes nothing else
                patched = {**current, "status": patched.get("status")}
            else:
                patched["status"] = current.get("status")
                if patched["status"] is None:
                    del patched["status"]
            return FakeResponse(200, self.put(patched, group, resource))
        raise AssertionError(f"unexpected {method} {req['path']}")


@pytest.fixture
def kube():
    return FakeKube()


def cluster_in(kube: FakeKube, obj: dict) -> dict:
    return kube.put(obj, bodies.GROUP, "daskclusters")


def stored_cluster(kube: FakeKube) -> dict:
    return kube.get(bodies.GROUP, NAMESPACE, "daskclusters", NAME)


# ---- every call is the request its table row says ------------------------------------------------------

def watch_once(kc: KubeClient, what: str) -> list:
    func, args, kwargs = kc.watch_args(what, "gateway.dask.org/instance=dask-gateway")
    return list(watch.Watch().stream(func, *args, timeout_seconds=1, **kwargs))


def exercise_every_call(kc: KubeClient, kube: FakeKube) -> dict[str, dict]:
    """Call each API_CALLS operation once; returns operation -> the HTTP request it made."""
    cluster = cluster_in(kube, daskcluster(finalizers=[FINALIZER]))
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "htdask-operator", "namespace": "htdask"},
             "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}
    calls = {
        "list_clusters": lambda: kc.list_clusters("gateway.dask.org/instance=dask-gateway"),
        "watch_clusters": lambda: watch_once(kc, "clusters"),
        "patch_cluster": lambda: kc.add_finalizer(cluster),
        "patch_cluster_status": lambda: kc.patch_status(cluster, {"phase": "Pending"}),
        "list_pods": lambda: kc.list_scheduler_pods("a=b"),
        "watch_pods": lambda: watch_once(kc, "pods"),
        "create_pod": lambda: kc.create(NAMESPACE, EXPECTED_POD),
        "create_service": lambda: kc.create(NAMESPACE, EXPECTED_SERVICE),
        "create_secret": lambda: kc.create(NAMESPACE, EXPECTED_SECRET),
        "read_secret": lambda: kc.read_secret_data(NAMESPACE, EXPECTED_SECRET["metadata"]["name"]),
        "create_ingressroute": lambda: kc.create(NAMESPACE, bodies.ingressroute_body(cluster, "i", scheduler_pod())),
        "create_ingressroutetcp": lambda: kc.create(NAMESPACE,
                                                    bodies.ingressroutetcp_body(cluster, "i", scheduler_pod())),
        "delete_ingressroute": lambda: kc.delete(NAMESPACE, Ref("IngressRoute", f"dask-{NAME}")),
        "delete_ingressroutetcp": lambda: kc.delete(NAMESPACE, Ref("IngressRouteTCP", f"dask-{NAME}")),
        "delete_service": lambda: kc.delete(NAMESPACE, Ref("Service", f"dask-{NAME}")),
        "delete_pod": lambda: kc.delete(NAMESPACE, Ref("Pod", f"dask-scheduler-{NAME}")),
        "delete_secret": lambda: kc.delete(NAMESPACE, Ref("Secret", f"dask-credentials-{NAME}")),
        "delete_cluster": lambda: kc.delete_cluster_object(NAMESPACE, NAME),
        "read_lease": lambda: kc.read_lease("htdask", "htdask-operator"),
        "create_lease": lambda: kc.create_lease("htdask", lease),
        "replace_lease": lambda: kc.replace_lease("htdask", "htdask-operator", lease),
    }
    assert set(calls) == set(API_CALLS), "every operation in the table is exercised"
    made = {}
    for op, call in calls.items():
        before = len(kube.requests)
        call()
        assert len(kube.requests) == before + 1, f"{op} made {len(kube.requests) - before} requests"
        made[op] = kube.requests[-1]
    return made


def test_every_api_call_is_the_request_its_table_row_says(kube):
    made = exercise_every_call(kube.client(), kube)
    for op, request in made.items():
        assert rbac_of(request) == API_CALLS[op][2:], op


# ---- bodies on the wire ----------------------------------------------------------------------------------

def test_created_objects_go_on_the_wire_exactly_as_built(kube):
    kc = kube.client()
    for body, path in ((EXPECTED_SECRET, f"/api/v1/namespaces/{NAMESPACE}/secrets"),
                       (EXPECTED_POD, f"/api/v1/namespaces/{NAMESPACE}/pods"),
                       (EXPECTED_SERVICE, f"/api/v1/namespaces/{NAMESPACE}/services")):
        created = kc.create(NAMESPACE, body)
        req = kube.requests[-1]
        assert (req["method"], req["path"]) == ("POST", path)
        assert req["content_type"] in (None, "application/json"), "a JSON body (the client leaves the type unset)"
        assert req["body"] == body, f"{body['kind']} changed on its way through the {body['kind']} model"
        assert created["metadata"]["uid"] and created["metadata"]["namespace"] == NAMESPACE
    assert kc.create(NAMESPACE, EXPECTED_POD) is None, "409: it already exists, not an error"
    assert kc.delete(NAMESPACE, Ref("Pod", EXPECTED_POD["metadata"]["name"])) is True
    assert kc.delete(NAMESPACE, Ref("Pod", EXPECTED_POD["metadata"]["name"])) is False, "404: already gone"


def test_status_and_finalizer_patches_are_json_patches(kube):
    kc = kube.client()
    cluster = cluster_in(kube, daskcluster(finalizers=["someone-else"]))
    cluster = kc.add_finalizer(cluster)
    assert kube.requests[-1]["body"] == [{"op": "test", "path": "/metadata/finalizers", "value": ["someone-else"]},
                                         {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}]
    assert cluster["metadata"]["finalizers"] == ["someone-else", FINALIZER]
    cluster = kc.patch_status(cluster, {"phase": "Pending"})
    req = kube.requests[-1]
    assert req["path"] == f"/apis/gateway.dask.org/v1alpha1/namespaces/{NAMESPACE}/daskclusters/{NAME}/status"
    assert req["content_type"] == JSON_PATCH
    assert req["body"] == [{"op": "add", "path": "/status", "value": {"phase": "Pending"}}]
    cluster = kc.remove_finalizer(cluster)
    assert kube.requests[-1]["body"] == [{"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
                                         {"op": "remove", "path": "/metadata/finalizers/1"}]
    assert cluster["metadata"]["finalizers"] == ["someone-else"] and cluster["status"] == {"phase": "Pending"}
    fresh = cluster_in(kube, daskcluster())
    kc.add_finalizer(fresh)
    assert kube.requests[-1]["body"][1:] == [{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]
    assert kube.requests[-1]["body"][0]["op"] == "test"


# ---- apply(): Kubernetes calls and Celery messages --------------------------------------------------------

def test_new_cluster_to_running_creates_objects_then_enqueues_the_scale(kube, broker, service_user):
    kc, backend, cfg = kube.client(), TaskBackend(broker), operator_config()
    cluster = cluster_in(kube, daskcluster(replicas=3, username=service_user))
    owner = backend.resolve_owner(service_user)
    actions = reconcile(cluster, cfg=cfg, now=T0, owner=owner, credentials=fixed_credentials)
    applied = apply(kc, backend, cluster, actions)
    p = f"/api/v1/namespaces/{NAMESPACE}"
    c = f"/apis/gateway.dask.org/v1alpha1/namespaces/{NAMESPACE}/daskclusters/{NAME}"
    assert kube.requests_without_reads() == [("PATCH", c), ("POST", f"{p}/secrets"), ("POST", f"{p}/pods"),
                                             ("PATCH", f"{c}/status")]
    assert kube.get("", NAMESPACE, "secrets", f"dask-credentials-{NAME}")["data"] == EXPECTED_SECRET["data"]
    assert applied.cluster["metadata"]["finalizers"] == [FINALIZER]
    assert applied.cluster["status"]["phase"] == "Pending"
    assert broker.r.llen("local") == 0, "nothing is enqueued before the scheduler is ready"

    # the scheduler pod comes up and gets ready
    pod = kube.get("", NAMESPACE, "pods", f"dask-scheduler-{NAME}")
    ready = {**scheduler_pod("ready"), "metadata": pod["metadata"]}
    kube.requests.clear()
    cluster = applied.cluster
    applied = apply(kc, backend, cluster, reconcile(cluster, cfg=cfg, now=T0, owner=owner,
                                                    scheduler_pod=ready, summary=backend.summary(OURS)))
    assert kube.get("", NAMESPACE, "services", f"dask-{NAME}")["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": f"dask-scheduler-{NAME}", "uid": pod["metadata"]["uid"]}]
    assert kube.get("traefik.io", NAMESPACE, "ingressroutes", f"dask-{NAME}") is not None
    assert kube.get("traefik.io", NAMESPACE, "ingressroutetcps", f"dask-{NAME}") is not None
    assert applied.cluster["status"]["phase"] == "Running"
    assert applied.cluster["status"]["htcondor"]["requested"] == 3

    msgs = queued(broker, "local")
    assert [(m["task"], m["routing_key"], m["args"]) for m in msgs] == [(SCALE_TASK, "local", [])]
    assert msgs[0]["kwargs"] == {"cluster": OURS, "n": 3, "owner": service_user, "options": EXPECTED_OPTIONS,
                                 "names": None, "seq": 1}


def test_replicas_from_a_heartbeat_reach_the_schedd_queue_of_the_cluster(kube, broker, service_user):
    kc, backend, cfg = kube.client(), TaskBackend(broker), operator_config()
    cluster = cluster_in(kube, daskcluster(finalizers=[FINALIZER], status=running_status(requested=3), replicas=3,
                                           options={"schedd": "schedd-b"}))
    # KubeBackend.on_cluster_heartbeat: [{"op": "add", "path": "/spec/replicas", "value": count}]
    cluster = kube.put(json_patch(cluster, [{"op": "add", "path": "/spec/replicas", "value": 7}]),
                       bodies.GROUP, "daskclusters")
    apply(kc, backend, cluster, reconcile(cluster, cfg=cfg, now=T0, owner=service_user,
                                          scheduler_pod=scheduler_pod(), summary=backend.summary(OURS)))
    assert broker.r.llen("local") == 0
    msgs = queued(broker, "schedd-b")
    assert [(m["task"], m["kwargs"]["cluster"], m["kwargs"]["n"]) for m in msgs] == [(SCALE_TASK, OURS, 7)]
    assert stored_cluster(kube)["status"]["htcondor"]["requested"] == 7


def test_stop_enqueues_delete_removes_objects_and_finalizer(kube, broker):
    kc, backend, cfg = kube.client(), TaskBackend(broker), operator_config()
    for body in (EXPECTED_SECRET, EXPECTED_POD, EXPECTED_SERVICE):
        kc.create(NAMESPACE, body)
    cluster = cluster_in(kube, daskcluster(finalizers=[FINALIZER], status=running_status(requested=3), replicas=3))
    # KubeBackend.stop_cluster: [{"op": "add", "path": "/spec/active", "value": False}]
    cluster = kube.put(json_patch(cluster, [{"op": "add", "path": "/spec/active", "value": False}]),
                       bodies.GROUP, "daskclusters")
    kube.requests.clear()
    apply(kc, backend, cluster, reconcile(cluster, cfg=cfg, now=T0, scheduler_pod=scheduler_pod()))
    msgs = queued(broker, "local")
    assert [(m["task"], m["kwargs"]) for m in msgs] == [(DELETE_TASK, {"cluster": OURS, "seq": 1})]
    p = f"/api/v1/namespaces/{NAMESPACE}"
    t = f"/apis/traefik.io/v1alpha1/namespaces/{NAMESPACE}"
    c = f"/apis/gateway.dask.org/v1alpha1/namespaces/{NAMESPACE}/daskclusters/{NAME}"
    assert kube.requests_without_reads() == [
        ("DELETE", f"{t}/ingressroutes/dask-{NAME}"), ("DELETE", f"{t}/ingressroutetcps/dask-{NAME}"),
        ("DELETE", f"{p}/services/dask-{NAME}"), ("DELETE", f"{p}/pods/dask-scheduler-{NAME}"),
        ("DELETE", f"{p}/secrets/dask-credentials-{NAME}"), ("PATCH", f"{c}/status"), ("PATCH", c)]
    left = [k for k in kube.objects if k[2] != "daskclusters"]
    assert left == [], "no pod, service or secret is left"
    final = stored_cluster(kube)
    assert final["status"]["phase"] == "Stopped" and final["metadata"]["finalizers"] == []


def test_a_failed_step_raises_and_leaves_the_status_unwritten(kube, broker):
    kc, backend, cfg = kube.client(), TaskBackend(broker), operator_config()
    cluster = cluster_in(kube, daskcluster())
    kube.fail[("POST", f"/api/v1/namespaces/{NAMESPACE}/pods")] = 403
    with pytest.raises(k8s.exceptions.ApiException) as e:
        apply(kc, backend, cluster, reconcile(cluster, cfg=cfg, now=T0, owner="alice", credentials=fixed_credentials))
    assert e.value.status == 403
    assert "status" not in stored_cluster(kube), "the status only records what was done"


def test_enqueue_failure_is_raised_not_swallowed(kube, broker, redis_server, service_user):
    import redis
    kc, backend, cfg = kube.client(), TaskBackend(broker), operator_config()
    cluster = cluster_in(kube, daskcluster(finalizers=[FINALIZER], status=running_status(), replicas=2))
    redis_server.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        apply(kc, backend, cluster, reconcile(cluster, cfg=cfg, now=T0, owner=service_user,
                                              scheduler_pod=scheduler_pod()))
    assert stored_cluster(kube)["status"] == running_status(), "requested is only recorded after the enqueue"


# ---- credentials for the jobs -------------------------------------------------------------------------------

def test_credentials_are_written_for_the_jobs_from_the_secret(kube, broker, tmp_path, service_user):
    kc, backend = kube.client(), TaskBackend(broker)
    cfg = operator_config(credentials_dir=str(tmp_path / "creds"))
    kc.create(NAMESPACE, EXPECTED_SECRET)
    cluster = cluster_in(kube, daskcluster(finalizers=[FINALIZER], status=running_status(), replicas=2))
    files = CredentialsFiles(cfg.credentials_dir)
    apply(kc, backend, cluster, reconcile(cluster, cfg=cfg, now=T0, owner=service_user,
                                          scheduler_pod=scheduler_pod()), files)
    d = tmp_path / "creds" / OURS
    cert, key, token = fixed_credentials(NAME)
    assert (d / "dask.crt").read_bytes() == cert and (d / "dask.pem").read_bytes() == key
    assert (d / "api-token").read_text() == token
    assert stat.S_IMODE(os.stat(d / "dask.pem").st_mode) == 0o600 and stat.S_IMODE(os.stat(d).st_mode) == 0o700
    owner = pwd.getpwnam(service_user)
    assert (os.stat(d / "dask.pem").st_uid, os.stat(d).st_gid) == (owner.pw_uid, owner.pw_gid), "the job's user reads it"
    assert queued(broker, "local")[0]["kwargs"]["options"]["tls_key"] == str(d / "dask.pem")
    cluster = cluster_in(kube, {**stored_cluster(kube), "spec": {**stored_cluster(kube)["spec"], "active": False}})
    apply(kc, backend, cluster, reconcile(cluster, cfg=cfg, now=T0, scheduler_pod=scheduler_pod()), files)
    assert not d.exists()


# ---- owners --------------------------------------------------------------------------------------------------

def test_owner_from_username_and_email(broker, tmp_path, monkeypatch, service_user):
    from workers.validation import ValidationError
    backend = TaskBackend(broker)
    assert backend.resolve_owner(service_user) == service_user
    users = tmp_path / "users.yaml"
    users.write_text(f"Alice.Smith@Example.org: {service_user}\nroot@example.org: root\n")
    monkeypatch.setenv("USER_MAP_FILE", str(users))
    assert backend.resolve_owner("alice.smith@example.org") == service_user
    for refused in ("nobody@example.org", "root@example.org", "root", "no-such-user-here", "-rf"):
        with pytest.raises(ValidationError):
            backend.resolve_owner(refused)
