"""What to do about one DaskCluster: a pure function from what is observed to ``Actions``.

``reconcile(cluster, cfg=..., scheduler_pod=..., summary=..., owner=..., now=...)`` looks at

* the DaskCluster as dask-gateway's KubeBackend writes it (``spec.username``, ``spec.config``,
  ``spec.replicas``, ``spec.active``) and as we left it (``status``, ``metadata.finalizers``);
* its scheduler pod (from the pod informer; None when there is none);
* the Redis summary row of our cluster (``tasks.api.status_rows``: desired, idle, running, held...);
* the owner, already resolved to a Unix user (or the reason it was refused);

and returns the Kubernetes bodies to create, the objects to delete, the Celery tasks to enqueue and
the status to write.  It never talks to anything; ``client.KubeClient.apply`` carries the Actions out,
in the order documented on ``Actions``.

Life of a DaskCluster (``status.phase``, as dask-gateway's controller):

    Pending  -- finalizer added; credentials Secret and scheduler Pod created; Service created once
                the pod exists; traefik routes and phase Running once the pod is Ready.
    Running  -- every change of spec.replicas enqueues ``scale_cluster(n)`` on the cluster's schedd
                queue; ``status.htcondor`` follows the Redis summaries (throttled).
    Stopped  -- spec.active false: ``delete_cluster`` enqueued, Pod/Service/Secret/routes deleted,
                finalizer removed.
    Failed   -- the scheduler pod ended or vanished, or the owner was refused: as Stopped.
    (limits)  -- ``spec.config.idle_timeout`` / ``max_lifetime`` (seconds or durations such as ``30m``; the
                site's IDLE_TIMEOUT / MAX_LIFETIME when absent or 0, refused over IDLE_TIMEOUT_MAX / MAX_LIFETIME_MAX
                in ``status.htcondor.error``) go with each scale request; when the controller's limits pass
                deleted the cluster (the summary's ``culled``), the DaskCluster is Stopped with the reason as
                ``status.message``.
    (deleted) -- deletionTimestamp set while our finalizer is on: as Stopped, then the finalizer goes.

``status.htcondor`` is ours: ``cluster`` (our cluster name, see ``naming``), ``owner``, ``requested``
(the replicas last enqueued), ``requestedAt``, ``schedd`` (the queue its requests go to),
``idle``/``running``/``held`` (from the poller's summary) and ``error`` (the cluster's last task error, or
why nothing was enqueued); ``status.selector`` is the scale subresource's label selector
(``bodies.worker_selector``). The CRD's printer columns and ``/scale`` read these (deploy/k8s/crd.yaml):
``kubectl scale`` writes ``spec.replicas``, the field dask-gateway writes, so it is served as any scale.
"""
from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Callable

from htdask.domain import joboptions, limits
from htdask.domain.joboptions import worker_job_options
from htdask.k8s_operator import bodies
from htdask.k8s_operator.config import OperatorConfig
from htdask.k8s_operator.naming import gateway_cluster_name, htcondor_cluster_name
from htdask.domain.request import ScaleRequest
from htdask.domain.validation import ValidationError
from htdask.domain.submitvalues import validate_classad_string

FINALIZER = "gateway.dask.org/htcondor-workers"
STOPPED_PHASES = ("Stopped", "Failed")
SCALE_TASK = "tasks.scale_cluster"
DELETE_TASK = "tasks.delete_cluster"
#: worker counts and the task error: status fields whose changes are throttled
THROTTLED = ("idle", "running", "held", "error")
WORKER_COUNTS = ("idle", "running", "held")
#: an enqueued scale request the Redis state does not show after this long is enqueued again
REQUEST_GRACE = 120.0
#: environment variables of spec.config.environment that the controller sets itself
RESERVED_ENV_PREFIXES = ("DASK_GATEWAY_", "DASK_DISTRIBUTED__COMM__")


@dataclass(frozen=True)
class Ref:
    """An object to delete in the cluster's namespace."""
    kind: str  # Pod | Service | Secret | IngressRoute | IngressRouteTCP
    name: str


