"""The operator's loop: lease, list+watch, a work queue, periodic status refresh.

    python cli.py operator [--kubeconfig FILE] [--instance NAME] [--api-url URL] ...

1. Wait for the leader Lease (``lease.LeaderElector``); renew it in a thread; exit with status 1
   when it is lost (the Deployment restarts us as a candidate).
2. List the scheduler pods, then the DaskClusters (so every cluster is reconciled knowing its pod),
   and keep both caches current with watches (restarted every ``WATCH_SECONDS``, relisted on
   410 Gone or any error).
3. Every change of a DaskCluster or of its scheduler pod puts the cluster's key on a work queue;
   every ``resync_seconds`` all keys are put there too (that is how the Redis summaries reach the
   status).  One thread takes keys off the queue, calls ``handlers.reconcile`` and
   ``client.apply``; a failure puts the key back with exponential backoff (0.5 s doubling to 5
   minutes).  Keys are handled one at a time, so two reconciles of one cluster never overlap.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from k8s_operator import bodies
from k8s_operator.client import CredentialsFiles, KubeClient, TaskBackend, apply, cluster_log, describe_error
from k8s_operator.config import OperatorConfig
from k8s_operator.handlers import STOPPED_PHASES, new_credentials, reconcile
from k8s_operator.naming import htcondor_cluster_name
from workers.validation import ValidationError

log = logging.getLogger(__name__)

WATCH_SECONDS = 300
MAX_BACKOFF = 300.0
OWNER_CACHE_SECONDS = 300.0


def _rv(obj: dict) -> int | None:
    raw = (obj.get("metadata") or {}).get("resourceVersion")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def obj_key(obj: dict) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


class WorkQueue:
    """Keys with due times; a key waits at most once (the earlier due time wins).  Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._due: dict[str, float] = {}
        self._cond = threading.Condition()

    def put(self, key: str, delay: float = 0.0) -> None:
        with self._cond:
            due = self.clock() + max(0.0, delay)
            if key not in self._due or due < self._due[key]:
                self._due[key] = due
            self._cond.notify()

    def get(self, timeout: float) -> str | None:
        """The key due first, once it is due; None after ``timeout`` seconds without one."""
        deadline = self.clock() + timeout
        with self._cond:
            while True:
                now = self.clock()
                if self._due:
                    key, due = min(self._due.items(), key=lambda kv: kv[1])
                    if due <= now:
                        del self._due[key]
                        return key
                    wait = min(due, deadline) - now
                else:
                    wait = deadline - now
                if wait <= 0:
                    return None
                self._cond.wait(wait)

    def __len__(self) -> int:
        return len(self._due)


