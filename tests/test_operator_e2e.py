"""The operator end to end: ``python cli.py operator`` against the API server emulator
(tests/k8s_emulator.py), with a real redis-server, Celery worker + beat and the local pool.

The tests play dask-gateway's KubeBackend (its DaskCluster create body, JSON patches of
``spec.replicas`` / ``spec.active``, DELETE) and the kubelet (a ``pods/status`` patch), and check
what the operator does through the API server's objects and request log and the pool's condor_q.
Each test has its own emulator, operator process(es), instance name and namespace.
"""
from __future__ import annotations

import signal
import sys
import time

import pytest
from kubernetes import client as k8s

from htdask.demo import services
from htdask.demo.procs import Process
from htdask.demo.services import REPO, Stack
from htdask.k8s_operator import bodies
from htdask.k8s_operator.client import API_CALLS, NAMESPACED_OPS, rbac_requirements
from htdask.k8s_operator.handlers import FINALIZER
from htdask.k8s_operator.naming import htcondor_cluster_name
from tests.conftest import live, needs, wait_until
from tests.k8s_emulator import Emulator
from tests.k8s_stack import start_operator  # (tests/test_execute_hosts_operator.py imports it from here)
from tests.test_operator_objects import daskcluster

G, V, P = bodies.GROUP, bodies.VERSION, bodies.PLURAL
JSON_PATCH = "application/json-patch+json"
SERVER_FIELDS = ("namespace", "uid", "resourceVersion", "generation", "creationTimestamp")
WORKER_COUNTS = {"idle", "running", "held"}


@pytest.fixture(scope="module")
@needs("stack")
def stack(service_user):
    with Stack(beat=True, DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=str(services.FAKE_WORKER),
               POLL_INTERVAL="1", SCHEDD_MIN_INTERVAL="0") as s:
        yield s


@pytest.fixture
@needs("k8s")
def api():
    with Emulator() as emulator:
        yield emulator


class Gateway:
    """dask-gateway's KubeBackend and the kubelet, as far as the operator sees them."""

    def __init__(self, api: Emulator, namespace: str, instance: str, owner: str):
        self.api, self.namespace, self.instance, self.owner = api, namespace, instance, owner
        self.client = api.client()
        self.custom = k8s.CustomObjectsApi(self.client)
        self.core = k8s.CoreV1Api(self.client)

    def create(self, name: str, instance: str | None = None, replicas: int | None = None) -> dict:
        body = daskcluster(name=name, namespace=self.namespace, username=self.owner, replicas=replicas)
        for f in SERVER_FIELDS:
            body["metadata"].pop(f)
        body["metadata"]["labels"][bodies.LABEL_INSTANCE] = instance or self.instance
        return self.custom.create_namespaced_custom_object(G, V, self.namespace, P, body)

    def patch(self, name: str, path: str, value) -> dict:
        return self.custom.patch_namespaced_custom_object(G, V, self.namespace, P, name,
                                                          [{"op": "add", "path": path, "value": value}],
                                                          _content_type=JSON_PATCH)

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(G, V, self.namespace, P, name)

    def cluster(self, name: str) -> dict | None:
        return self.api.get(G, P, self.namespace, name)

    def status(self, name: str) -> dict:
        return (self.cluster(name) or {}).get("status") or {}

    def obj(self, plural: str, name: str, group: str = "") -> dict | None:
        return self.api.get(group, plural, self.namespace, name)

    def scheduler_ready(self, name: str) -> None:
        """The kubelet: the scheduler container runs and its readiness probe passes."""
        pod = wait_until(lambda: self.obj("pods", bodies.scheduler_pod_name(name)), message="scheduler pod")
        self.core.patch_namespaced_pod_status(pod["metadata"]["name"], self.namespace, {"status": {
            "phase": "Running", "podIP": "10.0.0.7",
            "containerStatuses": [{"name": "dask-scheduler", "ready": True, "restartCount": 0, "image": "x",
                                   "imageID": "", "state": {"running": {"startedAt": "2026-05-28T20:21:00Z"}}}],
            "conditions": [{"type": "Ready", "status": "True"}]}})

    def wait_phase(self, name: str, phase: str, timeout: float = 30.0) -> dict:
        return wait_until(lambda: self.status(name).get("phase") == phase and self.status(name), timeout,
                          message=f"{name} {phase}")


