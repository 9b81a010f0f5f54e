"""Deleting a cluster: remove every job, then forget its state and leave its tombstone."""
from __future__ import annotations

import logging

from htdask.domain.jobspec import cluster_constraint
from htdask.domain.workerjobs import LIVE, jobs_of
from htdask.state import Store
from tasks.reconcile import PROJECTION, submit_user
from workers.htcondor.schedd import Schedd

log = logging.getLogger(__name__)


def delete_jobs_and_state(store: Store, schedd: Schedd, cluster: str, settings,
                          seq: int | None = None) -> int | None:
    """Remove every job of the cluster, then forget its state and leave its tombstone (so no message
    older than the delete re-creates it); returns how many jobs were live, or None when a request
    newer than the delete (`seq`) arrived meanwhile and keeps the cluster (it reconciles toward it)."""
    lock = store.cluster_lock(cluster)
    if not store.acquire(lock, blocking=True, blocking_timeout=settings.lock_timeout):
        raise TimeoutError(f"cluster {cluster}: lock still held after {settings.lock_timeout}s")
    try:
        record = store.get(cluster)
        jobs = jobs_of(cluster, schedd.query(cluster_constraint(cluster), PROJECTION))
        live = [j for j in jobs if j.status in LIVE]
        if jobs:
            result = schedd.remove(constraint=cluster_constraint(cluster), user=submit_user(record, settings),
                                   reason=f"cluster {cluster} deleted")
            log.info("cluster %s: deleted, %s", cluster, result.message)
        if not store.delete_cluster(cluster, seq):
            log.info("cluster %s: a request newer than delete %s arrived; the cluster is kept", cluster, seq)
            return None
        log.info("cluster %s: state cleared, tombstone at request %d (%d live jobs removed)", cluster,
                 store.tombstone(cluster), len(live))
        return len(live)
    finally:
        if not store.release(lock):
            log.warning("cluster %s: lock expired before release", cluster)