@dataclass
class TaskRequest:
    """A Celery task to enqueue through tasks.api."""
    task: str  # SCALE_TASK | DELETE_TASK
    cluster: str
    n: int | None = None
    owner: str | None = None
    options: dict | None = None
    schedd: str | None = None
    request: ScaleRequest | None = field(default=None, compare=False)  # the scale request, checked once
    limits: dict | None = None  # idle_timeout / max_lifetime in seconds (spec.config), checked


@dataclass
class Credentials:
    """Mirror the cluster's credentials Secret into OPERATOR_CREDENTIALS_DIR/<cluster>/ for the jobs."""
    cluster: str
    secret: str
    owner: str | None


@dataclass
class Actions:
    """What ``apply`` does, in this order: create ``create`` (409 = exists); write credentials;
    enqueue ``enqueue``; delete ``delete`` (404 = gone); remove the credentials directory; write
    ``status``; delete the DaskCluster itself.  ``add_finalizer``/``remove_finalizer`` say what
    the finalizer must be; kopf carries them out (htdask/k8s_operator/main.py)."""
    namespace: str
    name: str
    cluster: str
    add_finalizer: bool = False
    create: list[dict] = field(default_factory=list)
    write_credentials: Credentials | None = None
    enqueue: list[TaskRequest] = field(default_factory=list)
    delete: list[Ref] = field(default_factory=list)
    remove_credentials: str | None = None
    status: dict | None = None
    remove_finalizer: bool = False
    delete_object: bool = False
    requeue_after: float | None = None
    notes: list[str] = field(default_factory=list)  # what happened, for the log (no secrets)

    def __repr__(self) -> str:  # never show the Secret's data
        created = [f"{b['kind']}/{b['metadata']['name']}" for b in self.create]
        return (f"Actions({self.namespace}/{self.name} -> {self.cluster}: add_finalizer={self.add_finalizer}, "
                f"create={created}, enqueue={[(t.task, t.n) for t in self.enqueue]}, "
                f"delete={[(r.kind, r.name) for r in self.delete]}, status={self.status is not None}, "
                f"remove_finalizer={self.remove_finalizer}, delete_object={self.delete_object}, "
                f"requeue_after={self.requeue_after})")

    @property
    def empty(self) -> bool:
        return not (self.add_finalizer or self.create or self.write_credentials or self.enqueue or self.delete
                    or self.remove_credentials or self.status is not None or self.remove_finalizer
                    or self.delete_object)


def new_credentials(name: str) -> tuple[bytes, bytes, str]:
    """(certificate, key, API token) as dask-gateway makes them: ``new_keypair(name)``, uuid4 hex."""
    from dask_gateway_server.tls import new_keypair
    cert, key = new_keypair(name)
    return cert, key, uuid.uuid4().hex


# ---- looking at the scheduler pod ---------------------------------------------------------------

def scheduler_state(pod: dict | None) -> str:
    """``waiting``, ``running``, ``terminated`` or ``unknown`` (dask-gateway's get_container_state,
    plus: a pod in phase Failed/Succeeded, or being deleted, counts as terminated)."""
    if pod is None:
        return "unknown"
    status = pod.get("status") or {}
    phase = status.get("phase", "Unknown")
    if phase in ("Failed", "Succeeded") or pod.get("metadata", {}).get("deletionTimestamp"):
        return "terminated"
    if phase == "Pending":
        return "waiting"
    for cs in status.get("containerStatuses") or ():
        if cs.get("name") == bodies.SCHEDULER and cs.get("state"):
            return next(iter(cs["state"]))
    return "unknown"


def scheduler_ready(pod: dict | None) -> bool:
    """Running and Ready (its readiness probe, ``GET :8788/api/health``, passes)."""
    if scheduler_state(pod) != "running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())


# ---- the worker jobs ------------------------------------------------------------------------------