class Informer:
    """A cache of one kind kept by list + watch; ``on_event(type, obj)`` after every change."""

    def __init__(self, name: str, list_fn, watch_args_fn, on_event, watch_seconds: int = WATCH_SECONDS):
        self.name = name
        self.list_fn = list_fn
        self.watch_args_fn = watch_args_fn
        self.on_event = on_event
        self.watch_seconds = watch_seconds
        self.cache: dict[str, dict] = {}
        self.resource_version: str | None = None
        self._lock = threading.Lock()
        self._watch: watch.Watch | None = None

    def store(self, obj: dict) -> bool:
        """Keep ``obj`` unless the cache already has a newer version; True when kept."""
        key = obj_key(obj)
        with self._lock:
            old = self.cache.get(key)
            if old is not None and _rv(old) is not None and _rv(obj) is not None and _rv(obj) < _rv(old):
                return False
            self.cache[key] = obj
            return True

    def get(self, key: str) -> dict | None:
        return self.cache.get(key)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self.cache)

    def relist(self) -> None:
        items, rv = self.list_fn()
        seen = set()
        for obj in items:
            seen.add(obj_key(obj))
            self.store(obj)
            self.on_event("ADDED", obj)
        with self._lock:
            vanished = [self.cache.pop(key) for key in set(self.cache) - seen]
        for obj in vanished:
            self.on_event("DELETED", obj)
        self.resource_version = rv
        log.info("%s: listed %d", self.name, len(items))

    def watch_once(self) -> None:
        """One watch request from the last resourceVersion, until the server ends it."""
        func, args, kwargs = self.watch_args_fn()
        self._watch = w = watch.Watch()
        for event in w.stream(func, *args, resource_version=self.resource_version,
                              timeout_seconds=self.watch_seconds, allow_watch_bookmarks=True,
                              _request_timeout=(10, self.watch_seconds + 30), **kwargs):
            etype, obj = event["type"], event["raw_object"]
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if etype == "BOOKMARK":
                self.resource_version = rv or self.resource_version
                continue
            if etype == "DELETED":
                with self._lock:
                    self.cache.pop(obj_key(obj), None)
            else:
                self.store(obj)
            self.resource_version = rv or self.resource_version
            self.on_event(etype, obj)

    def run(self, stop: threading.Event) -> None:
        """Watch until ``stop``: a watch the server ended is resumed from the last resourceVersion;
        after 410 Gone or an error the kind is listed again (with backoff after errors)."""
        failures = 0
        while not stop.is_set():
            try:
                self.watch_once()
                failures = 0
                continue
            except ApiException as e:
                if e.status == 410:
                    log.info("%s: watch expired (410 Gone); listing again", self.name)
                else:
                    failures += 1
                    log.warning("%s: watch failed (%s %s); listing again", self.name, e.status, e.reason)
            except Exception as e:  # connection reset, read timeout ...
                failures += 1
                log.warning("%s: watch failed (%s); listing again", self.name, e)
            if failures and stop.wait(min(30.0, 0.5 * 2 ** failures)):
                return
            try:
                self.relist()
            except Exception as e:
                failures += 1
                log.warning("%s: list failed (%s)", self.name, e)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()