@pytest.fixture
def operators():
    procs: list[Process] = []
    yield procs
    for p in procs:
        p.stop()


def workers_named(stack: Stack, cluster: str) -> int:
    """How many worker names the cluster ever reserved (the per-cluster Redis counter): every job
    submitted twice would show here."""
    from htdask.state import Store, connect
    return Store(connect(stack.redis.url)).counter(cluster)


def creates(api: Emulator, plural: str, namespace: str) -> int:
    return len([c for c in api.calls("create", plural) if c.namespace == namespace])


# ---- the scenarios ---------------------------------------------------------------------------------

def test_lifecycle_create_ready_scale_stop(stack, api, tmp_path, operators, service_user):
    """create -> Secret/Pod/Service, Pending; Ready -> routes, Running; replicas 3 -> 3 jobs, counts in
    the status; replicas 1 -> 1 job; active false -> Stopped, objects and jobs gone, counts cleared."""
    ns, name = "life", "c1"
    gw = Gateway(api, ns, "gw-life", service_user)
    operators.append(start_operator(stack, api, tmp_path, "gw-life"))
    gw.create(name)
    status = gw.wait_phase(name, "Pending")
    wait_until(lambda: gw.status(name).get("schedulerPod"), message="pod recorded")
    secret = gw.obj("secrets", bodies.secret_name(name))
    assert {"dask.crt", "dask.pem", "api-token"} <= set(secret["data"])
    assert FINALIZER in gw.cluster(name)["metadata"]["finalizers"]
    assert status["credentials"] == bodies.secret_name(name)
    pod = gw.obj("pods", bodies.scheduler_pod_name(name))
    assert pod["metadata"]["labels"][bodies.LABEL_INSTANCE] == "gw-life"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == gw.cluster(name)["metadata"]["uid"]
    wait_until(lambda: gw.obj("services", bodies.service_name(name)), message="Service once the pod exists")

    gw.scheduler_ready(name)
    status = gw.wait_phase(name, "Running")
    assert gw.obj("ingressroutes", bodies.route_name(name), "traefik.io")
    assert gw.obj("ingressroutetcps", bodies.route_name(name), "traefik.io")
    ours = status["htcondor"]["cluster"]
    assert ours == htcondor_cluster_name(ns, name) and status["htcondor"]["owner"] == service_user

    gw.patch(name, "/spec/replicas", 3)
    wait_until(lambda: len(live(stack, ours)) == 3, message="3 jobs")
    wait_until(lambda: gw.status(name)["htcondor"].get("requested") == 3, message="requested 3")
    wait_until(lambda: gw.status(name)["htcondor"].get("running") == 3, timeout=30, message="3 running in status")
    assert {j["Owner"] for j in live(stack, ours)} == {service_user}
    gw.patch(name, "/spec/replicas", 1)
    wait_until(lambda: len(live(stack, ours)) == 1, message="1 job")
    assert workers_named(stack, ours) == 3, "3 jobs submitted for the scale-up, none for the scale-down"

    gw.patch(name, "/spec/active", False)
    status = gw.wait_phase(name, "Stopped")
    assert not WORKER_COUNTS & set(status["htcondor"]), f"a Stopped cluster keeps no worker counts: {status}"
    wait_until(lambda: not live(stack, ours), message="jobs removed")
    for plural, obj in (("pods", bodies.scheduler_pod_name(name)), ("services", bodies.service_name(name)),
                        ("secrets", bodies.secret_name(name))):
        assert gw.obj(plural, obj) is None, plural
    wait_until(lambda: FINALIZER not in (gw.cluster(name)["metadata"].get("finalizers") or []),
               message="finalizer removed")
    final = gw.cluster(name)
    assert "kopf" not in final["status"] and not final["metadata"].get("annotations"), "no kopf bookkeeping"

    # Every call the operator made is one the RBAC grants (deploy/k8s/rbac.yaml is checked against
    # API_CALLS by tests/test_k8s_manifests.py).
    granted = rbac_requirements(op for op in API_CALLS if op not in NAMESPACED_OPS)
    lease_granted = rbac_requirements(NAMESPACED_OPS)
    assert {c.namespace for c in api.calls(resource="leases")} == {"lease-gw-life"}
    watches = api.calls("watch")
    assert {c.resource for c in watches} == {"daskclusters", "pods"}
    assert all("gateway.dask.org/instance=gw-life" in c.extra.get("labelSelector", "") for c in watches), \
        "the server filters by instance"
    made_by_gateway = {("gateway.dask.org", "daskclusters", "create")}
    made = {(c.group, c.resource, c.verb) for c in api.calls()} - made_by_gateway - {("", "pods/status", "patch")}
    assert made <= granted | lease_granted, made - granted - lease_granted


