"""The API server emulator (tests/k8s_emulator.py) behaves as the Kubernetes API server does where
the operator depends on it; every check goes through the real kubernetes client over HTTP."""
from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from tests.conftest import needs
from tests.k8s_emulator import Emulator

G, V, P = "gateway.dask.org", "v1alpha1", "daskclusters"
JSON_PATCH = "application/json-patch+json"


@pytest.fixture(scope="module")
@needs("k8s")
def api():
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def clients(api):
    c = api.client()
    yield k8s.CustomObjectsApi(c), k8s.CoreV1Api(c), k8s.CoordinationV1Api(c)
    c.close()


def dc(name, labels=None, **spec):
    return {"apiVersion": f"{G}/{V}", "kind": "DaskCluster",
            "metadata": {"name": name, "labels": labels or {"gateway.dask.org/instance": "gw"}},
            "spec": {"replicas": 0, **spec}, "status": {"phase": "Bogus"}}


def test_create_sets_server_metadata_answers_201_and_409(clients, api):
    custom, core, _ = clients
    obj = custom.create_namespaced_custom_object(G, V, "ns1", P, dc("a"))
    assert obj is not None, "kubernetes client 37 returns None unless the create answers 201"
    meta = obj["metadata"]
    assert meta["namespace"] == "ns1" and meta["uid"] and meta["resourceVersion"].isdigit()
    assert meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    assert "status" not in obj, "the status subresource: a create ignores status"
    assert api.calls("create", P)[-1].status == 201
    with pytest.raises(ApiException) as e:
        custom.create_namespaced_custom_object(G, V, "ns1", P, dc("a"))
    assert e.value.status == 409
    pod = core.create_namespaced_pod("ns1", k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"),
                                                     spec=k8s.V1PodSpec(containers=[])))
    assert pod.metadata.uid and pod.metadata.namespace == "ns1"


def test_status_subresource_rules(clients):
    custom, _, _ = clients
    custom.create_namespaced_custom_object(G, V, "ns2", P, dc("s"))
    out = custom.patch_namespaced_custom_object(G, V, "ns2", P, "s", {"status": {"phase": "X"}, "spec": {"replicas": 2}})
    assert "status" not in out and out["spec"]["replicas"] == 2 and out["metadata"]["generation"] == 2
    out = custom.patch_namespaced_custom_object_status(G, V, "ns2", P, "s",
                                                       [{"op": "add", "path": "/status", "value": {"phase": "Y"}},
                                                        {"op": "replace", "path": "/spec/replicas", "value": 9}],
                                                       _content_type=JSON_PATCH)
    assert out["status"] == {"phase": "Y"} and out["spec"]["replicas"] == 2, "/status changes only status"


def test_put_and_merge_patch_with_a_stale_resource_version_get_409(clients):
    _, _, coord = clients
    lease = coord.create_namespaced_lease("ns3", k8s.V1Lease(metadata=k8s.V1ObjectMeta(name="l"),
                                                             spec=k8s.V1LeaseSpec(holder_identity="a")))
    stale = lease.metadata.resource_version
    lease.spec.holder_identity = "b"
    fresh = coord.replace_namespaced_lease("l", "ns3", lease)
    assert fresh.spec.holder_identity == "b" and fresh.metadata.resource_version != stale
    lease.spec.holder_identity = "c"
    with pytest.raises(ApiException) as e:
        coord.replace_namespaced_lease("l", "ns3", lease)
    assert e.value.status == 409
    with pytest.raises(ApiException) as e:
        coord.patch_namespaced_lease("l", "ns3", {"metadata": {"resourceVersion": stale}, "spec": {"holderIdentity": "c"}})
    assert e.value.status == 409
    assert coord.read_namespaced_lease("l", "ns3").spec.holder_identity == "b"


