"""The operator's loop: work queue, informers (list + watch), Operator.process end to end on the fake
HTTP boundary and a real Redis broker, the leader Lease, and the CLI command."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from k8s_operator import bodies
from k8s_operator.client import TaskBackend
from k8s_operator.handlers import DELETE_TASK, FINALIZER, SCALE_TASK
from k8s_operator.lease import LeaderElector, decide, micro_time
from k8s_operator.main import Informer, Operator, WorkQueue
from k8s_operator.naming import htcondor_cluster_name
from tests.test_operator_client import FakeKube, json_patch
from tests.test_operator_objects import (NAME, NAMESPACE, T0, broker, daskcluster, fixed_credentials,  # noqa: F401
                                         operator_config, queued, scheduler_pod)

OURS = htcondor_cluster_name(NAMESPACE, NAME)
KEY = f"{NAMESPACE}/{NAME}"
REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


def event_line(etype: str, obj: dict) -> bytes:
    return (json.dumps({"type": etype, "object": obj}) + "\n").encode()


# ---- work queue ------------------------------------------------------------------------------------------

def test_work_queue_dedups_and_honours_delays():
    clock = Clock(0.0)
    q = WorkQueue(clock)
    q.put("a", delay=5)
    q.put("b")
    q.put("a", delay=1)  # the earlier due time wins
    q.put("b", delay=9)  # a later one does not postpone
    assert len(q) == 2
    assert q.get(timeout=0) == "b"
    assert q.get(timeout=0) is None, "a is due at 1"
    clock.t = 1.0
    assert q.get(timeout=0) == "a" and len(q) == 0


def test_work_queue_get_waits_for_a_put_from_another_thread():
    q = WorkQueue()
    threading.Timer(0.05, q.put, args=("k",)).start()
    t = time.monotonic()
    assert q.get(timeout=2) == "k" and time.monotonic() - t < 1


# ---- informer ------------------------------------------------------------------------------------------------

def test_informer_lists_then_follows_the_watch_and_relists_after_410():
    kube = FakeKube()
    kc = kube.client()
    first = kube.put(daskcluster(), bodies.GROUP, "daskclusters")
    gone = kube.put(daskcluster(name="c2"), bodies.GROUP, "daskclusters")
    seen = []
    inf = Informer("daskclusters", lambda: kc.list_clusters("gateway.dask.org/instance=dask-gateway"),
                   lambda: kc.watch_args("clusters", "gateway.dask.org/instance=dask-gateway"),
                   lambda t, o: seen.append((t, o["metadata"]["name"])))
    inf.relist()
    assert sorted(seen) == [("ADDED", NAME), ("ADDED", "c2")] and len(inf.cache) == 2
    listed_rv = inf.resource_version
    newer = {**first, "metadata": {**first["metadata"], "resourceVersion": "9001"}, "spec": {**first["spec"],
                                                                                              "replicas": 4}}
    bookmark = {"kind": "DaskCluster", "apiVersion": "gateway.dask.org/v1alpha1",
                "metadata": {"resourceVersion": "9005"}}
    kube.watch_lines[(bodies.GROUP, "daskclusters")] = [
        [event_line("MODIFIED", newer), event_line("DELETED", gone), event_line("BOOKMARK", bookmark)],
        [event_line("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})],
    ]
    seen.clear()
    inf.watch_once()
    watch_req = [r for r in kube.requests if r["query"].get("watch") == ["true"]][0]
    assert watch_req["query"]["resourceVersion"] == [listed_rv] and watch_req["query"]["allowWatchBookmarks"] == ["true"]
    assert seen == [("MODIFIED", NAME), ("DELETED", "c2")]
    assert inf.cache[KEY]["spec"]["replicas"] == 4 and f"{NAMESPACE}/c2" not in inf.cache
    assert inf.resource_version == "9005", "bookmarks move the resourceVersion on"
    assert not inf.store({**first, "metadata": {**first["metadata"], "resourceVersion": "100"}}), "older: ignored"

    stop = threading.Event()
    kube.objects.clear()  # everything was deleted while the watch was down
    seen.clear()
    t = threading.Thread(target=inf.run, args=(stop,))
    t.start()
    deadline = time.monotonic() + 5
    while ("DELETED", NAME) not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    t.join(5)
    assert not t.is_alive()
    assert ("DELETED", NAME) in seen and inf.cache == {}, "410: listed again, the vanished object reported deleted"


# ---- the operator, end to end on the fake API and a real broker --------------------------------------------------

def drain(op: Operator) -> int:
    n = 0
    while (key := op.queue.get(timeout=0)) is not None:
        op.process(key)
        n += 1
    return n


def deliver_cluster(op: Operator, kube: FakeKube, patch: list[dict]) -> dict:
    """Patch the DaskCluster as dask-gateway would and deliver the watch event."""
    key = (bodies.GROUP, NAMESPACE, "daskclusters", NAME)
    obj = kube.put(json_patch(kube.objects[key], patch), bodies.GROUP, "daskclusters")
    op.clusters.store(obj)
    op.on_cluster_event("MODIFIED", obj)
    return obj


def test_operator_drives_a_daskcluster_from_creation_to_deletion(broker, service_user):
    kube = FakeKube()
    kc = kube.client()
    clock = Clock()
    cfg = operator_config()
    op = Operator(kc, TaskBackend(broker), cfg, clock=clock, credentials=fixed_credentials)
    kube.put(daskcluster(username=service_user), bodies.GROUP, "daskclusters")
    kube.put(daskcluster(name="other-instance", username=service_user) | {"metadata": {
        **daskcluster(name="other-instance")["metadata"],
        "labels": {"gateway.dask.org/instance": "someone-else", "gateway.dask.org/cluster": "other-instance"}}},
        bodies.GROUP, "daskclusters")
    op.pods.relist()
    op.clusters.relist()
    assert list(op.clusters.cache) == [KEY], "only DaskClusters of our dask-gateway instance"
    drain(op)
    stored = lambda: kube.objects[(bodies.GROUP, NAMESPACE, "daskclusters", NAME)]  # noqa: E731
    assert stored()["status"]["phase"] == "Pending" and stored()["metadata"]["finalizers"] == [FINALIZER]
    assert (("", NAMESPACE, "secrets", f"dask-credentials-{NAME}") in kube.objects
            and ("", NAMESPACE, "pods", f"dask-scheduler-{NAME}") in kube.objects)
    assert f"{NAMESPACE}/dask-scheduler-{NAME}" in op.pods.cache, "the created pod is known at once"

    # the pod exists (not running yet): its Service, recorded in the status
    writes = len(kube.requests_without_reads())
    op.queue.put(KEY)
    drain(op)
    assert kube.requests_without_reads()[writes:] == [
        ("POST", f"/api/v1/namespaces/{NAMESPACE}/services"),
        ("PATCH", f"/apis/gateway.dask.org/v1alpha1/namespaces/{NAMESPACE}/daskclusters/{NAME}/status")]
    # nothing changed: processing again writes nothing
    op.queue.put(KEY)
    drain(op)
    assert len(kube.requests_without_reads()) == writes + 2

    # the kubelet starts the scheduler and its readiness probe passes
    pod = kube.objects[("", NAMESPACE, "pods", f"dask-scheduler-{NAME}")]
    ready = {**scheduler_pod("ready"), "metadata": {**pod["metadata"], "resourceVersion": "6001"}}
    op.pods.store(ready)
    op.on_pod_event("MODIFIED", ready)
    drain(op)
    assert stored()["status"]["phase"] == "Running"
    assert broker.r.llen("local") == 0, "replicas 0: nothing to enqueue"

    # the scheduler's heartbeat asks for 2 workers (KubeBackend.on_cluster_heartbeat)
    deliver_cluster(op, kube, [{"op": "add", "path": "/spec/replicas", "value": 2}])
    drain(op)
    msgs = queued(broker, "local")
    assert [(m["task"], m["kwargs"]["cluster"], m["kwargs"]["n"], m["kwargs"]["owner"]) for m in msgs] == [
        (SCALE_TASK, OURS, 2, service_user)]
    assert stored()["status"]["htcondor"]["requested"] == 2

    # the poller's summary reaches the status at the next resync, throttled to one write per interval
    broker.write_poll("local", {OURS: {"idle": 1, "running": 1, "held": 0, "polled_at": T0}}, {}, T0)
    clock.t += 11
    op.resync()
    drain(op)
    assert {k: stored()["status"]["htcondor"][k] for k in ("idle", "running", "held")} == {
        "idle": 0 + 1, "running": 1, "held": 0}
    writes = len(kube.requests_without_reads())
    broker.write_poll("local", {OURS: {"idle": 0, "running": 2, "held": 0, "polled_at": T0}}, {}, T0)
    clock.t += 1
    op.resync()
    drain(op)
    assert len(kube.requests_without_reads()) == writes, "within the interval: no status write"
    assert len(op.queue) == 1, "but the key comes back when the interval has passed"
    clock.t += 10
    op.resync()
    drain(op)
    assert stored()["status"]["htcondor"]["running"] == 2 and len(kube.requests_without_reads()) == writes + 1

    # the user deletes the DaskCluster: kubectl sets deletionTimestamp, our finalizer holds it
    deliver_cluster(op, kube, [{"op": "add", "path": "/metadata/deletionTimestamp", "value": "2026-05-28T21:00:00Z"}])
    drain(op)
    assert [m["task"] for m in queued(broker, "local")] == [SCALE_TASK, DELETE_TASK]
    assert [k for k in kube.objects if k[2] != "daskclusters"] == [], "nothing orphaned"
    assert stored()["metadata"]["finalizers"] == []


def test_a_refused_owner_fails_the_cluster(broker):
    kube = FakeKube()
    op = Operator(kube.client(), TaskBackend(broker), operator_config(), clock=Clock(), credentials=fixed_credentials)
    kube.put(daskcluster(username="root"), bodies.GROUP, "daskclusters")
    op.pods.relist()
    op.clusters.relist()
    drain(op)
    status = kube.objects[(bodies.GROUP, NAMESPACE, "daskclusters", NAME)]["status"]
    assert status["phase"] == "Failed" and status["message"].startswith("owner refused: invalid submit user 'root'")
    assert [k for k in kube.objects if k[2] != "daskclusters"] == [], "nothing was created for it"


def test_every_log_line_about_a_cluster_names_namespace_and_cluster(broker, service_user, caplog):
    kube = FakeKube()
    op = Operator(kube.client(), TaskBackend(broker), operator_config(), clock=Clock(), credentials=fixed_credentials)
    kube.put(daskcluster(username=service_user, replicas=1), bodies.GROUP, "daskclusters")
    caplog.set_level("DEBUG", logger="k8s_operator")
    op.pods.relist()
    op.clusters.relist()
    drain(op)
    pod = kube.objects[("", NAMESPACE, "pods", f"dask-scheduler-{NAME}")]
    op.pods.store({**scheduler_pod("ready"), "metadata": {**pod["metadata"], "resourceVersion": "7000"}})
    op.queue.put(KEY)
    drain(op)
    ours = [r for r in caplog.records if r.name.startswith("k8s_operator.")]
    about_clusters = [r for r in ours if not r.getMessage().startswith(("daskclusters:", "scheduler pods:"))]
    assert len(about_clusters) >= 8
    for r in about_clusters:
        assert r.getMessage().startswith(f"namespace={NAMESPACE} cluster={NAME}: "), r.getMessage()
        assert (r.namespace, r.cluster) == (NAMESPACE, NAME), "also as record attributes"
    assert "0123456789abcdef" not in caplog.text, "the API token is never logged"


def test_run_lists_watches_and_stops(broker, service_user):
    kube = FakeKube()
    op = Operator(kube.client(), TaskBackend(broker), operator_config(resync_seconds=0.2), credentials=fixed_credentials)
    kube.put(daskcluster(username=service_user), bodies.GROUP, "daskclusters")
    stop = threading.Event()
    t = threading.Thread(target=op.run, args=(stop,))
    t.start()
    deadline = time.monotonic() + 10
    while ("", NAMESPACE, "pods", f"dask-scheduler-{NAME}") not in kube.objects and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    t.join(10)
    assert not t.is_alive()
    assert not [th.name for th in threading.enumerate() if th.name.startswith(("watch ", "resync"))], \
        "the watch and resync threads ended with the loop"
    assert ("", NAMESPACE, "secrets", f"dask-credentials-{NAME}") in kube.objects
    watched = {tuple(r["path"].split("/")[-1:]) for r in kube.requests if r["query"].get("watch") == ["true"]}
    assert watched == {("pods",), ("daskclusters",)}


# ---- the leader Lease ----------------------------------------------------------------------------------------

def test_lease_rule():
    what, body = decide(None, "me", T0, 15, "htdask", "htdask-operator")
    assert what == "create" and body["spec"] == {"holderIdentity": "me", "leaseDurationSeconds": 15,
                                                 "renewTime": micro_time(T0), "acquireTime": micro_time(T0),
                                                 "leaseTransitions": 0}
    theirs = {"metadata": {"resourceVersion": "7"},
              "spec": {"holderIdentity": "them", "leaseDurationSeconds": 15, "renewTime": micro_time(T0),
                       "leaseTransitions": 2}}
    assert decide(theirs, "me", T0 + 14, 15, "htdask", "l") == ("wait", None)
    what, body = decide(theirs, "me", T0 + 15, 15, "htdask", "l")
    assert what == "acquire" and body["metadata"]["resourceVersion"] == "7"
    assert body["spec"]["holderIdentity"] == "me" and body["spec"]["leaseTransitions"] == 3
    mine = {**theirs, "spec": {**theirs["spec"], "holderIdentity": "me"}}
    what, body = decide(mine, "me", T0 + 5, 15, "htdask", "l")
    assert what == "renew" and body["spec"]["renewTime"] == micro_time(T0 + 5) and body["spec"]["leaseTransitions"] == 2


def test_only_one_of_two_operators_leads_until_the_leader_stops_renewing():
    kube = FakeKube()
    kc = kube.client()
    clock = Clock()
    a = LeaderElector(kc, "htdask", "htdask-operator", 15, identity="a", clock=clock)
    b = LeaderElector(kc, "htdask", "htdask-operator", 15, identity="b", clock=clock)
    assert a.try_once() and not b.try_once()
    lease_path = "/apis/coordination.k8s.io/v1/namespaces/htdask/leases"
    assert ("POST", lease_path) in kube.requests_without_reads()
    clock.t += 5
    assert a.try_once() and not b.try_once(), "renewed"
    assert kube.requests_without_reads()[-1] == ("PUT", f"{lease_path}/htdask-operator")
    clock.t += 15
    assert b.try_once(), "a stopped renewing: b takes over"
    lease = kube.objects[("coordination.k8s.io", "htdask", "leases", "htdask-operator")]
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    assert not a.try_once(), "a sees b's fresh lease"


def test_a_lost_race_for_the_lease_is_not_leadership():
    kube = FakeKube()
    kc = kube.client()
    clock = Clock()
    LeaderElector(kc, "htdask", "l", 15, identity="a", clock=clock).try_once()
    clock.t += 30
    b = LeaderElector(kc, "htdask", "l", 15, identity="b", clock=clock)
    kube.fail[("PUT", "/apis/coordination.k8s.io/v1/namespaces/htdask/leases/l")] = 409
    assert not b.try_once()


def test_leader_that_cannot_renew_stops():
    kube = FakeKube()
    clock = Clock()
    a = LeaderElector(kube.client(), "htdask", "l", 3, identity="a", clock=clock)
    assert a.try_once()
    kube.fail[("GET", "/apis/coordination.k8s.io/v1/namespaces/htdask/leases/l")] = 500
    clock.t += 2.5  # past the renew deadline (2/3 of 3 s)
    stop = threading.Event()
    a.start_renewing(stop)
    assert a.lost.wait(5)
    stop.set()


# ---- the CLI -------------------------------------------------------------------------------------------------

def test_cli_operator_refuses_missing_settings_and_configuration(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    out = subprocess.run([sys.executable, "cli.py", "operator"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "DASK_GATEWAY_INSTANCE (--instance) is required" in out.stderr
    out = subprocess.run([sys.executable, "cli.py", "operator", "--instance", "dask-gateway", "--api-url",
                          "http://api/api"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.startswith("error: no Kubernetes configuration")
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_released_lease_is_taken_at_once():
    kube = FakeKube()
    kc = kube.client()
    clock = Clock()
    a = LeaderElector(kc, "htdask", "l", 15, identity="a", clock=clock)
    b = LeaderElector(kc, "htdask", "l", 15, identity="b", clock=clock)
    assert a.try_once() and not b.try_once()
    b.release()  # not b's to release: nothing happens
    assert kube.objects[("coordination.k8s.io", "htdask", "leases", "l")]["spec"]["holderIdentity"] == "a"
    a.release()
    assert "holderIdentity" not in kube.objects[("coordination.k8s.io", "htdask", "leases", "l")]["spec"]
    assert b.try_once(), "no need to wait for the lease to expire"
