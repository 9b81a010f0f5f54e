"""The operator's pure parts: naming, bodies (checked against dask-gateway's own KubeController),
and ``handlers.reconcile`` fed with DaskClusters as dask-gateway's KubeBackend writes them."""
from __future__ import annotations

import copy

import pytest

from htdask.k8s_operator import bodies
from htdask.k8s_operator.handlers import (DELETE_TASK, FINALIZER, REQUEST_GRACE, SCALE_TASK, Credentials, Ref, TaskRequest,
                                   reconcile, scheduler_ready, scheduler_state, worker_options)
from htdask.k8s_operator.naming import htcondor_cluster_name
from tests.test_operator_objects import (API_URL, CLUSTER_LABELS, CONFIG, INSTANCE, NAME, NAMESPACE, POD_UID, T0,
                                         UID, b64, daskcluster, fixed_credentials, operator_config, scheduler_pod)
from htdask.domain.validation import validate_cluster_name

OURS = htcondor_cluster_name(NAMESPACE, NAME)
#: status.selector: the labels dask-gateway gives the cluster's worker pods (the CRD's scale labelSelectorPath)
SELECTOR = f"app.kubernetes.io/component=dask-worker,gateway.dask.org/cluster={NAME},gateway.dask.org/instance={INSTANCE}"
CLUSTER_OWNER_REF = {"apiVersion": "gateway.dask.org/v1alpha1", "kind": "DaskCluster", "name": NAME, "uid": UID}
POD_OWNER_REF = {"apiVersion": "v1", "kind": "Pod", "name": f"dask-scheduler-{NAME}", "uid": POD_UID}
LABELS = dict(CLUSTER_LABELS)

EXPECTED_SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {
        "labels": {**LABELS, "app.kubernetes.io/component": "credentials"},
        "annotations": {},
        "name": f"dask-credentials-{NAME}",
        "ownerReferences": [CLUSTER_OWNER_REF],
    },
    "data": {
        "dask.crt": b64(fixed_credentials(NAME)[0]),
        "dask.pem": b64(fixed_credentials(NAME)[1]),
        "api-token": b64("0123456789abcdef0123456789abcdef"),
    },
}

EXPECTED_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "labels": {**LABELS, "app.kubernetes.io/component": "dask-scheduler"},
        "annotations": {},
        "name": f"dask-scheduler-{NAME}",
        "ownerReferences": [CLUSTER_OWNER_REF],
    },
    "spec": {
        "containers": [{
            "name": "dask-scheduler",
            "image": "ghcr.io/dask/dask-gateway:2026.3.0",
            "args": ["dask", "scheduler", "--protocol", "tls", "--host", "", "--port", "8786",
                     "--dashboard-address", ":8787", "--dg-api-address", ":8788",
                     "--preload", "dask_gateway.scheduler_preload", "--dg-heartbeat-period", "0",
                     "--dg-adaptive-period", "3.0", "--dg-idle-timeout", "0.0"],
            "env": [
                {"name": "OMP_NUM_THREADS", "value": "1"},
                {"name": "DASK_GATEWAY_API_URL", "value": API_URL},
                {"name": "DASK_GATEWAY_CLUSTER_NAME", "value": f"{NAMESPACE}.{NAME}"},
                {"name": "DASK_GATEWAY_API_TOKEN", "value": "/etc/dask-credentials/api-token"},
                {"name": "DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "value": "/etc/dask-credentials/dask.crt"},
                {"name": "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT", "value": "/etc/dask-credentials/dask.crt"},
                {"name": "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY", "value": "/etc/dask-credentials/dask.pem"},
                {"name": "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT", "value": "/etc/dask-credentials/dask.crt"},
                {"name": "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY", "value": "/etc/dask-credentials/dask.pem"},
            ],
            "resources": {"requests": {"cpu": "1.000", "memory": "2147483648"},
                          "limits": {"cpu": "1.000", "memory": "2147483648"}},
            "volumeMounts": [{"name": "dask-credentials", "mountPath": "/etc/dask-credentials/", "readOnly": True}],
            "ports": [{"name": "scheduler", "containerPort": 8786}, {"name": "dashboard", "containerPort": 8787},
                      {"name": "api", "containerPort": 8788}],
            "readinessProbe": {"httpGet": {"port": 8788, "path": "/api/health"}, "periodSeconds": 5,
                               "failureThreshold": 3},
        }],
        "volumes": [{"name": "dask-credentials", "secret": {"secretName": f"dask-credentials-{NAME}"}}],
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
    },
}