def test_json_patch_test_op_fails_with_422_and_changes_nothing(clients, api):
    custom, _, _ = clients
    custom.create_namespaced_custom_object(G, V, "ns4", P, dc("f"))
    custom.patch_namespaced_custom_object(G, V, "ns4", P, "f", [{"op": "add", "path": "/metadata/finalizers",
                                                                  "value": ["other/x"]}], _content_type=JSON_PATCH)
    with pytest.raises(ApiException) as e:
        custom.patch_namespaced_custom_object(G, V, "ns4", P, "f", [
            {"op": "test", "path": "/metadata/finalizers", "value": []},
            {"op": "replace", "path": "/metadata/finalizers", "value": ["ours"]}], _content_type=JSON_PATCH)
    assert e.value.status == 422
    assert api.get(G, P, "ns4", "f")["metadata"]["finalizers"] == ["other/x"]


def test_delete_with_finalizers_waits_for_the_last_one(clients, api):
    custom, _, _ = clients
    custom.create_namespaced_custom_object(G, V, "ns5", P, {**dc("d"), "metadata": {
        "name": "d", "finalizers": ["a/b"]}})
    custom.delete_namespaced_custom_object(G, V, "ns5", P, "d")
    obj = api.get(G, P, "ns5", "d")
    assert obj["metadata"]["deletionTimestamp"]
    custom.patch_namespaced_custom_object(G, V, "ns5", P, "d", [{"op": "remove", "path": "/metadata/finalizers/0"}],
                                          _content_type=JSON_PATCH)
    assert api.get(G, P, "ns5", "d") is None
    with pytest.raises(ApiException) as e:
        custom.get_namespaced_custom_object(G, V, "ns5", P, "d")
    assert e.value.status == 404


def test_label_selector_on_list_and_watch(clients):
    custom, _, _ = clients
    custom.create_namespaced_custom_object(G, V, "ns6", P, dc("mine"))
    custom.create_namespaced_custom_object(G, V, "ns6", P, dc("theirs", {"gateway.dask.org/instance": "other"}))
    listed = custom.list_namespaced_custom_object(G, V, "ns6", P, label_selector="gateway.dask.org/instance=gw")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["mine"]
    assert [o["metadata"]["name"] for o in custom.list_namespaced_custom_object(
        G, V, "ns6", P, label_selector="gateway.dask.org/instance!=gw")["items"]] == ["theirs"]
    events = list(watch.Watch().stream(custom.list_namespaced_custom_object, G, V, "ns6", P,
                                       label_selector="gateway.dask.org/instance=gw", timeout_seconds=1))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "mine")]


def test_watch_from_a_resource_version_replays_later_events_and_ends_on_timeout(clients):
    custom, _, _ = clients
    rv = custom.list_namespaced_custom_object(G, V, "ns7", P)["metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object(G, V, "ns7", P, dc("w"))
    custom.patch_namespaced_custom_object(G, V, "ns7", P, "w", {"spec": {"replicas": 3}})
    t = time.monotonic()
    events = list(watch.Watch().stream(custom.list_namespaced_custom_object, G, V, "ns7", P,
                                       resource_version=rv, timeout_seconds=1))
    assert 0.9 < time.monotonic() - t < 5, "the server ends the watch after timeoutSeconds"
    assert [(e["type"], e["object"]["spec"]["replicas"]) for e in events] == [("ADDED", 0), ("MODIFIED", 3)]


def test_watch_streams_live_events(clients):
    custom, _, _ = clients
    rv = custom.list_namespaced_custom_object(G, V, "ns8", P)["metadata"]["resourceVersion"]
    threading.Timer(0.3, custom.create_namespaced_custom_object, args=(G, V, "ns8", P, dc("live"))).start()
    w = watch.Watch()
    for event in w.stream(custom.list_namespaced_custom_object, G, V, "ns8", P, resource_version=rv,
                          timeout_seconds=10):
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "live")
        w.stop()
        break


