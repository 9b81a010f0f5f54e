"""The thin layer between Actions and the outside: kubernetes-client calls and tasks.api.

``API_CALLS`` lists every Kubernetes API call the operator makes, with the RBAC (API group,
resource, verb) it needs: ours go through ``KubeClient.call(op, ...)``; kopf's (list/watch of
DaskClusters and scheduler pods, the finalizer patch) and ``kubernetes.leaderelection``'s (the
Lease) are listed with the client method that makes the same request.  The table is the single
source for ``deploy/k8s/rbac.yaml``: tests/test_k8s_manifests.py checks that the RBAC grants every
row and nothing else, and tests/test_operator_e2e.py checks, in the API server emulator's request
log, that every request the running operator makes is one of them.

Bodies for built-in kinds are sent as the kubernetes client's own models (``V1Pod``, ``V1Service``,
``V1Secret``), built from our dicts with ``ApiClient.deserialize``; custom objects (traefik
routes) are sent as dicts.  The status is written with a JSON patch (``application/json-patch+json``),
as dask-gateway's controller writes it.
"""
from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
from dataclasses import dataclass
from typing import Any, Iterable

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from htdask.k8s_operator import bodies
from htdask.k8s_operator.handlers import DELETE_TASK, SCALE_TASK, Actions, Credentials, Ref, TaskRequest

log = logging.getLogger(__name__)

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"

#: (API object, API group, resource) -> {operation: client method}.  Nothing calls the API otherwise.
_CALLS_BY_RESOURCE: dict[tuple[str, str, str], dict[str, str]] = {
    # kopf lists (and watches, below) DaskClusters in all namespaces and patches the finalizer (a JSON patch
    # with a resourceVersion test); the rest is ours (KubeClient)
    ("custom", bodies.GROUP, "daskclusters"): {
        "list_clusters": "list_cluster_custom_object", "patch_cluster": "patch_namespaced_custom_object",
        "delete_cluster": "delete_namespaced_custom_object"},
    ("custom", bodies.GROUP, "daskclusters/status"): {
        "patch_cluster_status": "patch_namespaced_custom_object_status"},
    ("core", "", "pods"): {"list_pods": "list_pod_for_all_namespaces",  # kopf, as the watch below
                           "create_pod": "create_namespaced_pod", "delete_pod": "delete_namespaced_pod"},
    # kubernetes.leaderelection's LeaseLock
    ("coordination", "coordination.k8s.io", "leases"): {
        "read_lease": "read_namespaced_lease", "create_lease": "create_namespaced_lease",
        "replace_lease": "replace_namespaced_lease"},
    ("core", "", "services"): {"create_service": "create_namespaced_service",
                               "delete_service": "delete_namespaced_service"},
    ("core", "", "secrets"): {"create_secret": "create_namespaced_secret", "read_secret": "read_namespaced_secret",
                              "delete_secret": "delete_namespaced_secret"},
    ("custom", bodies.TRAEFIK_GROUP, "ingressroutes"): {
        "create_ingressroute": "create_namespaced_custom_object",
        "delete_ingressroute": "delete_namespaced_custom_object"},
    ("custom", bodies.TRAEFIK_GROUP, "ingressroutetcps"): {
        "create_ingressroutetcp": "create_namespaced_custom_object",
        "delete_ingressroutetcp": "delete_namespaced_custom_object"},
}
#: kopf's watches: operation -> the list operation whose method it calls with watch=True (RBAC verb `watch`)
_WATCHES = {"watch_clusters": "list_clusters", "watch_pods": "list_pods"}
#: the RBAC verb of a client method is its first word (the client names methods after the API action),
#: but for these two
_ACTION_VERBS = {"read": "get", "replace": "update"}


def _api_calls() -> dict[str, tuple[str, str, str, str, str]]:
    calls = {}
    for (api, group, resource), ops in _CALLS_BY_RESOURCE.items():
        for op, method in ops.items():
            action = method.split("_", 1)[0]
            calls[op] = (api, method, group, resource, _ACTION_VERBS.get(action, action))
    for op, listing in _WATCHES.items():
        calls[op] = (*calls[listing][:4], "watch")
    return calls