EXPECTED_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "labels": {**LABELS, "app.kubernetes.io/component": "dask-scheduler"},
        "annotations": {},
        "name": f"dask-{NAME}",
        "ownerReferences": [POD_OWNER_REF],
    },
    "spec": {
        "clusterIP": "None",
        "selector": {"gateway.dask.org/cluster": NAME, "gateway.dask.org/instance": INSTANCE,
                     "app.kubernetes.io/component": "dask-scheduler"},
        "ports": [{"name": "scheduler", "port": 8786, "targetPort": "scheduler"},
                  {"name": "dashboard", "port": 8787, "targetPort": "dashboard"},
                  {"name": "api", "port": 8788, "targetPort": "api"}],
    },
}

EXPECTED_OPTIONS = {
    "scheduler_address": f"tls://dask-{NAME}.{NAMESPACE}:8786",
    "api_url": API_URL,
    "nthreads": 2,
    "memory_limit": 4294967296,
    "request_cpus": 2,
    "request_memory": 4294967296,
    "environment": {"OMP_NUM_THREADS": "1"},
    "universe": "vanilla",
    "extra_submit": {"+DaskGatewayClusterName": f'"{NAMESPACE}.{NAME}"'},
}

ALL_OBJECTS = [Ref("IngressRoute", f"dask-{NAME}"), Ref("IngressRouteTCP", f"dask-{NAME}"),
               Ref("Service", f"dask-{NAME}"), Ref("Pod", f"dask-scheduler-{NAME}"),
               Ref("Secret", f"dask-credentials-{NAME}")]


def run(cluster, **kw):
    kw.setdefault("cfg", operator_config())
    kw.setdefault("now", T0)
    kw.setdefault("owner", "alice")
    kw.setdefault("credentials", fixed_credentials)
    return reconcile(cluster, **kw)


def running_status(requested=None, **ht) -> dict:
    status = {"phase": "Running", "credentials": f"dask-credentials-{NAME}",
              "schedulerPod": f"dask-scheduler-{NAME}", "service": f"dask-{NAME}",
              "ingressroute": f"dask-{NAME}", "ingressroutetcp": f"dask-{NAME}", "selector": SELECTOR,
              "htcondor": {"cluster": OURS, "owner": "alice", **ht}}
    if requested is not None:
        status["htcondor"]["requested"] = requested
        status["htcondor"]["requestedAt"] = "2026-05-28T20:25:00Z"
    return status


# ---- naming ------------------------------------------------------------------------------------------

def test_cluster_name_is_the_daskcluster_name_plus_a_namespace_hash():
    assert OURS == f"{NAME}-{__import__('hashlib').sha256(f'{NAMESPACE}/{NAME}'.encode()).hexdigest()[:8]}"
    assert htcondor_cluster_name(NAMESPACE, NAME) == OURS, "deterministic"
    assert htcondor_cluster_name("other", NAME) != OURS, "same name in another namespace: another cluster"
    long = htcondor_cluster_name("ns", "My.Cluster." + "x" * 200)
    assert validate_cluster_name(long) == long and len(long) == 63 and long.startswith("my-cluster-xxx")
    assert htcondor_cluster_name("ns", "....").startswith("k8s-")


# ---- bodies ------------------------------------------------------------------------------------------

