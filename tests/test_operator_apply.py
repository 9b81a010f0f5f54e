"""The client layer (``KubeClient``, ``apply``) against the API server emulator, tasks on a real Redis.

Every KubeClient call goes through the real kubernetes client to tests/k8s_emulator.py, whose
request log shows the request and the RBAC it needs; tasks are enqueued with tasks.api on a real
redis-server and read back from the queue lists.  (The whole operator runs in test_operator_e2e.py.)
"""
from __future__ import annotations

import os
import pwd
import stat

import pytest
from kubernetes import client as k8s

from htdask.k8s_operator import bodies
from htdask.k8s_operator.client import API_CALLS, JSON_PATCH, CredentialsFiles, KubeClient, TaskBackend, apply
from htdask.k8s_operator.handlers import DELETE_TASK, FINALIZER, SCALE_TASK, Ref, reconcile
from htdask.k8s_operator.naming import htcondor_cluster_name
from tests.conftest import needs
from tests.k8s_emulator import Emulator
from tests.test_operator_handlers import (EXPECTED_OPTIONS, EXPECTED_POD, EXPECTED_SECRET,
                                          EXPECTED_SERVICE, running_status)
from tests.test_operator_objects import (NAME, NAMESPACE, T0, broker, daskcluster, fixed_credentials,  # noqa: F401
                                         operator_config, queued, scheduler_pod)

OURS = htcondor_cluster_name(NAMESPACE, NAME)
VERSIONS = {"": "v1", bodies.GROUP: bodies.VERSION, bodies.TRAEFIK_GROUP: bodies.TRAEFIK_VERSION}


class Kube:
    """The emulator seen as the tests below use it: objects by (group, namespace, resource, name)
    and the requests our client made (reads included)."""

    def __init__(self, api: Emulator):
        self.api = api
        self.start = 0

    def client(self) -> KubeClient:
        return KubeClient(self.api.client())

    def put(self, obj: dict, group: str, resource: str) -> dict:
        return self.api.put_raw(group, VERSIONS[group], resource, obj["metadata"].get("namespace"), obj)

    def get(self, group: str, namespace: str, resource: str, name: str) -> dict | None:
        return self.api.get(group, resource, namespace, name)

    @property
    def requests(self) -> list[dict]:
        return [{"method": c.method, "path": c.path, "content_type": c.content_type or None, "body": c.body,
                 "rbac": (c.group, c.resource, c.verb)} for c in self.api.calls()[self.start:]]

    def clear(self) -> None:
        self.start = len(self.api.calls())

    def requests_without_reads(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests if r["method"] != "GET"]

    def fail(self, method: str, path: str, status: int) -> None:
        self.api.fail(method, f"^{path}$", status, times=1)

    def left(self) -> list[tuple[str, str]]:
        return [(o["kind"], o["metadata"]["name"]) for g, r in (("", "pods"), ("", "services"), ("", "secrets"))
                for o in self.api.objects(g, r)]


@pytest.fixture
@needs("k8s")
def kube():
    with Emulator() as api:
        yield Kube(api)


def cluster_in(kube: Kube, obj: dict) -> dict:
    return kube.put(obj, bodies.GROUP, "daskclusters")


def stored_cluster(kube: Kube) -> dict:
    return kube.get(bodies.GROUP, NAMESPACE, "daskclusters", NAME)


def json_patch(kube: Kube, ops: list[dict]) -> dict:
    """A JSON patch of the DaskCluster, as dask-gateway's KubeBackend sends it."""
    return k8s.CustomObjectsApi(kube.api.client()).patch_namespaced_custom_object(
        bodies.GROUP, bodies.VERSION, NAMESPACE, bodies.PLURAL, NAME, ops, _content_type=JSON_PATCH)


# ---- every call of ours is the request its table row says -------------------------------------------

def test_every_call_of_ours_is_the_request_its_table_row_says(kube):
    kc = kube.client()
    cluster = cluster_in(kube, daskcluster(finalizers=[FINALIZER]))
    calls = {
        "patch_cluster_status": lambda: kc.patch_status(cluster, {"phase": "Pending"}),
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
    }
    theirs = {"list_clusters", "watch_clusters", "patch_cluster", "list_pods", "watch_pods", "read_lease",
              "create_lease", "replace_lease"}  # kopf's and kubernetes.leaderelection's: test_operator_e2e.py
    assert set(calls) | theirs == set(API_CALLS), "every operation in the table is exercised somewhere"
    for op, call in calls.items():
        kube.clear()
        call()
        assert [r["rbac"] for r in kube.requests] == [API_CALLS[op][2:]], op
    kube.clear()
    kc.report_failure(stored_cluster(kube) or cluster, "reconcile failed: 500 x")
    assert [r["rbac"] for r in kube.requests] == [API_CALLS["patch_cluster_status"][2:]]


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


def test_status_patches_are_json_patches_on_the_status_subresource(kube):
    kc = kube.client()
    cluster = cluster_in(kube, daskcluster(finalizers=["someone-else"]))
    cluster = kc.patch_status(cluster, {"phase": "Pending"})
    req = kube.requests[-1]
    assert req["path"] == f"/apis/gateway.dask.org/v1alpha1/namespaces/{NAMESPACE}/daskclusters/{NAME}/status"
    assert req["content_type"] == JSON_PATCH
    assert req["body"] == [{"op": "add", "path": "/status", "value": {"phase": "Pending"}}]
    assert cluster["status"] == {"phase": "Pending"} and cluster["metadata"]["finalizers"] == ["someone-else"]


# ---- apply(): Kubernetes calls and Celery messages --------------------------------------------------------

