"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does it.

The Deployment runs one replica; the Lease makes sure that during a rollout, a node partition or a
mistaken ``--replicas 2`` only one operator acts.  ``decide`` is the pure rule; ``LeaderElector``
applies it through ``KubeClient`` (get, create, update on the Lease -- nothing else).

Rule: the Lease is ours to take when it does not exist, has no holder, is ours, or was last renewed
more than ``leaseDurationSeconds`` ago.  A replace carries the ``resourceVersion`` we read, so two
candidates racing for an expired Lease cannot both win (the loser gets 409 Conflict).
A leader that cannot renew for two thirds of the lease duration stops leading (``run`` exits; the Deployment
restarts it as a candidate).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


def micro_time(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, datetime):
        return value.timestamp()
    s = str(value).replace("Z", "+00:00")
    return datetime.fromisoformat(s).timestamp()


def default_identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def decide(lease: dict | None, identity: str, now: float, duration: float, namespace: str,
           name: str) -> tuple[str, dict | None]:
    """('create' | 'renew' | 'acquire' | 'wait', body to write or None)."""
    spec_new = {"holderIdentity": identity, "leaseDurationSeconds": int(duration),
                "renewTime": micro_time(now)}
    if lease is None:
        spec_new.update(acquireTime=micro_time(now), leaseTransitions=0)
        return "create", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                          "metadata": {"name": name, "namespace": namespace}, "spec": spec_new}
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    renewed = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    held_for = float(spec.get("leaseDurationSeconds") or duration)
    meta = {"name": name, "namespace": namespace,
            "resourceVersion": (lease.get("metadata") or {}).get("resourceVersion")}
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": dict(spec)}
    if holder == identity:
        body["spec"].update(spec_new)
        return "renew", body
    if holder and now - renewed < held_for:
        return "wait", None
    body["spec"].update(spec_new)
    body["spec"]["acquireTime"] = micro_time(now)
    body["spec"]["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
    return "acquire", body


class LeaderElector:
    """Acquire the Lease, then keep renewing it in a thread; ``lost`` is set when leadership ends."""

    def __init__(self, kube, namespace: str, name: str, duration: float = 15.0, identity: str | None = None,
                 clock=time.time):
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.duration = duration
        self.identity = identity or default_identity()
        self.clock = clock
        self.lost = threading.Event()
        self._last_renew = 0.0
        self._thread: threading.Thread | None = None

    @property
    def renew_deadline(self) -> float:
        """Stop leading this long after the last renew, well before anyone else may take over."""
        return self.duration * 2 / 3

    def try_once(self) -> bool:
        """One round of the rule; True when we hold the Lease afterwards."""
        lease = self.kube.read_lease(self.namespace, self.name)
        now = self.clock()
        what, body = decide(lease, self.identity, now, self.duration, self.namespace, self.name)
        if what == "wait":
            return False
        try:
            if what == "create":
                self.kube.create_lease(self.namespace, body)
            else:
                self.kube.replace_lease(self.namespace, self.name, body)
        except ApiException as e:
            if e.status == 409:  # someone else wrote it between our read and write
                return False
            raise
        if what != "renew":
            log.info("lease %s/%s: %s as %s", self.namespace, self.name,
                     "created" if what == "create" else "acquired", self.identity)
        self._last_renew = now
        return True

    def acquire(self, stop: threading.Event) -> bool:
        """Block until we lead (True) or ``stop`` is set (False)."""
        waiting_logged = False
        while not stop.is_set():
            try:
                if self.try_once():
                    return True
            except Exception as e:  # API unreachable: keep trying
                log.warning("lease %s/%s: %s", self.namespace, self.name, e)
            if not waiting_logged:
                log.info("lease %s/%s is held by another operator; waiting", self.namespace, self.name)
                waiting_logged = True
            stop.wait(self.duration / 3)
        return False

    def release(self) -> None:
        """On a clean stop: hand the Lease back (no holder) so a successor need not wait it out."""
        try:
            lease = self.kube.read_lease(self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace,
                                 "resourceVersion": lease["metadata"].get("resourceVersion")},
                    "spec": {**lease["spec"], "holderIdentity": None}}
            self.kube.replace_lease(self.namespace, self.name, body)
            log.info("lease %s/%s released", self.namespace, self.name)
        except Exception as e:  # it expires by itself
            log.warning("lease %s/%s: release failed: %s", self.namespace, self.name, e)

    def start_renewing(self, stop: threading.Event) -> None:
        def loop():
            while not stop.wait(self.duration / 3):
                try:
                    if not self.try_once():
                        log.error("lease %s/%s was taken by another operator; stopping", self.namespace, self.name)
                        self.lost.set()
                        return
                except Exception as e:
                    log.warning("lease %s/%s: renew failed: %s", self.namespace, self.name, e)
                    if self.clock() - self._last_renew >= self.renew_deadline:
                        log.error("lease %s/%s not renewed for %.0fs; stopping", self.namespace, self.name,
                                  self.renew_deadline)
                        self.lost.set()
                        return
        self._thread = threading.Thread(target=loop, name="lease", daemon=True)
        self._thread.start()