def test_bodies_are_exactly_dask_gateways():
    cluster = daskcluster()
    assert bodies.secret_body(cluster, INSTANCE, *fixed_credentials(NAME)) == EXPECTED_SECRET
    assert bodies.scheduler_pod_body(cluster, INSTANCE, API_URL) == EXPECTED_POD
    assert bodies.service_body(cluster, INSTANCE, scheduler_pod()) == EXPECTED_SERVICE


def test_bodies_match_dask_gateways_kubecontroller(monkeypatch):
    """The same bodies from dask-gateway's KubeController (plus the ownerReferences its create_*
    methods add), compared through the kubernetes client's models as they go on the wire."""
    pytest.importorskip("kubernetes_asyncio", reason="dask-gateway's controller module imports kubernetes_asyncio")
    import dask_gateway_server.backends.kubernetes.controller as kc
    from dask_gateway_server.utils import FrozenAttrDict
    from kubernetes import client as k8s

    monkeypatch.setattr(kc, "new_keypair", lambda sni: fixed_credentials(sni)[:2])
    monkeypatch.setattr(kc.uuid, "uuid4", lambda: type("U", (), {"hex": fixed_credentials(NAME)[2]})())
    ctl = kc.KubeController(gateway_instance=INSTANCE, api_url=API_URL)
    cluster = daskcluster()
    api = k8s.ApiClient()

    def wire(body, kind):
        return api.sanitize_for_serialization(api.deserialize(__import__("json").dumps(body), f"V1{kind}",
                                                              "application/json"))

    up_secret = ctl.make_secret(NAME)
    up_secret["metadata"]["ownerReferences"] = [CLUSTER_OWNER_REF]
    up_pod = ctl.make_pod(NAMESPACE, NAME, FrozenAttrDict(cluster["spec"]["config"]))
    up_pod["metadata"]["ownerReferences"] = [CLUSTER_OWNER_REF]
    up_service = {"apiVersion": "v1", "kind": "Service", **ctl.make_service(NAME)}
    up_service["metadata"]["ownerReferences"] = [POD_OWNER_REF]
    assert wire(bodies.secret_body(cluster, INSTANCE, *fixed_credentials(NAME)), "Secret") == wire(up_secret, "Secret")
    assert wire(bodies.scheduler_pod_body(cluster, INSTANCE, API_URL), "Pod") == wire(up_pod, "Pod")
    assert wire(bodies.service_body(cluster, INSTANCE, scheduler_pod()), "Service") == wire(up_service, "Service")
    # the routes are custom objects (no model): compared as dicts
    sched = scheduler_pod()
    up_route = ctl.make_ingressroute(NAME, NAMESPACE)
    up_route["metadata"]["ownerReferences"] = [POD_OWNER_REF]
    up_tcp = ctl.make_ingressroutetcp(NAME, NAMESPACE)
    up_tcp["metadata"]["ownerReferences"] = [POD_OWNER_REF]
    assert bodies.ingressroute_body(cluster, INSTANCE, sched) == up_route
    assert bodies.ingressroutetcp_body(cluster, INSTANCE, sched) == up_tcp


def test_extra_pod_config_is_merged_like_dask_gateway():
    cluster = daskcluster()
    cluster["spec"]["config"].update(
        scheduler_extra_pod_config={"tolerations": [{"key": "k", "operator": "Exists"}]},
        scheduler_extra_container_config={"env": [{"name": "EXTRA", "value": "1"}]},
        scheduler_extra_pod_labels={"team": "a"}, image_pull_policy="Always",
        image_pull_secrets=[{"name": "regcred"}])
    pod = bodies.scheduler_pod_body(cluster, INSTANCE, API_URL)
    container = pod["spec"]["containers"][0]
    assert pod["spec"]["tolerations"] == [{"key": "k", "operator": "Exists"}]
    assert container["env"][-1] == {"name": "EXTRA", "value": "1"} and len(container["env"]) == 10
    assert container["imagePullPolicy"] == "Always" and pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["labels"]["team"] == "a"


