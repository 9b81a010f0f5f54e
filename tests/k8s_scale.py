"""What the API server does with a CRD's ``scale`` subresource and ``additionalPrinterColumns``, for
tests/k8s_emulator.py (a mixin of its ``ApiServer``), read from the CRD as the API server reads it
(deploy/k8s/crd.yaml for DaskCluster).

* ``GET|PUT|PATCH .../<plural>/<name>/scale``: an ``autoscaling/v1`` ``Scale`` (apiextensions-apiserver's
  ``ScaleREST``, pkg/registry/customresource/etcd.go): ``spec.replicas`` from ``specReplicasPath``,
  ``status.replicas`` from ``statusReplicasPath`` (0 when absent), ``status.selector`` from
  ``labelSelectorPath`` ("" when absent); a GET of an object without the spec path is a 500; PUT takes a
  Scale (409 on a stale ``metadata.resourceVersion``), PATCH a merge or JSON patch of the Scale; both write
  only the spec path, through the object's own update (so ``status`` is kept and ``generation`` bumped,
  and watchers see a MODIFIED event). ``spec.replicas`` must be an integer >= 0 (422).
* discovery lists ``<plural>/scale`` as group ``autoscaling``, version ``v1``, kind ``Scale`` (as the
  server does: kubectl's scale client resolves the Scale kind from it).
* ``Accept: application/json;as=Table;g=meta.k8s.io;v=v1`` on a get or list answers a ``meta.k8s.io/v1``
  ``Table`` whose columns are ``Name`` and the CRD's printer columns (server-side printing: what
  ``kubectl get`` shows), each cell the value at the column's simple JSON path (None when absent), a
  ``date`` column as the age the server prints (apimachinery's ``duration.HumanDuration``).

Not emulated: schema validation and defaulting (a ``default`` in the CRD's schema is not applied).
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path

import jsonpatch
import yaml

CRD_FILE = Path(__file__).resolve().parent.parent / "deploy" / "k8s" / "crd.yaml"
INVALID = -2147483648  # the server's "spec replicas not set" marker


@dataclass(frozen=True)
class CrdView:
    """The parts of one served CRD version that the API server's scale and table code use."""
    kind: str
    spec_replicas_path: str | None = None
    status_replicas_path: str | None = None
    label_selector_path: str | None = None
    columns: list = field(default_factory=list)