def kubectl(api: Emulator, tmp_path, *args: str) -> str:
    """kubectl (the real client, when on PATH) against the emulator; its output."""
    import subprocess
    res = subprocess.run(["kubectl", "--kubeconfig", api.kubeconfig(tmp_path / "kubectl.kubeconfig"), *args],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stdout}{res.stderr}"
    return res.stdout


def test_kubectl_scale_is_a_scale_task_and_get_shows_the_columns(stack, api, tmp_path, operators, service_user):
    """deploy/k8s/crd.yaml's scale subresource: what `kubectl scale daskcluster/k1 --replicas=3` sends (a merge
    PATCH of .../daskclusters/k1/scale with a Scale body) becomes a scale task (desired 3 recorded in Redis, 3
    jobs), /scale reports the running workers, and the printer columns show phase, desired, running, held,
    schedd. With kubectl on PATH (kubectl 1.32 on this machine), kubectl itself scales it to 1 and `kubectl get`
    prints the columns the emulator renders from the CRD, as the API server does."""
    import shutil
    from htdask.state import Store, connect
    from tests.k8s_scale import cell, crd_views
    ns, name = "kubectl", "k1"
    gw = Gateway(api, ns, "gw-kubectl", service_user)
    operators.append(start_operator(stack, api, tmp_path, "gw-kubectl"))
    gw.create(name)  # as dask-gateway creates it: no spec.replicas
    gw.scheduler_ready(name)
    ours = gw.wait_phase(name, "Running")["htcondor"]["cluster"]
    store = Store(connect(stack.redis.url))

    scale = gw.custom.patch_namespaced_custom_object_scale(G, V, ns, P, name, {"spec": {"replicas": 3}},
                                                           _content_type="application/merge-patch+json")
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 3)
    wait_until(lambda: len(live(stack, ours)) == 3, message="3 jobs after the scale subresource was patched")
    assert store.get(ours).desired == 3, "the desired state the scale task reconciles to"
    wait_until(lambda: gw.status(name)["htcondor"].get("running") == 3, timeout=30, message="3 running in status")
    scale = gw.custom.get_namespaced_custom_object_scale(G, V, ns, P, name)
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == f"app.kubernetes.io/component=dask-worker,gateway.dask.org/cluster={name}," \
                                          f"gateway.dask.org/instance=gw-kubectl"
    cells = {c["name"]: cell(gw.cluster(name), c) for c in crd_views()[(G, V, P)].columns}
    assert {k: cells[k] for k in ("Phase", "Desired", "Running", "Held", "Schedd", "Requested", "Cluster")} == {
        "Phase": "Running", "Desired": 3, "Running": 3, "Held": 0, "Schedd": stack.env.get("SCHEDD_NAME", "local"),
        "Requested": 3, "Cluster": ours}

    if shutil.which("kubectl"):
        out = kubectl(api, tmp_path, "-n", ns, "scale", f"daskcluster/{name}", "--replicas=1")
        assert f"daskcluster.gateway.dask.org/{name} scaled" in out
        wait_until(lambda: len(live(stack, ours)) == 1, message="1 job after kubectl scale")
        assert store.get(ours).desired == 1
        wait_until(lambda: gw.status(name)["htcondor"].get("running") == 1, timeout=30, message="1 running")
        header, row = kubectl(api, tmp_path, "-n", ns, "get", "daskclusters", "-o", "wide").splitlines()
        assert header.split() == ["NAME", "PHASE", "DESIRED", "RUNNING", "HELD", "SCHEDD", "AGE", "IDLE",
                                  "REQUESTED", "CLUSTER"]
        assert row.split()[:6] == [name, "Running", "1", "1", "0", cells["Schedd"]] and row.split()[-1] == ours
    gw.patch(name, "/spec/active", False)
    gw.wait_phase(name, "Stopped")
    wait_until(lambda: not live(stack, ours), message="jobs removed")