# ---- the scheduler pod ---------------------------------------------------------------------------------

@pytest.mark.parametrize("state,expected,ready", [
    ("pending", "waiting", False), ("running", "running", False), ("ready", "running", True),
    ("terminated", "terminated", False)])
def test_scheduler_state(state, expected, ready):
    assert scheduler_state(scheduler_pod(state)) == expected
    assert scheduler_ready(scheduler_pod(state)) is ready


# ---- Pending -------------------------------------------------------------------------------------------

def test_new_daskcluster_gets_finalizer_secret_and_scheduler_pod():
    a = run(daskcluster())
    assert a.add_finalizer and not a.remove_finalizer
    assert a.create == [EXPECTED_SECRET, EXPECTED_POD]
    assert a.enqueue == [] and a.delete == []
    assert a.status == {"phase": "Pending", "credentials": f"dask-credentials-{NAME}",
                        "schedulerPod": f"dask-scheduler-{NAME}", "selector": SELECTOR,
                        "htcondor": {"cluster": OURS, "owner": "alice"}}
    assert "0123456789abcdef" not in repr(a), "the token never shows in a repr"


def test_scheduler_pod_seen_gets_its_service_but_stays_pending_until_ready():
    pending = run(daskcluster()).status
    cluster = daskcluster(finalizers=[FINALIZER], status=pending, replicas=2)
    a = run(cluster, scheduler_pod=scheduler_pod("running"))
    assert not a.add_finalizer
    assert a.create == [EXPECTED_SERVICE]
    assert a.enqueue == [], "no worker before the scheduler is ready"
    assert a.status == {**pending, "service": f"dask-{NAME}"}


def test_ready_scheduler_makes_the_cluster_running_and_enqueues_the_replicas():
    status = {**run(daskcluster()).status, "service": f"dask-{NAME}"}
    cluster = daskcluster(finalizers=[FINALIZER], status=status, replicas=3)
    a = run(cluster, scheduler_pod=scheduler_pod("ready"),
            summary={"desired": None, "idle": 0, "running": 0, "held": 0, "error": None})
    assert [b["kind"] for b in a.create] == ["IngressRoute", "IngressRouteTCP"]
    assert a.create[1]["spec"]["routes"][0]["match"] == f"HostSNI(`daskgateway-{NAMESPACE}.{NAME}`)"
    assert a.enqueue == [TaskRequest(SCALE_TASK, OURS, n=3, owner="alice", options=EXPECTED_OPTIONS, schedd=None)]
    assert a.status == {**running_status(), "htcondor": {
        "cluster": OURS, "owner": "alice", "requested": 3, "requestedAt": "2026-05-28T20:26:40Z",
        "idle": 0, "running": 0, "held": 0}}


def test_running_with_zero_replicas_enqueues_nothing():
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status())
    a = run(cluster, scheduler_pod=scheduler_pod("ready"))
    assert a.enqueue == [] and a.create == [] and a.status is None


def test_scheduler_that_ends_before_ready_fails_the_cluster():
    status = run(daskcluster()).status
    a = run(daskcluster(finalizers=[FINALIZER], status=status), scheduler_pod=scheduler_pod("terminated"))
    assert a.status["phase"] == "Failed" and a.status["completionTime"] == "2026-05-28T20:26:40Z"
    assert a.status["message"] == "the scheduler pod ended before it was ready"
    assert a.enqueue == [TaskRequest(DELETE_TASK, OURS)]
    assert a.delete == ALL_OBJECTS and a.remove_finalizer


def test_refused_owner_fails_the_cluster_before_anything_is_created():
    a = run(daskcluster(username="root"), owner=None, owner_error="invalid submit user 'root': is root")
    assert a.create == [] and not a.add_finalizer and not a.remove_finalizer
    assert a.status["phase"] == "Failed"
    assert a.status["message"] == "owner refused: invalid submit user 'root': is root"


# ---- Running ---------------------------------------------------------------------------------------------

