"""The operator's runtime: kopf handlers around the pure ``handlers.reconcile``, one leader by Lease.

    python cli.py operator [--kubeconfig FILE] [--instance NAME] [--api-url URL] ...

* ``kubernetes.leaderelection`` holds the ``coordination.k8s.io/v1`` Lease ``OPERATOR_LEASE_NAME``
  in ``OPERATOR_NAMESPACE``; kopf starts once we lead, and the process exits with status 1 when
  the Lease is lost (the Deployment restarts it as a candidate).
* kopf watches the DaskClusters and scheduler pods of our instance (a server-side label
  selector, and the handlers' ``labels`` filters on every object, whatever the server did with
  the selector).  create / resume / update
  / delete of a DaskCluster, an event of its scheduler pod, and a timer every
  ``OPERATOR_RESYNC_SECONDS`` (the comparison with the Redis summaries) all call ``reconcile_now``:
  ``handlers.reconcile`` -> ``client.apply``, one cluster at a time.
* A failed reconcile is logged, shown in ``status.message`` and retried by the timer after
  0.5 s doubling to 5 minutes; neither the timer nor our own writes shorten that wait (a new
  spec or scheduler pod event is handled at once, as client-go's work queue does).
* kopf keeps its bookkeeping in memory (no annotations, no ``status.kopf``), posts no Events,
  scans no CRDs, runs no peering; its finalizer is ours, ``gateway.dask.org/htcondor-workers``,
  required while the cluster is live, so kopf adds it before anything is created and removes it
  after a deletion is handled or once the cluster is Stopped/Failed.
"""
from __future__ import annotations

import copy
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict

import kopf
from kubernetes.client.exceptions import ApiException

from htdask.k8s_operator import bodies
from htdask.k8s_operator.client import CredentialsFiles, KubeClient, TaskBackend, apply, cluster_log, describe_error
from htdask.k8s_operator.config import OperatorConfig
from htdask.k8s_operator.handlers import FINALIZER, STOPPED_PHASES, new_credentials, reconcile
from htdask.k8s_operator.naming import htcondor_cluster_name
from htdask.domain import retry
from htdask.domain.validation import ValidationError

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0
OWNER_CACHE_SECONDS = 300.0
WATCH_SECONDS = 300
RESOURCE = (bodies.GROUP, bodies.VERSION, bodies.PLURAL)


class MemoryProgress(kopf.ProgressStorage):
    """kopf's per-handler progress, in memory: dask-gateway's objects get no kopf fields."""

    def __init__(self):
        self.records: dict = {}

    def fetch(self, *, key, body):
        return self.records.get((body.metadata.uid, key))

    def store(self, *, key, record, body, patch):
        self.records[(body.metadata.uid, key)] = dict(record)

    def purge(self, *, key, body, patch):
        self.records.pop((body.metadata.uid, key), None)

    def touch(self, *, body, patch, value):
        pass  # nothing to touch: our handlers never ask kopf to retry (they keep their own backoff)

    def clear(self, *, essence):
        return copy.deepcopy(essence)


class MemoryDiffBase(kopf.DiffBaseStorage):
    """The last handled spec and labels, in memory (after a restart every cluster is 'created')."""

    def __init__(self):
        super().__init__()
        self.essences: dict = {}

    def fetch(self, *, body):
        return self.essences.get(body.metadata.uid)

    def store(self, *, body, patch, essence):
        self.essences[body.metadata.uid] = essence


def _rv(obj: dict) -> int:
    raw = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(raw) if raw.isdigit() else 0