class Operator:
    """Reconciles every DaskCluster of one dask-gateway instance, one key at a time."""

    def __init__(self, kube: KubeClient, backend: TaskBackend, cfg: OperatorConfig, *,
                 credentials_files: CredentialsFiles | None = None, clock: Callable[[], float] = time.time,
                 credentials=new_credentials):
        self.kube = kube
        self.backend = backend
        self.cfg = cfg
        self.clock = clock
        self.credentials = credentials
        self.files = credentials_files or (CredentialsFiles(cfg.credentials_dir) if cfg.credentials_dir else None)
        self.queue = WorkQueue()
        self.last_status: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self._owners: dict[str, tuple[float, str | None, str | None]] = {}
        self.clusters = Informer("daskclusters", lambda: kube.list_clusters(cfg.label_selector),
                                 lambda: kube.watch_args("clusters", cfg.label_selector), self.on_cluster_event)
        pod_selector = f"{cfg.label_selector},{bodies.LABEL_COMPONENT}={bodies.SCHEDULER}"
        self.pods = Informer("scheduler pods", lambda: kube.list_scheduler_pods(pod_selector),
                             lambda: kube.watch_args("pods", pod_selector), self.on_pod_event)

    # ---- events -----------------------------------------------------------------------------------
    def on_cluster_event(self, etype: str, obj: dict) -> None:
        key = obj_key(obj)
        if etype == "DELETED":
            self.last_status.pop(key, None)
            self.failures.pop(key, None)
            return
        if key in self.failures and etype == "MODIFIED":
            return  # in retry backoff (its own status.message write comes back here): keep the due time
        self.queue.put(key)

    def on_pod_event(self, etype: str, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        cluster = (meta.get("labels") or {}).get(bodies.LABEL_CLUSTER)
        if cluster and meta.get("namespace"):
            self.queue.put(f"{meta['namespace']}/{cluster}")

    def resync(self) -> None:
        for key in self.clusters.keys():
            if key not in self.failures:  # a cluster in retry backoff keeps its due time
                self.queue.put(key)

    # ---- one reconcile ----------------------------------------------------------------------------
    def owner(self, username: str | None) -> tuple[str | None, str | None]:
        """(Unix user, None) or (None, why it was refused); raises when the look-up is unavailable."""
        if not username:
            return None, None
        now = self.clock()
        cached = self._owners.get(username)
        if cached and now - cached[0] < OWNER_CACHE_SECONDS:
            return cached[1], cached[2]
        try:
            result = (self.backend.resolve_owner(username), None)
        except ValidationError as e:  # bad input: UnknownEmail, UserRefused, a bad user name ...
            result = (None, str(e))
        self._owners[username] = (now, *result)
        return result

    def process(self, key: str) -> None:
        cluster = self.clusters.get(key)
        if cluster is None:
            return
        try:
            meta, spec, status = cluster["metadata"], cluster.get("spec") or {}, cluster.get("status") or {}
            ns, name = meta["namespace"], meta["name"]
        except (KeyError, TypeError, AttributeError) as e:
            log.error("DaskCluster %s is malformed (%s missing); skipped", key, e)
            return
        clog = cluster_log(log, ns, name)
        try:
            live = (not meta.get("deletionTimestamp") and status.get("phase") not in STOPPED_PHASES
                    and spec.get("active", True))
            owner, owner_error = self.owner(spec.get("username")) if live else (None, None)
            summary = self.backend.summary(htcondor_cluster_name(ns, name)) if live else None
            now = self.clock()
            actions = reconcile(cluster, cfg=self.cfg, now=now,
                                scheduler_pod=self.pods.get(f"{ns}/{bodies.scheduler_pod_name(name)}"),
                                summary=summary, owner=owner, owner_error=owner_error,
                                last_status_write=self.last_status.get(key), credentials=self.credentials)
            if actions.empty:
                if actions.requeue_after:
                    self.queue.put(key, actions.requeue_after)
                self.failures.pop(key, None)
                return
            clog.debug("%r", actions)
            applied = apply(self.kube, self.backend, cluster, actions, self.files)
        except Exception as e:
            n = self.failures[key] = self.failures.get(key, 0) + 1
            delay = min(MAX_BACKOFF, 0.5 * 2 ** (n - 1))
            clog.warning("reconcile failed (attempt %d, again in %.1fs): %s", n, delay, describe_error(e),
                         exc_info=not isinstance(e, (ApiException, ValidationError)))
            self.kube.report_failure(cluster, f"reconcile failed: {describe_error(e)}")
            self.queue.put(key, delay)
            return
        self.failures.pop(key, None)
        if applied.cluster is not None:
            self.clusters.store(applied.cluster)
        for obj in applied.created:
            if obj.get("kind") == "Pod":
                self.pods.store(obj)
        if applied.status_written:
            self.last_status[key] = now
        if actions.requeue_after:
            self.queue.put(key, actions.requeue_after)

    # ---- the loop -------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, lost: threading.Event | None = None) -> None:
        """List, watch and reconcile until ``stop`` (or ``lost``) is set."""
        self.pods.relist()
        self.clusters.relist()
        threads = [threading.Thread(target=inf.run, args=(stop,), name=f"watch {inf.name}", daemon=True)
                   for inf in (self.pods, self.clusters)]
        threads.append(threading.Thread(target=self._resync_loop, args=(stop,), name="resync", daemon=True))
        for t in threads:
            t.start()
        lost = lost or threading.Event()
        while not stop.is_set() and not lost.is_set():
            key = self.queue.get(timeout=1.0)
            if key is not None:
                self.process(key)
        stop.set()
        for inf in (self.pods, self.clusters):
            inf.stop()
        for t in threads:  # a watch blocked on the network is left to the process exit (daemon)
            t.join(timeout=1.0)

    def _resync_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.cfg.resync_seconds):
            self.resync()


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

    from k8s_operator.lease import LeaderElector
    load_kube_config(kubeconfig, context)
    kube = KubeClient(k8s.ApiClient())
    backend = TaskBackend()
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    lost = threading.Event()
    if leader_election:
        elector = LeaderElector(kube, cfg.namespace, cfg.lease_name, cfg.lease_seconds)
        log.info("lease %s/%s: waiting to lead as %s", cfg.namespace, cfg.lease_name, elector.identity)
        if not elector.acquire(stop):
            return 0
        elector.start_renewing(stop)
        lost = elector.lost
    log.info("serving DaskClusters of instance %s (gateway API %s)", cfg.instance, cfg.api_url)
    try:
        Operator(kube, backend, cfg).run(stop, lost)
    finally:
        if leader_election and not lost.is_set():
            elector.release()
    if lost.is_set():
        log.error("leadership lost; exiting")
        return 1
    return 0