def test_replicas_change_enqueues_one_scale_and_records_it():
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(requested=3, idle=1, running=2, held=0),
                          replicas=5)
    summary = {"desired": 3, "idle": 1, "running": 2, "held": 0, "error": None}
    a = run(cluster, scheduler_pod=scheduler_pod(), summary=summary, last_status_write=T0 - 1)
    assert a.enqueue == [TaskRequest(SCALE_TASK, OURS, n=5, owner="alice", options=EXPECTED_OPTIONS)]
    assert a.status["htcondor"]["requested"] == 5, "written at once, not throttled"
    # the same object again (the status came back through the watch): nothing more
    again = run(daskcluster(finalizers=[FINALIZER], status=a.status, replicas=5), scheduler_pod=scheduler_pod(),
                summary={**summary, "desired": 5}, last_status_write=T0)
    assert again.empty


def test_scale_down_to_zero_is_enqueued():
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(requested=4), replicas=0)
    a = run(cluster, scheduler_pod=scheduler_pod(), summary={"desired": 4, "idle": 0, "running": 4, "held": 0})
    assert [(t.task, t.n) for t in a.enqueue] == [(SCALE_TASK, 0)]


def test_schedd_option_routes_the_request():
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(), replicas=1, options={"schedd": "sched2"})
    a = run(cluster, scheduler_pod=scheduler_pod())
    assert a.enqueue[0].schedd == "sched2"
    assert a.status["htcondor"]["schedd"] == "sched2", "the SCHEDD column shows it at once"
    bad = daskcluster(finalizers=[FINALIZER], status=running_status(), replicas=1, options={"schedd": "a b"})
    b = run(bad, scheduler_pod=scheduler_pod())
    assert b.enqueue == [] and b.status["htcondor"]["error"].startswith("not enqueued: invalid spec.options.schedd")


def test_too_many_replicas_are_not_enqueued():
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(), replicas=5000)
    a = run(cluster, scheduler_pod=scheduler_pod())
    assert a.enqueue == []
    assert a.status["htcondor"]["error"] == "not enqueued: invalid spec.replicas 5000: exceeds the maximum of 1000"


def test_status_follows_the_summary_at_most_every_status_interval():
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(requested=3, idle=3, running=0, held=0),
                          replicas=3)
    summary = {"desired": 3, "idle": 1, "running": 2, "held": 0, "error": None}
    soon = run(cluster, scheduler_pod=scheduler_pod(), summary=summary, last_status_write=T0 - 4)
    assert soon.status is None and soon.enqueue == []
    assert soon.requeue_after == pytest.approx(6.0), "come back when the interval has passed"
    later = run(cluster, scheduler_pod=scheduler_pod(), summary=summary, last_status_write=T0 - 10)
    assert later.status["htcondor"] == {**running_status(requested=3)["htcondor"], "idle": 1, "running": 2,
                                        "held": 0}
    unchanged = run(cluster, scheduler_pod=scheduler_pod(), summary={**summary, "idle": 3, "running": 0},
                    last_status_write=T0 - 100)
    assert unchanged.empty and unchanged.requeue_after is None, "no write when nothing changed"


def test_held_workers_and_task_errors_reach_the_status():
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(requested=2), replicas=2)
    summary = {"desired": 2, "idle": 0, "running": 1, "held": 1, "error": "retrying after error: schedd down"}
    a = run(cluster, scheduler_pod=scheduler_pod(), summary=summary)
    assert a.status["htcondor"]["held"] == 1
    assert a.status["htcondor"]["error"] == "retrying after error: schedd down"


def test_a_request_lost_by_redis_is_enqueued_again_after_a_grace_period():
    status = running_status(requested=3)
    cluster = daskcluster(finalizers=[FINALIZER], status=status, replicas=3)
    summary = {"desired": None, "idle": 0, "running": 0, "held": 0}
    enqueued_at = bodies.parse_k8s_timestamp(status["htcondor"]["requestedAt"])
    early = run(cluster, scheduler_pod=scheduler_pod(), summary=summary, now=enqueued_at + 10)
    assert early.enqueue == []
    late = run(cluster, scheduler_pod=scheduler_pod(), summary=summary, now=enqueued_at + REQUEST_GRACE)
    assert [(t.task, t.n) for t in late.enqueue] == [(SCALE_TASK, 3)]