def test_delete_cleans_up_and_releases_the_finalizer(stack, api, tmp_path, operators, service_user):
    ns, name = "del", "c2"
    gw = Gateway(api, ns, "gw-del", service_user)
    operators.append(start_operator(stack, api, tmp_path, "gw-del"))
    gw.create(name, replicas=2)
    gw.scheduler_ready(name)
    status = gw.wait_phase(name, "Running")
    ours = status["htcondor"]["cluster"]
    wait_until(lambda: len(live(stack, ours)) == 2, message="2 jobs")
    gw.delete(name)
    wait_until(lambda: gw.cluster(name) is None, message="DaskCluster gone once the finalizer is off")
    wait_until(lambda: not live(stack, ours), message="jobs removed")
    assert gw.obj("pods", bodies.scheduler_pod_name(name)) is None
    assert gw.obj("secrets", bodies.secret_name(name)) is None


def test_refused_owner_fails_and_the_record_ages_out(stack, api, tmp_path, operators):
    """Failed with status.message, no objects, finalizer off; OPERATOR_COMPLETED_MAX_AGE later the
    DaskCluster itself is deleted (as dask-gateway's controller does)."""
    ns, name = "refused", "c7"
    gw = Gateway(api, ns, "gw-refused", "root")
    operators.append(start_operator(stack, api, tmp_path, "gw-refused", OPERATOR_COMPLETED_MAX_AGE="2"))
    gw.create(name)
    status = gw.wait_phase(name, "Failed")
    assert status["message"].startswith("owner refused:") and creates(api, "pods", ns) == 0
    assert gw.obj("secrets", bodies.secret_name(name)) is None
    wait_until(lambda: gw.cluster(name) is None, timeout=20, message="the Failed record deleted")


def test_sigkill_and_restart_repeats_nothing(stack, api, tmp_path, operators, service_user):
    ns, name = "restart", "c3"
    gw = Gateway(api, ns, "gw-restart", service_user)
    first = start_operator(stack, api, tmp_path, "gw-restart", name="first")
    operators.append(first)
    gw.create(name, replicas=2)
    gw.scheduler_ready(name)
    ours = gw.wait_phase(name, "Running")["htcondor"]["cluster"]
    wait_until(lambda: len(live(stack, ours)) == 2 and gw.status(name)["htcondor"].get("requested") == 2,
               message="2 jobs")
    first.kill(signal.SIGKILL)
    first.popen.wait(10)
    operators.append(second := start_operator(stack, api, tmp_path, "gw-restart", name="second"))
    wait_until(lambda: "serving DaskClusters" in (tmp_path / "second.log").read_text(), timeout=30,
               message="the restarted operator leads")
    time.sleep(3)  # a few resyncs
    assert len(live(stack, ours)) == 2 and workers_named(stack, ours) == 2, "no duplicate jobs"
    assert creates(api, "pods", ns) == 1 and creates(api, "secrets", ns) == 1, "no duplicate objects"
    gw.patch(name, "/spec/replicas", 1)
    wait_until(lambda: len(live(stack, ours)) == 1, message="the new operator scales")
    assert second.alive()