def test_new_cluster_to_running_creates_objects_then_enqueues_the_scale(kube, broker, service_user):
    kc, backend, cfg = kube.client(), TaskBackend(broker), operator_config()
    cluster = cluster_in(kube, daskcluster(replicas=3, username=service_user))
    owner = backend.resolve_owner(service_user)
    actions = reconcile(cluster, cfg=cfg, now=T0, owner=owner, credentials=fixed_credentials)
    applied = apply(kc, backend, cluster, actions)
    p = f"/api/v1/namespaces/{NAMESPACE}"
    c = f"/apis/gateway.dask.org/v1alpha1/namespaces/{NAMESPACE}/daskclusters/{NAME}"
    assert kube.requests_without_reads() == [("POST", f"{p}/secrets"), ("POST", f"{p}/pods"),
                                             ("PATCH", f"{c}/status")], "the finalizer is kopf's"
    assert kube.get("", NAMESPACE, "secrets", f"dask-credentials-{NAME}")["data"] == EXPECTED_SECRET["data"]
    assert applied.cluster["status"]["phase"] == "Pending"
    assert broker.r.llen("local") == 0, "nothing is enqueued before the scheduler is ready"

    # the scheduler pod comes up and gets ready
    pod = kube.get("", NAMESPACE, "pods", f"dask-scheduler-{NAME}")
    ready = {**scheduler_pod("ready"), "metadata": pod["metadata"]}
    kube.clear()
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
                                 "seq": 1}


def test_replicas_from_a_heartbeat_reach_the_schedd_queue_of_the_cluster(kube, broker, service_user):
    kc, backend, cfg = kube.client(), TaskBackend(broker), operator_config()
    cluster = cluster_in(kube, daskcluster(finalizers=[FINALIZER], status=running_status(requested=3), replicas=3,
                                           options={"schedd": "schedd-b"}))
    # KubeBackend.on_cluster_heartbeat: [{"op": "add", "path": "/spec/replicas", "value": count}]
    cluster = json_patch(kube, [{"op": "add", "path": "/spec/replicas", "value": 7}])
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
    cluster = json_patch(kube, [{"op": "add", "path": "/spec/active", "value": False}])
    kube.clear()
    apply(kc, backend, cluster, reconcile(cluster, cfg=cfg, now=T0, scheduler_pod=scheduler_pod()))
    msgs = queued(broker, "local")
    assert [(m["task"], m["kwargs"]) for m in msgs] == [(DELETE_TASK, {"cluster": OURS, "seq": 1})]
    p = f"/api/v1/namespaces/{NAMESPACE}"
    t = f"/apis/traefik.io/v1alpha1/namespaces/{NAMESPACE}"
    c = f"/apis/gateway.dask.org/v1alpha1/namespaces/{NAMESPACE}/daskclusters/{NAME}"
    assert kube.requests_without_reads() == [
        ("DELETE", f"{t}/ingressroutes/dask-{NAME}"), ("DELETE", f"{t}/ingressroutetcps/dask-{NAME}"),
        ("DELETE", f"{p}/services/dask-{NAME}"), ("DELETE", f"{p}/pods/dask-scheduler-{NAME}"),
        ("DELETE", f"{p}/secrets/dask-credentials-{NAME}"), ("PATCH", f"{c}/status")]
    left = kube.left()
    assert left == [], "no pod, service or secret is left"
    final = stored_cluster(kube)
    assert final["status"]["phase"] == "Stopped" and "idle" not in final["status"]["htcondor"]


def test_a_failed_step_raises_and_leaves_the_status_unwritten(kube, broker):
    kc, backend, cfg = kube.client(), TaskBackend(broker), operator_config()
    cluster = cluster_in(kube, daskcluster())
    kube.fail("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", 403)
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


def test_a_scale_past_the_owners_quota_is_refused_or_granted_with_the_note_in_status_message(
        kube, broker, service_user, monkeypatch):
    from htdask.state.quota import QuotaExceeded
    kc, backend, cfg = kube.client(), TaskBackend(broker), operator_config()
    monkeypatch.setenv("QUOTA_MAX_WORKERS", "2")
    cluster = cluster_in(kube, daskcluster(finalizers=[FINALIZER], status=running_status(), replicas=3))
    with pytest.raises(QuotaExceeded, match=f"refused: workers quota of owner {service_user} is 2"):
        apply(kc, backend, cluster, reconcile(cluster, cfg=cfg, now=T0, owner=service_user,
                                              scheduler_pod=scheduler_pod()))
    assert stored_cluster(kube)["status"] == running_status() and broker.r.llen("local") == 0
    monkeypatch.setenv("QUOTA_MODE", "grant")
    apply(kc, backend, cluster, reconcile(cluster, cfg=cfg, now=T0, owner=service_user,
                                          scheduler_pod=scheduler_pod()))
    assert stored_cluster(kube)["status"]["message"] == (
        f"2 of 3 workers granted: workers quota of owner {service_user} is 2: 0 in use by its other clusters, "
        f"1 per worker; 2 of the 3 workers asked fit")
    assert [m["kwargs"]["n"] for m in queued(broker, "local")] == [2]


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
    from htdask.domain.validation import ValidationError
    backend = TaskBackend(broker)
    assert backend.resolve_owner(service_user) == service_user
    users = tmp_path / "users.yaml"
    users.write_text(f"Alice.Smith@Example.org: {service_user}\nroot@example.org: root\n")
    monkeypatch.setenv("USER_MAP_FILE", str(users))
    assert backend.resolve_owner("alice.smith@example.org") == service_user
    for refused in ("nobody@example.org", "root@example.org", "root", "no-such-user-here", "-rf"):
        with pytest.raises(ValidationError):
            backend.resolve_owner(refused)