def test_scheduler_gone_while_running_fails_and_deletes_the_workers():
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(requested=3), replicas=3)
    for pod in (None, scheduler_pod("terminated")):
        a = run(cluster, scheduler_pod=pod)
        assert a.status["phase"] == "Failed"
        assert a.enqueue == [TaskRequest(DELETE_TASK, OURS)] and a.delete == ALL_OBJECTS and a.remove_finalizer


# ---- Stopped / deleted ----------------------------------------------------------------------------------

def test_active_false_stops_deletes_workers_and_objects_and_drops_the_finalizer():
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(requested=3), replicas=3, active=False)
    a = run(cluster, scheduler_pod=scheduler_pod())
    assert a.enqueue == [TaskRequest(DELETE_TASK, OURS)]
    assert a.delete == ALL_OBJECTS
    assert a.status == {**running_status(requested=3), "phase": "Stopped", "completionTime": "2026-05-28T20:26:40Z"}
    assert a.remove_finalizer and not a.create


def test_stopped_cluster_is_left_alone_until_it_expires():
    status = {**running_status(requested=3), "phase": "Stopped", "completionTime": "2026-05-28T20:26:40Z"}
    cluster = daskcluster(status=status, active=False)
    assert run(cluster).empty
    assert run(cluster, now=T0 + 86399).empty
    assert run(cluster, now=T0 + 86400).delete_object
    with_finalizer = run(daskcluster(status=status, active=False, finalizers=["other", FINALIZER]))
    assert with_finalizer.remove_finalizer and with_finalizer.enqueue == []


def test_deleted_daskcluster_deletes_workers_and_objects_then_releases_it():
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(requested=3), replicas=3, deleting=True)
    a = run(cluster, scheduler_pod=scheduler_pod())
    assert a.enqueue == [TaskRequest(DELETE_TASK, OURS)]
    assert a.delete == ALL_OBJECTS and a.remove_finalizer and a.status is None
    # without our finalizer it is not ours to handle
    assert run(daskcluster(status=running_status(), deleting=True)).empty


def test_deleting_a_stopped_cluster_enqueues_no_second_delete():
    status = {**running_status(requested=3), "phase": "Stopped", "completionTime": "2026-05-28T20:26:40Z"}
    a = run(daskcluster(status=status, finalizers=[FINALIZER], deleting=True))
    assert a.enqueue == [] and a.remove_finalizer


# ---- worker options --------------------------------------------------------------------------------------

def test_worker_options_carry_address_ports_tls_files_and_gateway_variables():
    cluster = daskcluster()
    cluster["spec"]["config"]["environment"].update(DASK_GATEWAY_API_TOKEN="x", DASK_DISTRIBUTED__COMM__X="y")
    cfg = operator_config(credentials_dir="/shared/dask", worker_universe="docker", worker_port_range="40000:40100",
                          nanny_port_range="40100:40200",
                          scheduler_address="tls://{service}.{namespace}.svc.example.org:8786")
    d = f"/shared/dask/{OURS}"
    assert worker_options(cluster, cfg) == {
        **EXPECTED_OPTIONS,
        "scheduler_address": f"tls://dask-{NAME}.{NAMESPACE}.svc.example.org:8786",
        "universe": "docker", "docker_image": CONFIG["image"],
        "worker_port_range": "40000:40100", "nanny_port_range": "40100:40200",
        "tls_cert": f"{d}/dask.crt", "tls_key": f"{d}/dask.pem", "api_token": f"{d}/api-token",
    }