class Runtime:
    """What the kopf handlers share: the newest copy of each cluster and pod, retry state, locks."""

    def __init__(self, kube: KubeClient, backend: TaskBackend, cfg: OperatorConfig, stop: threading.Event,
                 credentials=new_credentials):
        self.kube, self.backend, self.cfg, self.stop, self.credentials = kube, backend, cfg, stop, credentials
        self.files = CredentialsFiles(cfg.credentials_dir) if cfg.credentials_dir else None
        self.clusters: dict[str, dict] = {}
        self.pods: dict[str, dict] = {}
        self.due: dict[str, float] = {}  # monotonic time of the next timer reconcile
        self.failures: dict[str, int] = {}
        self.last_status: dict[str, float] = {}
        self.owners: dict[str, tuple] = {}
        self.keypairs: dict[str, tuple] = {}  # made for a Secret whose creation is not recorded yet
        self.locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    @staticmethod
    def remember(store: dict, key: str, obj: dict) -> None:
        """Keep ``obj`` unless ``store`` has a newer version (our own writes can be ahead of the watch)."""
        if key not in store or _rv(obj) >= _rv(store[key]):
            store[key] = obj

    def owner(self, username: str | None) -> tuple[str | None, str | None]:
        """(Unix user, None) or (None, why it was refused); raises when the look-up is unavailable."""
        if not username:
            return None, None
        cached = self.owners.get(username)
        if cached and time.monotonic() - cached[0] < OWNER_CACHE_SECONDS:
            return cached[1], cached[2]
        try:
            result = (self.backend.resolve_owner(username), None)
        except ValidationError as e:
            result = (None, str(e))
        self.owners[username] = (time.monotonic(), *result)
        return result

    def reconcile_now(self, body, *, timer: bool = False) -> bool:
        """One reconcile of the cluster (a timer call only when it is due); False when it failed
        (logged, retried when due), never raises."""
        try:
            meta = body["metadata"]
            ns, name = meta["namespace"], meta["name"]
        except (KeyError, TypeError) as e:
            log.error("a DaskCluster without metadata %s was skipped: %.200r", e, body)
            return True
        key = f"{ns}/{name}"
        with self.locks[key]:
            if timer and time.monotonic() < self.due.get(key, 0.0):
                return True
            self.remember(self.clusters, key, copy.deepcopy(dict(body)))
            self.due[key] = time.monotonic() + self.cfg.resync_seconds
            return self._reconcile(key, self.clusters[key], cluster_log(log, ns, name))

    def _reconcile(self, key: str, cluster: dict, clog) -> bool:
        meta, spec, status = cluster["metadata"], cluster.get("spec") or {}, cluster.get("status") or {}
        ns, name = meta["namespace"], meta["name"]
        try:
            live = (not meta.get("deletionTimestamp") and status.get("phase") not in STOPPED_PHASES
                    and spec.get("active", True))
            owner, owner_error = self.owner(spec.get("username")) if live else (None, None)
            now = time.time()
            actions = reconcile(cluster, cfg=self.cfg, now=now, scheduler_pod=self.pods.get(
                                    f"{ns}/{bodies.scheduler_pod_name(name)}"),
                                summary=self.backend.summary(htcondor_cluster_name(ns, name)) if live else None,
                                owner=owner, owner_error=owner_error, last_status_write=self.last_status.get(key),
                                credentials=lambda n: self.keypairs.setdefault(key, self.credentials(n)))
            actions.add_finalizer = actions.remove_finalizer = False  # kopf's finalizer (see the docstring)
            applied = None if actions.empty else apply(self.kube, self.backend, cluster, actions, self.files)
        except Exception as e:
            n = self.failures[key] = self.failures.get(key, 0) + 1
            delay = retry.delay(n, 0.5, MAX_BACKOFF)
            self.due[key] = time.monotonic() + delay
            clog.warning("reconcile failed (attempt %d, again in %.1fs): %s", n, delay, describe_error(e),
                         exc_info=not isinstance(e, (ApiException, ValidationError)))
            self.kube.report_failure(cluster, f"reconcile failed: {describe_error(e)}")
            return False
        self.failures.pop(key, None)
        if actions.requeue_after:
            self.due[key] = min(self.due[key], time.monotonic() + actions.requeue_after)
        if applied is not None:
            if applied.cluster is not None:
                self.remember(self.clusters, key, applied.cluster)
            for obj in applied.created:
                if obj.get("kind") == "Pod":
                    self.remember(self.pods, f"{ns}/{obj['metadata']['name']}", obj)
            if applied.status_written:
                self.last_status[key] = now
                self.keypairs.pop(key, None)  # the status names the Secret now: no new keypair is made
        return True

    def housekeeping(self) -> None:
        """Stopped/Failed clusters have no timer (it would need the finalizer): age them out here."""
        while not self.stop.wait(self.cfg.resync_seconds):
            for key, cluster in list(self.clusters.items()):
                if (cluster.get("status") or {}).get("phase") in STOPPED_PHASES:
                    self.reconcile_now(cluster, timer=True)


def register(rt: Runtime, registry: kopf.OperatorRegistry) -> None:
    """The kopf handlers: every one of them ends in ``rt.reconcile_now``."""
    ours = {bodies.LABEL_INSTANCE: rt.cfg.instance}

    def live(status, **_) -> bool:
        return status.get("phase") not in STOPPED_PHASES

    def on_change(body, **_):
        rt.reconcile_now(body)

    def on_delete(body, namespace, name, **_):
        """kopf removes the finalizer when this returns: so return only once the cleanup is done."""
        while not rt.reconcile_now(body):
            if rt.stop.wait(max(0.1, rt.due.get(f"{namespace}/{name}", 0.0) - time.monotonic())):
                raise kopf.TemporaryError("stopping; the next leader finishes the cleanup")

    def on_timer(body, meta, **_):
        if FINALIZER in (meta.get("finalizers") or ()):  # kopf adds it before the first create
            rt.reconcile_now(body, timer=True)

    def on_cluster_event(event, **_):
        obj, meta = event["object"], event["object"].get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        if event["type"] == "DELETED":
            for d in (rt.clusters, rt.due, rt.failures, rt.last_status, rt.keypairs):
                d.pop(key, None)
        else:
            rt.remember(rt.clusters, key, obj)

    def on_pod_event(event, namespace, meta, labels, **_):
        key = f"{namespace}/{meta['name']}"
        if event["type"] == "DELETED":
            rt.pods.pop(key, None)
        else:
            rt.remember(rt.pods, key, event["object"])
        cluster = rt.clusters.get(f"{namespace}/{labels.get(bodies.LABEL_CLUSTER)}")
        if cluster is not None and live((cluster.get("status") or {})):
            rt.reconcile_now(cluster)

    for decorator in (kopf.on.resume, kopf.on.create, kopf.on.update):
        decorator(*RESOURCE, registry=registry, labels=ours, when=live)(on_change)
    kopf.on.delete(*RESOURCE, registry=registry, labels=ours, when=live)(on_delete)
    kopf.timer(*RESOURCE, registry=registry, labels=ours, when=live,
               interval=min(1.0, rt.cfg.resync_seconds))(on_timer)
    kopf.on.event(*RESOURCE, registry=registry, labels=ours)(on_cluster_event)
    kopf.on.event("", "v1", "pods", registry=registry,
                  labels={**ours, bodies.LABEL_COMPONENT: bodies.SCHEDULER})(on_pod_event)

    @kopf.on.login(registry=registry)
    def login(**_):
        """The kubernetes client's configuration as load_kube_config left it (--kubeconfig, --context)."""
        from kubernetes import client as k8s
        c = k8s.Configuration.get_default_copy()
        header = c.get_api_key_with_prefix("BearerToken") or c.get_api_key_with_prefix("authorization")
        scheme, _, token = (header or "").rpartition(" ")
        return kopf.ConnectionInfo(server=c.host, ca_path=c.ssl_ca_cert, insecure=not c.verify_ssl,
                                   scheme=scheme or None, token=token or None, certificate_path=c.cert_file,
                                   private_key_path=c.key_file)