def test_one_operator_acts_and_the_other_takes_over_the_lease(stack, api, tmp_path, operators, service_user):
    ns = "lease"
    gw = Gateway(api, ns, "gw-lease", service_user)
    a = start_operator(stack, api, tmp_path, "gw-lease", name="a")
    b = start_operator(stack, api, tmp_path, "gw-lease", name="b")
    operators += [a, b]
    logs = {a: tmp_path / "a.log", b: tmp_path / "b.log"}

    def leaders():
        return [p for p in (a, b) if p.alive() and "serving DaskClusters" in logs[p].read_text()]

    leader = wait_until(lambda: leaders() and leaders()[0], timeout=30, message="a leader")
    gw.create("first")
    gw.wait_phase("first", "Pending")
    time.sleep(2)
    assert len(leaders()) == 1, "only one operator leads"
    assert creates(api, "pods", ns) == 1
    lease = api.get("coordination.k8s.io", "leases", "lease-gw-lease", "htdask-operator")
    assert lease and lease["spec"]["holderIdentity"]
    leader.kill(signal.SIGKILL)
    other = b if leader is a else a
    wait_until(lambda: "serving DaskClusters" in logs[other].read_text(), timeout=30, message="takeover")
    gw.create("second")
    gw.wait_phase("second", "Pending")
    assert creates(api, "pods", ns) == 2, "each cluster's pod created once"
    assert api.get("coordination.k8s.io", "leases", "lease-gw-lease", "htdask-operator")["spec"][
        "holderIdentity"] != lease["spec"]["holderIdentity"]


def test_watch_end_and_410_gone_are_survived(stack, api, tmp_path, operators, service_user):
    ns = "watch"
    gw = Gateway(api, ns, "gw-watch", service_user)
    api.cap_watches(1.0)
    operators.append(start_operator(stack, api, tmp_path, "gw-watch"))
    gw.create("w1")
    gw.wait_phase("w1", "Pending")
    time.sleep(1.5)  # the watches end and are resumed
    gw.create("w2")
    gw.wait_phase("w2", "Pending")
    api.compact()  # resumed watches now get 410 Gone and must list again
    time.sleep(1.5)
    gw.create("w3")
    gw.wait_phase("w3", "Pending")
    assert any(c.verb == "list" for c in api.calls(resource="daskclusters")[1:]), "listed again after 410"


# ---- the faults of issue 16 -------------------------------------------------------------------------

def test_fault1_resync_never_shortens_the_retry_backoff(stack, api, tmp_path, operators, service_user):
    """422 on every Pod create with a resync every 0.5 s: the retries follow the backoff (0.5 s
    doubling: attempts at about 0, 0.5, 1.5, 3.5, 7.5 s) and the cluster shows why in status.message."""
    ns, name = "backoff", "c5"
    gw = Gateway(api, ns, "gw-backoff", service_user)
    api.fail("POST", rf"/namespaces/{ns}/pods$", 422, message="pods are forbidden here")
    operators.append(start_operator(stack, api, tmp_path, "gw-backoff", OPERATOR_RESYNC_SECONDS="0.5"))
    gw.create(name)
    wait_until(lambda: creates(api, "pods", ns) >= 1, message="first attempt")
    t0 = time.monotonic()
    time.sleep(7.0)
    attempts = creates(api, "pods", ns)
    assert attempts <= 6, f"{attempts} pod creates in {time.monotonic() - t0:.1f}s: the resync cut the backoff"
    message = wait_until(lambda: gw.status(name).get("message"), message="status.message")
    assert "pods are forbidden here" in message or "422" in message
    secrets = [c.body["data"] for c in api.calls("create", "secrets") if c.namespace == ns]
    assert len(secrets) >= 2, "each attempt creates the Secret again (409 after the first)"
    assert all(data == secrets[0] for data in secrets), "one keypair, not a new one per attempt"