def test_worker_options_make_a_valid_submit_description():
    """The options are WorkerJobSpec fields the job layer accepts as they are."""
    from htdask.domain.jobspec import WorkerJobSpec, worker_submit_description
    cfg = operator_config(credentials_dir="/shared/dask")
    spec = WorkerJobSpec(cluster=OURS, owner="alice", **worker_options(daskcluster(), cfg))
    text = str(worker_submit_description(spec, [(0, f"{OURS}-0")]))
    assert f"tls://dask-{NAME}.{NAMESPACE}:8786" in text
    assert f"DASK_GATEWAY_API_URL={API_URL}" in text
    # the credentials reach the execute host by file transfer: named in the sandbox, shipped from the directory
    assert "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT=dask.crt" in text
    assert (f"transfer_input_files = /shared/dask/{OURS}/api-token,/shared/dask/{OURS}/dask.crt,"
            f"/shared/dask/{OURS}/dask.pem") in text
    assert f'DaskGatewayClusterName = "{NAMESPACE}.{NAME}"' in text


def test_credentials_are_mirrored_for_the_jobs_when_a_directory_is_set():
    cfg = operator_config(credentials_dir="/shared/dask")
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(), replicas=2)
    a = run(cluster, cfg=cfg, scheduler_pod=scheduler_pod())
    assert a.write_credentials == Credentials(OURS, f"dask-credentials-{NAME}", "alice")
    stop = run(daskcluster(finalizers=[FINALIZER], status=running_status(2), active=False), cfg=cfg)
    assert stop.remove_credentials == OURS


def test_no_traefik_routes_when_disabled():
    cfg = operator_config(traefik_routes=False)
    status = {**run(daskcluster(), cfg=cfg).status, "service": f"dask-{NAME}"}
    a = run(daskcluster(finalizers=[FINALIZER], status=status), cfg=cfg, scheduler_pod=scheduler_pod())
    assert a.create == [] and a.status["phase"] == "Running" and "ingressroute" not in a.status
    assert run(daskcluster(finalizers=[FINALIZER], status=a.status, active=False), cfg=cfg).delete == ALL_OBJECTS[2:]


def test_reconcile_does_not_modify_its_input():
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(requested=1), replicas=3)
    before = copy.deepcopy(cluster)
    run(cluster, scheduler_pod=scheduler_pod(), summary={"desired": 1, "idle": 1, "running": 0, "held": 0})
    assert cluster == before


# ---- issue 16: faults 3 and 4 ----------------------------------------------------------------------------

def test_a_cluster_of_another_instance_is_left_alone():
    """Fault 3: even when the server ignored the labelSelector, another instance's cluster gets nothing."""
    cluster = daskcluster()
    cluster["metadata"]["labels"]["gateway.dask.org/instance"] = "another-gateway"
    a = run(cluster, scheduler_pod=scheduler_pod("ready"))
    assert a.empty and not a.create and not a.add_finalizer and a.status is None
    del cluster["metadata"]["labels"]["gateway.dask.org/instance"]
    assert run(cluster).empty


def test_stopped_and_failed_clusters_keep_no_worker_counts():
    """Fault 4: a Stopped/Failed status does not go on showing its last idle/running/held counts."""
    cluster = daskcluster(finalizers=[FINALIZER], active=False,
                          status=running_status(requested=3, idle=1, running=2, held=0))
    a = run(cluster, scheduler_pod=scheduler_pod())
    assert a.status["phase"] == "Stopped"
    assert not {"idle", "running", "held"} & set(a.status["htcondor"]), a.status
    assert a.status["htcondor"]["requested"] == 3
    failed = run(daskcluster(finalizers=[FINALIZER], status=running_status(requested=3, idle=1, running=2, held=0)),
                 scheduler_pod=None)
    assert failed.status["phase"] == "Failed" and not {"idle", "running", "held"} & set(failed.status["htcondor"])


def test_a_failure_message_is_cleared_once_an_attempt_goes_through():
    status = {**running_status(), "message": "reconcile failed: 422 Invalid: no"}
    a = run(daskcluster(finalizers=[FINALIZER], status=status), scheduler_pod=scheduler_pod("ready"))
    assert a.status is not None and "message" not in a.status