def settings(cfg: OperatorConfig) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    # the server filters by instance (the handlers' labels filters check it again on every object)
    s.watching.label_selectors[bodies.GROUP, bodies.PLURAL] = cfg.label_selector
    s.watching.label_selectors["pods"] = f"{cfg.label_selector},{bodies.LABEL_COMPONENT}={bodies.SCHEDULER}"
    s.persistence.finalizer = FINALIZER
    s.persistence.progress_storage = MemoryProgress()
    s.persistence.diffbase_storage = MemoryDiffBase()
    s.posting.enabled = False
    s.scanning.disabled = True
    s.watching.server_timeout = WATCH_SECONDS
    s.watching.client_timeout = WATCH_SECONDS + 30
    return s


class StartError(RuntimeError):
    """The operator cannot start (no Kubernetes configuration); one line for the user."""


def load_kube_config(kubeconfig: str | None = None, context: str | None = None) -> None:
    """In-cluster service account when in a pod (and no --kubeconfig), else the kubeconfig."""
    from kubernetes import config
    if kubeconfig is None:
        try:
            config.load_incluster_config()
            return
        except config.ConfigException:
            pass
    try:
        config.load_kube_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError) as e:
        raise StartError(f"no Kubernetes configuration: not in a pod, and the kubeconfig failed: {e}") from None


def run(cfg: OperatorConfig, *, kubeconfig: str | None = None, context: str | None = None,
        leader_election: bool = True) -> int:
    """Run until SIGTERM/SIGINT (0) or until the Lease is lost (1)."""
    from kubernetes import client as k8s
    load_kube_config(kubeconfig, context)
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # "Handler ... succeeded" per event
        logging.getLogger("leaderelection").setLevel(logging.WARNING)  # a line per renewal
    stop, leading, lost = threading.Event(), threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if leader_election:
        from kubernetes.leaderelection import electionconfig, leaderelection
        from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock
        identity = f"{cfg.pod_name or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        lease = int(cfg.lease_seconds)  # the Lease holds whole seconds
        election = leaderelection.LeaderElection(electionconfig.Config(
            LeaseLock(cfg.lease_name, cfg.namespace, identity), lease_duration=lease,
            renew_deadline=lease * 2 / 3, retry_period=max(1.0, lease / 5),
            onstarted_leading=leading.set, onstopped_leading=lambda: None))

        def elect():
            try:
                election.run()  # returns when the Lease could not be renewed in time
            except Exception:
                log.exception("lease %s/%s: leader election failed", cfg.namespace, cfg.lease_name)
            lost.set()
            if leading.is_set():
                # kopf stops on SIGTERM; its stop_flag would be waited for in an executor thread,
                # which blocks the loop's shutdown when kopf stops for another reason
                os.kill(os.getpid(), signal.SIGTERM)
            stop.set()
        log.info("lease %s/%s: waiting to lead as %s", cfg.namespace, cfg.lease_name, identity)
        threading.Thread(target=elect, name="lease", daemon=True).start()
        while not (leading.wait(0.2) or stop.is_set()):
            pass
        if stop.is_set():
            return 1 if lost.is_set() else 0
    rt = Runtime(KubeClient(k8s.ApiClient()), TaskBackend(), cfg, stop)
    registry = kopf.OperatorRegistry()
    register(rt, registry)
    threading.Thread(target=rt.housekeeping, name="housekeeping", daemon=True).start()
    log.info("serving DaskClusters of instance %s (gateway API %s)", cfg.instance, cfg.api_url)
    kopf.run(registry=registry, settings=settings(cfg), standalone=True, clusterwide=True)
    stop.set()
    if lost.is_set():
        log.error("leadership lost; exiting")
        return 1
    return 0