def scheduler_address(cluster: dict, cfg: OperatorConfig) -> str:
    meta = cluster["metadata"]
    return cfg.scheduler_address.format(service=bodies.service_name(meta["name"]), namespace=meta["namespace"],
                                        name=meta["name"])


def worker_options(cluster: dict, cfg: OperatorConfig) -> dict:
    """``WorkerJobSpec`` fields for the cluster's worker jobs, from its ``spec.config``."""
    meta = cluster["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    config = (cluster.get("spec") or {}).get("config") or {}
    env = {k: str(v) for k, v in (config.get("environment") or {}).items()
           if not k.startswith(RESERVED_ENV_PREFIXES)}
    credentials = None
    if cfg.credentials_dir:
        d = f"{cfg.credentials_dir.rstrip('/')}/{htcondor_cluster_name(namespace, name)}"
        credentials = joboptions.credentials(tls_cert=f"{d}/dask.crt", tls_key=f"{d}/dask.pem",
                                             api_token=f"{d}/api-token")
    return worker_job_options(
        config, scheduler_address=scheduler_address(cluster, cfg), api_url=cfg.api_url, environment=env or None,
        credentials=credentials, universe=cfg.worker_universe, worker_port_range=cfg.worker_port_range,
        nanny_port_range=cfg.nanny_port_range,
        extra_submit={"+DaskGatewayClusterName": validate_classad_string(gateway_cluster_name(namespace, name))})


def owned_objects(name: str, cfg: OperatorConfig) -> list[Ref]:
    """Everything we may have created for a cluster, by its fixed name (deleted even if the status
    never recorded it, so a crash between create and status write orphans nothing)."""
    refs = []
    if cfg.traefik_routes:
        refs += [Ref("IngressRoute", bodies.route_name(name)), Ref("IngressRouteTCP", bodies.route_name(name))]
    refs += [Ref("Service", bodies.service_name(name)), Ref("Pod", bodies.scheduler_pod_name(name)),
             Ref("Secret", bodies.secret_name(name))]
    return refs


# ---- the reconciler ---------------------------------------------------------------------------------

def reconcile(cluster: dict, *, cfg: OperatorConfig, now: float, scheduler_pod: dict | None = None,
              summary: dict | None = None, owner: str | None = None, owner_error: str | None = None,
              last_status_write: float | None = None,
              credentials: Callable[[str], tuple[bytes, bytes, str]] = new_credentials) -> Actions:
    """The Actions that bring the world in line with ``cluster`` (see the module docstring).

    ``now`` is seconds since the epoch; ``last_status_write`` when this operator last wrote this
    cluster's status (None: not since it started).  ``owner`` must be given (resolved) for an active
    cluster, or ``owner_error`` saying why it was refused.
    """
    meta = cluster["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    a = Actions(namespace, name, htcondor_cluster_name(namespace, name))
    if (meta.get("labels") or {}).get(bodies.LABEL_INSTANCE) != cfg.instance:
        # Another dask-gateway's cluster: the watch's labelSelector should have kept it away, but a
        # server or proxy that drops the selector must not make us take it over.
        a.notes.append(f"not ours: label {bodies.LABEL_INSTANCE} is not {cfg.instance!r}")
        return a
    spec = cluster.get("spec") or {}
    old = cluster.get("status") or {}
    phase = old.get("phase", "Pending")
    ours = FINALIZER in (meta.get("finalizers") or ())

    if meta.get("deletionTimestamp"):
        if ours:
            if phase not in STOPPED_PHASES:
                a.enqueue.append(TaskRequest(DELETE_TASK, a.cluster))
                a.notes.append("DaskCluster deleted: delete enqueued")
            a.delete = owned_objects(name, cfg)
            a.remove_credentials = a.cluster if cfg.credentials_dir else None
            a.remove_finalizer = True
        return a

    if phase in STOPPED_PHASES:
        a.remove_finalizer = ours
        done = old.get("completionTime")
        if cfg.completed_max_age > 0 and done and now - bodies.parse_k8s_timestamp(done) >= cfg.completed_max_age:
            a.delete_object = True
            a.notes.append(f"{phase} since {done}: deleting the record")
        return a

    new = copy.deepcopy(old)
    new.setdefault("phase", "Pending")
    new.pop("message", None)  # why an earlier attempt failed (see report_failure); this one is fresh
    ht = new.setdefault("htcondor", {})
    ht["cluster"] = a.cluster
    new["selector"] = bodies.worker_selector(cfg.instance, name)
    a.add_finalizer = not ours

    if not spec.get("active", True):
        a.notes.append("spec.active is false: stopping")
        return _teardown(a, new, "Stopped", now, cfg)
    if owner_error is not None or not owner:
        reason = owner_error or "spec.username is missing"
        return _teardown(a, new, "Failed", now, cfg, message=f"owner refused: {reason}")
    ht["owner"] = owner

    if new["phase"] == "Pending":
        if not new.get("credentials"):
            cert, key, token = credentials(name)
            a.create.append(bodies.secret_body(cluster, cfg.instance, cert, key, token))
            new["credentials"] = bodies.secret_name(name)
        if not new.get("schedulerPod"):
            a.create.append(bodies.scheduler_pod_body(cluster, cfg.instance, cfg.api_url))
            new["schedulerPod"] = bodies.scheduler_pod_name(name)
        if scheduler_pod is None:
            return _finish(a, old, new, now, last_status_write, cfg)
        if scheduler_state(scheduler_pod) == "terminated":
            return _teardown(a, new, "Failed", now, cfg, message="the scheduler pod ended before it was ready")
        if not new.get("service"):
            a.create.append(bodies.service_body(cluster, cfg.instance, scheduler_pod))
            new["service"] = bodies.service_name(name)
        if not scheduler_ready(scheduler_pod):
            return _finish(a, old, new, now, last_status_write, cfg)
        if cfg.traefik_routes:
            if not new.get("ingressroute"):
                a.create.append(bodies.ingressroute_body(
                    cluster, cfg.instance, scheduler_pod, proxy_prefix=cfg.proxy_prefix,
                    entrypoint=cfg.proxy_web_entrypoint, middlewares=cfg.proxy_web_middlewares))
                new["ingressroute"] = bodies.route_name(name)
            if not new.get("ingressroutetcp"):
                a.create.append(bodies.ingressroutetcp_body(cluster, cfg.instance, scheduler_pod,
                                                            entrypoint=cfg.proxy_tcp_entrypoint))
                new["ingressroutetcp"] = bodies.route_name(name)
        new["phase"] = "Running"
        a.notes.append(f"scheduler ready at {scheduler_address(cluster, cfg)}: Running")

    if scheduler_pod is None or scheduler_state(scheduler_pod) == "terminated":
        return _teardown(a, new, "Failed", now, cfg, message="the scheduler pod ended or disappeared")
    culled = (summary or {}).get("culled")
    if culled:  # the controller's limits pass deleted it (tasks/limits.py): stop the DaskCluster too
        return _teardown(a, new, "Stopped", now, cfg,
                         message=f"deleted by its {culled.get('reason')} limit: {culled.get('detail')}")

    error = _scale(a, cluster, new, summary, owner, now, cfg)
    if summary is not None:
        if summary.get("schedd"):
            ht["schedd"] = str(summary["schedd"])
        ht["idle"] = int(summary.get("idle") or 0)
        ht["running"] = int(summary.get("running") or 0)
        ht["held"] = int(summary.get("held") or 0)
        error = error or summary.get("error")
    if error:
        ht["error"] = str(error)
    else:
        ht.pop("error", None)
    return _finish(a, old, new, now, last_status_write, cfg)


#: the request's fields as the DaskCluster resource names them
_SPEC_FIELDS = {"worker count": "spec.replicas", "schedd name": "spec.options.schedd"}


def _scale(a: Actions, cluster: dict, new: dict, summary: dict | None, owner: str, now: float,
           cfg: OperatorConfig) -> str | None:
    """Enqueue scale_cluster when spec.replicas differs from what was last enqueued (or the Redis
    state lost a request long ago); returns why nothing could be enqueued, if so."""
    spec = cluster.get("spec") or {}
    ht = new["htcondor"]
    try:  # the request's one check (tasks.api trusts a ScaleRequest it is given)
        req = ScaleRequest.build(cfg.max_workers, cluster=a.cluster, n=spec.get("replicas", 0) or 0, owner=owner,
                                 schedd=(spec.get("options") or {}).get("schedd"))
        config = spec.get("config") or {}
        # dask-gateway writes idle_timeout 0.0 when none was chosen: 0 (like absent) means the site's default
        own_limits = limits.requested({k: config.get(k) or None for k in limits.KINDS}, cfg.limit_maxima,
                                      {k: f"spec.config.{k}" for k in limits.KINDS})
    except ValidationError as e:  # named as the resource names it
        field = _SPEC_FIELDS.get(e.field, e.field)
        return f"not enqueued: {ValidationError(field, e.value, e.reason)}"
    replicas, schedd = req.n, req.schedd
    requested = ht.get("requested")
    lost = bool(summary is not None and requested and summary.get("desired") != requested
                and now - _epoch(ht.get("requestedAt")) >= REQUEST_GRACE)
    if (replicas == requested and not lost) or (requested is None and replicas == 0):
        return None
    options = worker_options(cluster, cfg)  # checked by tasks.api with the site's defaults
    a.enqueue.append(TaskRequest(SCALE_TASK, a.cluster, n=replicas, owner=owner, options=options, schedd=schedd,
                                 request=req.model_copy(update={"options": options}), limits=own_limits or None))
    if schedd:
        ht["schedd"] = schedd
    if cfg.credentials_dir and replicas > 0:
        a.write_credentials = Credentials(a.cluster, bodies.secret_name(a.name), owner)
    a.notes.append(f"replicas {'-' if requested is None else requested} -> {replicas}: scale enqueued"
                   + (" again (the Redis state does not show it)" if lost and replicas == requested else ""))
    ht["requested"] = replicas
    ht["requestedAt"] = bodies.k8s_timestamp(now)
    return None


def _epoch(ts: str | None) -> float:
    return bodies.parse_k8s_timestamp(ts) if ts else 0.0


def _teardown(a: Actions, new: dict, phase: str, now: float, cfg: OperatorConfig,
              message: str | None = None) -> Actions:
    """Stop everything: delete task, owned objects, phase Stopped/Failed, finalizer off."""
    a.enqueue.append(TaskRequest(DELETE_TASK, a.cluster))
    a.delete = owned_objects(a.name, cfg)
    a.remove_credentials = a.cluster if cfg.credentials_dir else None
    new["phase"] = phase
    new["completionTime"] = bodies.k8s_timestamp(now)
    for k in WORKER_COUNTS:  # no workers any more: stale counts would say otherwise
        new.get("htcondor", {}).pop(k, None)
    if message:
        new["message"] = message
    a.status = new
    if a.add_finalizer:  # never added: nothing to remove
        a.add_finalizer = False
    else:
        a.remove_finalizer = True
    a.notes.append(f"{phase}: delete enqueued, pods/services/secret removed" + (f" ({message})" if message else ""))
    return a


def _without_throttled(status: dict) -> dict:
    s = copy.deepcopy(status)
    for k in THROTTLED:
        (s.get("htcondor") or {}).pop(k, None)
    return s


def _finish(a: Actions, old: dict, new: dict, now: float, last_write: float | None,
            cfg: OperatorConfig) -> Actions:
    """Write the status when it changed -- at once for phase/resources/requests, and for worker
    counts only when ``cfg.status_interval`` passed since our last write (else come back then)."""
    if new == old:
        return a
    if _without_throttled(new) == _without_throttled(old) and last_write is not None:
        wait = cfg.status_interval - (now - last_write)
        if wait > 0:
            a.requeue_after = wait
            return a
    a.status = new
    return a