def test_fault2_a_malformed_object_is_skipped(stack, api, tmp_path, operators, service_user):
    ns = "malformed"
    gw = Gateway(api, ns, "gw-bad", service_user)
    operators.append(proc := start_operator(stack, api, tmp_path, "gw-bad"))
    bad = daskcluster(name="bad", username=service_user)
    del bad["metadata"]["namespace"]
    bad["metadata"]["labels"][bodies.LABEL_INSTANCE] = "gw-bad"
    api.put_raw(G, V, P, None, bad)
    time.sleep(1.0)
    gw.create("good")
    gw.wait_phase("good", "Pending")
    assert proc.alive(), "one malformed object does not stop the operator"


def test_fault3_another_instances_cluster_is_left_alone(stack, api, tmp_path, operators, service_user):
    """The server (or a proxy) ignores labelSelector: the operator still checks the instance label."""
    ns = "instances"
    gw = Gateway(api, ns, "gw-mine", service_user)
    api.ignore_label_selectors()
    operators.append(start_operator(stack, api, tmp_path, "gw-mine"))
    gw.create("theirs", instance="gw-theirs")
    gw.create("mine")
    gw.wait_phase("mine", "Pending")
    time.sleep(2.0)
    theirs = gw.cluster("theirs")
    assert FINALIZER not in (theirs["metadata"].get("finalizers") or []) and "status" not in theirs
    assert gw.obj("pods", bodies.scheduler_pod_name("theirs")) is None
    assert gw.obj("secrets", bodies.secret_name("theirs")) is None


def test_fault4_adding_the_finalizer_never_drops_another_controllers(stack, api, tmp_path, operators, service_user):
    """Another controller adds its finalizer while the operator's finalizer patch is on its way:
    the patch carries a JSON-patch test, fails, and is redone on the fresh object, so both stay."""
    ns, name = "finalizers", "c6"
    gw = Gateway(api, ns, "gw-fin", service_user)
    delayed = api.fail("PATCH", rf"/namespaces/{ns}/daskclusters/{name}$", None, delay=1.0, times=1)
    operators.append(start_operator(stack, api, tmp_path, "gw-fin"))
    gw.create(name)
    wait_until(lambda: delayed.hits == 1, message="the operator's first patch")
    current = gw.cluster(name)
    current["metadata"]["finalizers"] = ["other.example.org/keep"]
    gw.custom.replace_namespaced_custom_object(G, V, ns, P, name, current)  # while that patch waits
    wait_until(lambda: FINALIZER in (gw.cluster(name)["metadata"].get("finalizers") or []), message="ours added")
    assert gw.cluster(name)["metadata"]["finalizers"] == ["other.example.org/keep", FINALIZER]
    assert [c.status for c in api.calls("patch", "daskclusters")][0] == 422, "the stale patch was refused"
    gw.wait_phase(name, "Pending")
    finalizer_patches = [c.body for c in api.calls("patch", "daskclusters") if c.namespace == ns
                         and any("/metadata/finalizers" in op.get("path", "") for op in c.body or [])]
    assert finalizer_patches and all(any(op["op"] == "test" for op in ops) for ops in finalizer_patches)
    gw.patch(name, "/spec/active", False)
    gw.wait_phase(name, "Stopped")
    wait_until(lambda: gw.cluster(name)["metadata"].get("finalizers") == ["other.example.org/keep"],
               message="only ours removed")


def test_cli_operator_refuses_missing_settings_and_configuration(tmp_path):
    import subprocess
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    out = subprocess.run([sys.executable, "cli.py", "operator"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "DASK_GATEWAY_INSTANCE (--instance) is required" in out.stderr
    out = subprocess.run([sys.executable, "cli.py", "operator", "--instance", "dask-gateway", "--api-url",
                          "http://api/api"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.startswith("error: no Kubernetes configuration")
    assert len(out.stderr.strip().splitlines()) == 1