#: operation -> (API object, method, API group, resource, verb): every call, with the RBAC it needs.
API_CALLS: dict[str, tuple[str, str, str, str, str]] = _api_calls()

#: operations on the Lease, which lives in the operator's own namespace (granted by a Role there)
NAMESPACED_OPS = {"read_lease", "create_lease", "replace_lease"}

_CORE_KINDS = {"Pod": "pod", "Service": "service", "Secret": "secret"}
_TRAEFIK_KINDS = {"IngressRoute": "ingressroute", "IngressRouteTCP": "ingressroutetcp"}
_PLURALS = {"ingressroute": "ingressroutes", "ingressroutetcp": "ingressroutetcps"}


def cluster_log(logger: logging.Logger, namespace: str, name: str) -> logging.LoggerAdapter:
    """A logger whose every line names the namespace and the DaskCluster."""
    return ClusterLog(logger, {"namespace": namespace, "cluster": name})


class ClusterLog(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        kwargs.setdefault("extra", {}).update(self.extra)
        return f"namespace={self.extra['namespace']} cluster={self.extra['cluster']}: {msg}", kwargs


class KubeClient:
    """The kubernetes-client calls the operator makes (and only those)."""

    def __init__(self, api_client: k8s.ApiClient):
        self.api_client = api_client
        self._apis = {"core": k8s.CoreV1Api(api_client), "custom": k8s.CustomObjectsApi(api_client)}

    # ---- the one door to the API ----------------------------------------------------------------
    def method(self, op: str):
        api, method, *_ = API_CALLS[op]
        return getattr(self._apis[api], method)

    def call(self, op: str, *args, **kwargs):
        return self.method(op)(*args, **kwargs)

    def to_model(self, body: dict, kind: str | None = None):
        """Our dict as the kubernetes client's model (``V1Pod`` ...), as the API would return it."""
        return self.api_client.deserialize(json.dumps(body), f"V1{kind or body['kind']}", "application/json")

    def to_dict(self, obj) -> dict:
        return obj if isinstance(obj, dict) else self.api_client.sanitize_for_serialization(obj)

    # ---- DaskClusters (kopf lists, watches and patches the finalizer) ----------------------------
    def patch_status(self, cluster: dict, status: dict) -> dict | None:
        meta = cluster["metadata"]
        try:
            return self.call("patch_cluster_status", bodies.GROUP, bodies.VERSION, meta["namespace"],
                             bodies.PLURAL, meta["name"], [{"op": "add", "path": "/status", "value": status}],
                             _content_type=JSON_PATCH)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def report_failure(self, cluster: dict, message: str) -> None:
        """``status.message``: why the last attempt failed (a merge patch, so it needs no status yet)."""
        meta = cluster["metadata"]
        if ((cluster.get("status") or {}).get("message")) == message:
            return
        try:
            self.call("patch_cluster_status", bodies.GROUP, bodies.VERSION, meta["namespace"], bodies.PLURAL,
                      meta["name"], {"status": {"message": message}}, _content_type=MERGE_PATCH)
        except ApiException as e:
            log.debug("status.message not written: %s", e.status)

    def delete_cluster_object(self, namespace: str, name: str) -> None:
        try:
            self.call("delete_cluster", bodies.GROUP, bodies.VERSION, namespace, bodies.PLURAL, name)
        except ApiException as e:
            if e.status != 404:
                raise

    # ---- the objects of one cluster ----------------------------------------------------------------
    def create(self, namespace: str, body: dict) -> dict | None:
        """Create; None when it already exists (409), else the created object as a dict."""
        kind = body["kind"]
        try:
            if kind in _CORE_KINDS:
                res = self.call(f"create_{_CORE_KINDS[kind]}", namespace, self.to_model(body))
            else:
                op = _TRAEFIK_KINDS[kind]
                res = self.call(f"create_{op}", bodies.TRAEFIK_GROUP, bodies.TRAEFIK_VERSION, namespace,
                                _PLURALS[op], body)
        except ApiException as e:
            if e.status == 409:
                return None
            raise
        return self.to_dict(res)

    def delete(self, namespace: str, ref: Ref) -> bool:
        """Delete; False when it was already gone (404)."""
        try:
            if ref.kind in _CORE_KINDS:
                # The answer is the object or a Status depending on kind and server version; it is
                # not deserialised (the client would insist on the model), only its HTTP status counts.
                resp = self.call(f"delete_{_CORE_KINDS[ref.kind]}", ref.name, namespace, _preload_content=False)
                resp.release_conn()
            else:
                op = _TRAEFIK_KINDS[ref.kind]
                self.call(f"delete_{op}", bodies.TRAEFIK_GROUP, bodies.TRAEFIK_VERSION, namespace,
                          _PLURALS[op], ref.name)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """The Secret's data (base64 values); never logged."""
        return dict(self.call("read_secret", name, namespace).data or {})

# ---- the Redis side ---------------------------------------------------------------------------------

class TaskBackend:
    """tasks.api for the operator: enqueue, the summary row of a cluster, owner look-up."""

    def __init__(self, store=None):
        from htdask.state import Store, connect
        from tasks.config import settings
        s = settings()
        self.store = store or Store(connect(s.redis_url), settings=s)

    def enqueue(self, req: TaskRequest):
        from tasks import api
        if req.task == SCALE_TASK:
            from htdask.state.managed import set_manager
            enqueued = api.enqueue_scale(self.store, req.request or req.cluster, req.n, owner=req.owner,
                                         options=req.options, schedd=req.schedd,
                                         limits=req.limits)
            set_manager(self.store, req.cluster, "operator")  # the CLI refuses to scale it without --force
            return enqueued
        if req.task == DELETE_TASK:
            return api.enqueue_delete(self.store, req.cluster)
        raise ValueError(f"unknown task {req.task!r}")

    def summary(self, cluster: str) -> dict | None:
        from tasks import api
        rows = api.status_rows(self.store, cluster)
        return rows[0] if rows else None

    def resolve_owner(self, username: str) -> str:
        """spec.username -> Unix user (e-mails through workers.identity), checked as tasks.api checks
        it when enqueueing (it must exist here with uid >= MIN_SUBMIT_UID and not be denied), so a
        refused owner fails the cluster at once instead of failing every enqueue."""
        from workers.identity import resolve_owner
        return resolve_owner(username, self.store, check=True)


# ---- credentials for the worker jobs ---------------------------------------------------------------

class CredentialsFiles:
    """``<dir>/<cluster>/{dask.crt,dask.pem,api-token}``: the cluster's Secret on the submit node, which
    its jobs get by HTCondor's file transfer (htdask/domain/jobfiles.py; execute hosts need not see ``<dir>``).
    Mode 0600 (directory 0700),
    owned by the cluster's owner when this process may chown and the owner exists here."""

    FILES = ("dask.crt", "dask.pem", "api-token")

    def __init__(self, directory: str):
        self.directory = directory

    def path(self, cluster: str) -> str:
        return os.path.join(self.directory, cluster)

    def present(self, cluster: str) -> bool:
        return all(os.path.exists(os.path.join(self.path(cluster), f)) for f in self.FILES)

    def write(self, cluster: str, data: dict[str, str], owner: str | None, clog) -> None:
        import base64
        d = self.path(cluster)
        os.makedirs(d, mode=0o700, exist_ok=True)
        ids = self._ids(owner)
        for name in self.FILES:
            tmp = os.path.join(d, f".{name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(data[name]))
            if ids:
                os.chown(tmp, *ids)
            os.replace(tmp, os.path.join(d, name))
        if ids:
            os.chown(d, *ids)
        else:
            clog.warning("credentials in %s stay owned by uid %d: owner %s is unknown here or we may not chown",
                         d, os.geteuid(), owner)
        clog.info("credentials written to %s", d)

    def remove(self, cluster: str) -> None:
        shutil.rmtree(self.path(cluster), ignore_errors=True)

    @staticmethod
    def _ids(owner: str | None) -> tuple[int, int] | None:
        if not owner or os.geteuid() != 0:
            return None
        try:
            pw = pwd.getpwnam(owner)
        except KeyError:
            return None
        return pw.pw_uid, pw.pw_gid


@dataclass
class Applied:
    """What apply() learnt: the DaskCluster as the API now has it (None: unchanged or gone), the
    objects it created, and whether the status was written."""
    cluster: dict | None
    created: list[dict]
    status_written: bool


def apply(kube: KubeClient, backend: TaskBackend, cluster: dict, actions: Actions,
          credentials: CredentialsFiles | None = None) -> Applied:
    """Carry the Actions out in their documented order, except the finalizer, which kopf adds and
    removes (htdask/k8s_operator/main.py).  Any failure raises (the operator retries the whole reconcile
    later); every step is idempotent, so a retry repeats nothing harmful."""
    ns, name = actions.namespace, actions.name
    clog = cluster_log(log, ns, name)
    current = cluster
    latest = None
    for note in actions.notes:
        clog.info("%s", note)
    created = []
    for body in actions.create:
        obj = kube.create(ns, body)
        clog.info("%s %s %s", body["kind"], body["metadata"]["name"], "created" if obj else "already exists")
        if obj:
            created.append(obj)
    if actions.write_credentials and credentials is not None:
        _write_credentials(kube, credentials, ns, actions.write_credentials, clog)
    quota_notes = []  # a scale cut down by the owner's quota (QUOTA_MODE=grant; refused: enqueue raises)
    for req in actions.enqueue:
        done = backend.enqueue(req)
        clog.info("%s enqueued for HTCondor cluster %s%s on queue %s (task %s)", req.task, req.cluster,
                  f" (n={req.n}, owner {req.owner})" if req.task == SCALE_TASK else "", done.queue, done.task_id)
        if getattr(done, "note", ""):
            quota_notes.append(f"{done.granted} of {req.n} workers granted: {done.note}")
            clog.warning("%s", quota_notes[-1])
    for ref in actions.delete:
        gone = kube.delete(ns, ref)
        clog.info("%s %s %s", ref.kind, ref.name, "deleted" if gone else "already gone")
    if actions.remove_credentials and credentials is not None:
        credentials.remove(actions.remove_credentials)
    if quota_notes and actions.status is not None:
        actions.status["message"] = "; ".join(quota_notes)
    elif quota_notes:
        kube.report_failure(current, "; ".join(quota_notes))
    if actions.status is not None:
        res = kube.patch_status(current, actions.status)
        if res is not None:
            latest = current = res
        clog.info("status: phase %s, htcondor %s", actions.status.get("phase"),
                  json.dumps(actions.status.get("htcondor", {}), sort_keys=True))
    if actions.delete_object:
        kube.delete_cluster_object(ns, name)
        clog.info("DaskCluster deleted")
    return Applied(latest, created, actions.status is not None)


def _write_credentials(kube: KubeClient, files: CredentialsFiles, namespace: str, cred: Credentials, clog) -> None:
    if files.present(cred.cluster):
        return
    data = kube.read_secret_data(namespace, cred.secret)
    missing = [f for f in CredentialsFiles.FILES if f not in data]
    if missing:
        raise RuntimeError(f"secret {cred.secret} lacks {', '.join(missing)}")
    files.write(cred.cluster, data, cred.owner, clog)


def describe_error(e: Exception) -> str:
    """One line for status.message and the log: an API error's code, reason and message."""
    if isinstance(e, ApiException):
        try:
            message = json.loads(e.body or "{}").get("message") or ""
        except (ValueError, AttributeError):
            message = ""
        return f"{e.status} {e.reason}" + (f": {message}" if message else "")
    return f"{type(e).__name__}: {e}"


def rbac_requirements(ops: Iterable[str] | None = None) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) for the given operations (default: all of API_CALLS)."""
    return {API_CALLS[op][2:] for op in (ops if ops is not None else API_CALLS)}