def test_watch_from_a_compacted_resource_version_gets_410_gone(clients, api):
    custom, _, _ = clients
    rv = custom.list_namespaced_custom_object(G, V, "ns9", P)["metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object(G, V, "ns9", P, dc("old"))
    api.compact()
    with pytest.raises(ApiException) as e:
        list(watch.Watch().stream(custom.list_namespaced_custom_object, G, V, "ns9", P, resource_version=rv,
                                  timeout_seconds=1))
    assert e.value.status == 410


def test_injected_errors_and_delays(clients, api):
    _, core, _ = clients
    fault = api.fail("POST", r"/namespaces/ns10/pods$", 422, times=2, message="no pods today")
    body = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"), spec=k8s.V1PodSpec(containers=[]))
    for _ in range(2):
        with pytest.raises(ApiException) as e:
            core.create_namespaced_pod("ns10", body)
        assert e.value.status == 422 and "no pods today" in e.value.body
    assert api.get("", "pods", "ns10", "p") is None, "a refused create stores nothing"
    assert core.create_namespaced_pod("ns10", body).metadata.name == "p" and fault.hits == 2
    api.fail("GET", r"/namespaces/ns10/pods/p$", None, delay=0.5, times=1)
    t = time.monotonic()
    core.read_namespaced_pod("p", "ns10")
    assert time.monotonic() - t >= 0.5
    api.clear_faults()


def test_discovery_and_request_log(api):
    import requests
    groups = requests.get(f"{api.url}/apis", timeout=5).json()
    assert {"gateway.dask.org", "coordination.k8s.io", "traefik.io"} <= {g["name"] for g in groups["groups"]}
    res = requests.get(f"{api.url}/apis/{G}/{V}", timeout=5).json()
    names = {r["name"]: r for r in res["resources"]}
    assert names[P]["kind"] == "DaskCluster" and names[P]["namespaced"] and f"{P}/status" in names
    assert any(str(r.url.path) == f"/apis/{G}/{V}" for r in api.requests)


# ---- the scale subresource and printer columns (tests/k8s_scale.py, from deploy/k8s/crd.yaml) ----------------

def test_scale_subresource_as_the_api_server_serves_it(clients, api):
    """GET/PUT/PATCH .../scale: an autoscaling/v1 Scale over spec.replicas, status.htcondor.running and
    status.selector; writes change only spec.replicas (status kept, generation bumped, a watch event)."""
    custom, _, _ = clients
    body = dc("sc")
    del body["spec"]["replicas"]  # as dask-gateway's KubeBackend creates it
    custom.create_namespaced_custom_object(G, V, "ns-scale", P, body)
    with pytest.raises(ApiException) as e:
        custom.get_namespaced_custom_object_scale(G, V, "ns-scale", P, "sc")
    assert e.value.status == 500 and "spec replicas field" in e.value.body
    # kubectl scale: a merge patch of the Scale (works on an object without spec.replicas too)
    out = custom.patch_namespaced_custom_object_scale(G, V, "ns-scale", P, "sc", {"spec": {"replicas": 3}},
                                                      _content_type="application/merge-patch+json")
    assert out["kind"] == "Scale" and out["apiVersion"] == "autoscaling/v1" and out["spec"] == {"replicas": 3}
    obj = api.get(G, P, "ns-scale", "sc")
    assert obj["spec"]["replicas"] == 3 and obj["metadata"]["generation"] == 2
    custom.patch_namespaced_custom_object_status(G, V, "ns-scale", P, "sc", {"status": {
        "htcondor": {"running": 2}, "selector": "a=b"}})
    scale = custom.get_namespaced_custom_object_scale(G, V, "ns-scale", P, "sc")
    assert scale["spec"] == {"replicas": 3} and scale["status"] == {"replicas": 2, "selector": "a=b"}
    assert scale["metadata"]["name"] == "sc" and scale["metadata"]["resourceVersion"] == \
        api.get(G, P, "ns-scale", "sc")["metadata"]["resourceVersion"]
    # PUT with the current resourceVersion; a stale one is a 409; a JSON patch; bad replicas are refused
    scale["spec"]["replicas"] = 5
    custom.replace_namespaced_custom_object_scale(G, V, "ns-scale", P, "sc", scale)
    with pytest.raises(ApiException) as e:
        custom.replace_namespaced_custom_object_scale(G, V, "ns-scale", P, "sc", scale)
    assert e.value.status == 409
    custom.patch_namespaced_custom_object_scale(G, V, "ns-scale", P, "sc",
                                                [{"op": "replace", "path": "/spec/replicas", "value": 1}],
                                                _content_type=JSON_PATCH)
    for bad in (-1, "2"):
        with pytest.raises(ApiException) as e:
            custom.patch_namespaced_custom_object_scale(G, V, "ns-scale", P, "sc", {"spec": {"replicas": bad}},
                                                        _content_type="application/merge-patch+json")
        assert e.value.status == 422
    obj = api.get(G, P, "ns-scale", "sc")
    assert obj["spec"]["replicas"] == 1 and obj["status"] == {"htcondor": {"running": 2}, "selector": "a=b"}
    assert [(c.verb, c.status) for c in api.calls(resource="daskclusters/scale")][-5:] == [
        ("update", 200), ("update", 409), ("patch", 200), ("patch", 422), ("patch", 422)]


def get_json(api, path: str, accept: str = "application/json"):
    import json
    import urllib.request
    with urllib.request.urlopen(urllib.request.Request(api.url + path, headers={"Accept": accept}), timeout=10) as r:
        return json.load(r)


def test_discovery_names_the_scale_subresource_as_the_server_does(api):
    resources = get_json(api, "/apis/gateway.dask.org/v1alpha1")["resources"]
    scale = [r for r in resources if r["name"] == "daskclusters/scale"]
    assert scale and (scale[0]["group"], scale[0]["version"], scale[0]["kind"]) == ("autoscaling", "v1", "Scale")


def test_server_side_printing_renders_the_crds_printer_columns(clients, api):
    custom, _, _ = clients
    custom.create_namespaced_custom_object(G, V, "ns-table", P, dc("t", replicas=4))
    custom.patch_namespaced_custom_object_status(G, V, "ns-table", P, "t", {"status": {
        "phase": "Running", "htcondor": {"running": 3, "held": 1, "schedd": "submit1"}}})
    table = get_json(api, "/apis/gateway.dask.org/v1alpha1/namespaces/ns-table/daskclusters",
                     "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:7] == ["Name", "Phase", "Desired", "Running", "Held", "Schedd", "Age"]
    [row] = table["rows"]
    assert row["cells"][:6] == ["t", "Running", 4, 3, 1, "submit1"]
    assert row["cells"][6].endswith("s"), "AGE as the server prints it"

def test_namespace_deletion_waits_for_finalizers_and_refuses_new_content(api):
    """The namespace controller: everything in the namespace is deleted (an object with a finalizer only
    marked), creates get 403 while it terminates, and the Namespace goes once its last object is gone."""
    from kubernetes import client as k8s
    core = k8s.CoreV1Api(api.client())
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}})
    core.create_namespaced_secret("doomed", {"metadata": {"name": "plain"}, "data": {}})
    core.create_namespaced_secret("doomed", {"metadata": {"name": "held", "finalizers": ["x.io/keep"]}, "data": {}})
    core.create_namespaced_secret("other", {"metadata": {"name": "plain"}, "data": {}})
    core.delete_namespace("doomed")
    assert api.get("", "namespaces", None, "doomed")["status"]["phase"] == "Terminating"
    assert api.get("", "secrets", "doomed", "plain") is None
    assert api.get("", "secrets", "doomed", "held")["metadata"]["deletionTimestamp"]
    assert api.get("", "secrets", "other", "plain") is not None, "other namespaces untouched"
    with pytest.raises(k8s.ApiException) as e:
        core.create_namespaced_secret("doomed", {"metadata": {"name": "new"}, "data": {}})
    assert e.value.status == 403
    core.patch_namespaced_secret("held", "doomed", {"metadata": {"finalizers": None}})
    assert api.get("", "secrets", "doomed", "held") is None
    assert api.get("", "namespaces", None, "doomed") is None, "the empty namespace is gone"