def test_the_crds_printer_columns_and_scale_paths_read_what_reconcile_writes():
    """`kubectl get daskclusters` (deploy/k8s/crd.yaml's printer columns) and /scale read fields the operator
    writes: a Running cluster with a poll summary has a value under every column's and scale path."""
    from tests.k8s_scale import cell, crd_views, get_path, scale_of
    view = crd_views()[(bodies.GROUP, bodies.VERSION, bodies.PLURAL)]
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(requested=2), replicas=3)
    summary = {"desired": 2, "idle": 1, "running": 1, "held": 1, "error": None, "schedd": "submit1"}
    a = run(cluster, scheduler_pod=scheduler_pod(), summary=summary, last_status_write=T0 - 60)
    written = {**cluster, "status": a.status}
    cells = {c["name"]: cell(written, c) for c in view.columns}
    assert {k: cells[k] for k in ("Phase", "Desired", "Running", "Held", "Schedd", "Idle", "Requested", "Cluster")} \
        == {"Phase": "Running", "Desired": 3, "Running": 1, "Held": 1, "Schedd": "submit1", "Idle": 1,
            "Requested": 3, "Cluster": OURS}
    assert cells["Age"] is not None
    for c in view.columns:
        assert get_path(written, c["jsonPath"])[1], f"column {c['name']}: nothing at {c['jsonPath']}"
    scale, found = scale_of(written, view)
    assert found and scale["spec"] == {"replicas": 3}
    assert scale["status"] == {"replicas": 1, "selector": SELECTOR}


# ---- idle and lifetime limits (issue 27 item 2) -----------------------------------------------------------

def test_config_limits_go_with_the_scale_request_and_are_checked_against_the_site_maxima():
    cfg = operator_config(limit_maxima={"idle_timeout": 7200.0, "max_lifetime": 0.0})
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(), replicas=2)
    cluster["spec"]["config"] = {**cluster["spec"]["config"], "idle_timeout": "30m", "max_lifetime": 86400}
    a = run(cluster, scheduler_pod=scheduler_pod(), cfg=cfg)
    assert [(t.task, t.n, t.limits) for t in a.enqueue] == [
        (SCALE_TASK, 2, {"idle_timeout": 1800.0, "max_lifetime": 86400.0})]
    # dask-gateway's idle_timeout 0.0 (none chosen): the site's default applies, nothing is sent
    cluster["spec"]["config"] = {**cluster["spec"]["config"], "idle_timeout": 0.0, "max_lifetime": None}
    assert run(cluster, scheduler_pod=scheduler_pod(), cfg=cfg).enqueue[0].limits is None
    cluster["spec"]["config"]["idle_timeout"] = "3h"
    b = run(cluster, scheduler_pod=scheduler_pod(), cfg=cfg)
    assert b.enqueue == []
    assert b.status["htcondor"]["error"] == ("not enqueued: invalid spec.config.idle_timeout '3 h': exceeds the "
                                             "site's maximum 2 h (IDLE_TIMEOUT_MAX)")


def test_a_cluster_the_limits_pass_deleted_is_stopped_with_the_reason():
    cluster = daskcluster(finalizers=[FINALIZER], status=running_status(requested=3), replicas=3)
    summary = {"desired": None, "idle": 0, "running": 0, "held": 0, "deleted": True,
               "culled": {"reason": "idle", "detail": "idle for 31 min (idle timeout 30 min)"}}
    a = run(cluster, scheduler_pod=scheduler_pod(), summary=summary)
    assert a.status["phase"] == "Stopped"
    assert a.status["message"] == "deleted by its idle limit: idle for 31 min (idle timeout 30 min)"
    assert a.enqueue == [TaskRequest(DELETE_TASK, OURS)] and a.delete == ALL_OBJECTS and a.remove_finalizer