def crd_views(*files: Path) -> dict[tuple[str, str, str], CrdView]:
    """(group, version, plural) -> CrdView for every served version of the CRDs in ``files``."""
    out = {}
    for f in files or (CRD_FILE,):
        for crd in yaml.safe_load_all(Path(f).read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for v in spec["versions"]:
                scale = (v.get("subresources") or {}).get("scale") or {}
                out[(spec["group"], v["name"], spec["names"]["plural"])] = CrdView(
                    spec["names"]["kind"], scale.get("specReplicasPath"), scale.get("statusReplicasPath"),
                    scale.get("labelSelectorPath"), list(v.get("additionalPrinterColumns") or ()))
    return out


def get_path(obj, path: str):
    """(value, found) at a simple JSON path (``.spec.replicas``)."""
    cur = obj
    for part in path.lstrip(".").split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None, False
        cur = cur[part]
    return cur, True


def set_path(obj: dict, path: str, value) -> None:
    *parents, last = path.lstrip(".").split(".")
    cur = obj
    for part in parents:
        cur = cur.setdefault(part, {})
    cur[last] = value


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration (what ``kubectl get`` shows as AGE)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m, h = s // 60, s // 3600
    if m < 10:
        return f"{m}m" if s % 60 == 0 else f"{m}m{s % 60}s"
    if m < 180:
        return f"{m}m"
    if h < 8:
        return f"{h}h" if m % 60 == 0 else f"{h}h{m % 60}m"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d" if h % 24 == 0 else f"{h // 24}d{h % 24}h"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        y, d = h // 24 // 365, h // 24 % 365
        return f"{y}y" if d == 0 else f"{y}y{d}d"
    return f"{h // 24 // 365}y"


def cell(obj: dict, column: dict):
    """One printer column's cell for ``obj``, as the API server's table convertor renders it."""
    value, found = get_path(obj, column["jsonPath"])
    if not found or value is None:
        return None
    if column["type"] == "date":
        try:
            then = datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return None
        return human_duration((datetime.now(timezone.utc) - then).total_seconds())
    return value


def scale_of(obj: dict, view: CrdView) -> tuple[dict, bool]:
    """The Scale of ``obj`` and whether its spec replicas path was set (scaleFromCustomResource)."""
    spec, found = get_path(obj, view.spec_replicas_path)
    status, status_found = get_path(obj, view.status_replicas_path)
    selector, _ = get_path(obj, view.label_selector_path) if view.label_selector_path else ("", True)
    meta = obj["metadata"]
    return {"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": int(spec) if found else 0},
            "status": {"replicas": int(status) if status_found else 0, "selector": selector or ""}}, found


class ScaleSubresource:
    """Mixin for the emulator's ApiServer: needs its ``lookup``, ``write``, ``error`` and ``ApiError``."""

    crds: dict = {}

    def scale_view(self, key) -> CrdView | None:
        view = self.crds.get(key)
        return view if view is not None and view.spec_replicas_path else None

    async def scale(self, request, key, verb: str, api_error):
        """(status, body) of a request to ``.../scale``; raises ``api_error`` as the server answers."""
        view = self.scale_view(key)
        old = self.lookup(key, request)
        current, found = scale_of(old, view)
        if verb == "get":
            if not found:
                raise api_error(500, "InternalError", f'the spec replicas field "{view.spec_replicas_path}" '
                                                      "does not exist")
            return 200, current
        if not found:
            current["spec"]["replicas"] = INVALID
        if verb == "update":
            new = request.data if isinstance(request.data, dict) else {}
            rv = (new.get("metadata") or {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise api_error(409, "Conflict", "the object has been modified; please apply your changes to the "
                                                 "latest version and try again")
        elif verb == "patch":
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
            try:
                if ctype == "application/json-patch+json":
                    new = jsonpatch.apply_patch(current, request.data)
                elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                    from tests.k8s_emulator import merge_patch
                    new = merge_patch(current, request.data)
                else:
                    raise api_error(415, "UnsupportedMediaType", f"the patch type {ctype!r} is not supported")
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise api_error(422, "Invalid", f"the JSON patch does not apply: {e}") from None
        else:
            raise api_error(405, "MethodNotAllowed", f"{verb} is not allowed on the scale subresource")
        replicas = (new.get("spec") or {}).get("replicas")
        if replicas == INVALID:
            raise api_error(400, "BadRequest", f'the spec replicas field "{view.spec_replicas_path}" cannot be empty')
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise api_error(422, "Invalid", f"Scale.autoscaling \"{old['metadata']['name']}\" is invalid: "
                                            f"spec.replicas: Invalid value: {replicas!r}: must be greater than or "
                                            "equal to 0")
        updated = copy.deepcopy(old)
        set_path(updated, view.spec_replicas_path, replicas)
        _, body = await self.write(key, request, old, updated)
        return 200, scale_of(body, view)[0]

    # ---- discovery and server-side printing -----------------------------------------------------------
    async def _serve_version(self, request):
        payload = await super()._serve_version(request)
        names = {r["name"] for r in payload.get("resources", ())}
        for (group, version, plural), view in self.crds.items():
            if (f"{group}/{version}" == payload.get("groupVersion") and view.spec_replicas_path
                    and plural in names and f"{plural}/scale" not in names):
                payload["resources"].append({"name": f"{plural}/scale", "singularName": "", "namespaced": True,
                                             "group": "autoscaling", "version": "v1", "kind": "Scale",
                                             "verbs": ["get", "patch", "update"]})
        return payload

    def as_table(self, request, key, verb: str, status: int, body):
        """``body`` as a meta.k8s.io/v1 Table when the client asked for one (else unchanged)."""
        view = self.crds.get(key)
        accept = request.headers.get("Accept", "")
        if view is None or verb not in ("get", "list") or status != 200 or "as=Table" not in accept:
            return body
        items = body["items"] if verb == "list" else [body]
        columns = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
                    "description": "Name must be unique within a namespace."}]
        columns += [{"name": c["name"], "type": c["type"], "format": c.get("format", ""),
                     "description": c.get("description", ""), "priority": c.get("priority", 0)}
                    for c in view.columns]
        rows = [{"cells": [obj["metadata"]["name"]] + [cell(obj, c) for c in view.columns],
                 "object": {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                            "metadata": copy.deepcopy(obj["metadata"])}} for obj in items]
        meta = {"resourceVersion": body["metadata"]["resourceVersion"]} if verb == "list" else {}
        return {"apiVersion": "meta.k8s.io/v1", "kind": "Table", "metadata": meta, "columnDefinitions": columns,
                "rows": rows}
