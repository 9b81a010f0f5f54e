"""The idle and lifetime limits pass (`tasks.enforce_limits`, sent by beat every POLL_INTERVAL to each schedd's
poll queue): one pass serves every cluster recorded on the schedd.

For each cluster with a limit (its own, recorded when it was requested, else the site's IDLE_TIMEOUT /
MAX_LIFETIME; htdask.domain.limits) the pass
- asks its Dask scheduler whether it is idle (distributed's `check_idle`: no task processing, queued or
  unrunnable; one bounded call per scheduler, all at once: workers.dask_scheduler.idleness). A `tls://`
  scheduler is asked with the cluster's own TLS files (its job options `tls_cert`/`tls_key`, as its workers
  connect) when this worker can read them. A scheduler that cannot be asked (no address, unreachable,
  no answer, credentials needed) is NOT idle: its state says why, `status` shows it;
- records what it said (htdask.state.limits: idle time counts from the first pass that saw the scheduler
  idle with the same `idle_since`, by Redis' clock) and the cluster's age (from its first request);
- deletes a cluster idle for at least its idle timeout, or older than its maximum lifetime, through the
  normal delete path (`tasks.api.enqueue_delete`) after marking why (`Store.cull`: the cluster's record,
  the `culled` hash `status` and the status page read, the counters behind `htdask_clusters_culled_total`).

Clusters a Dask Gateway manages are left to the gateway (htdask/gateway/limits.py): it stops them through
its own stop, which deletes them here, and records why the same way. A cluster the operator manages is
deleted here; the operator then stops its DaskCluster (phase Stopped, with the reason as its message).
"""
from __future__ import annotations

import logging

from htdask.domain import limits as lim
from htdask.state import Store
from htdask.state.managed import managers
from tasks.app import app
from workers import dask_scheduler

log = logging.getLogger(__name__)


def own_limits(fields: dict) -> dict[str, float]:
    """A cluster's own limits from its record's fields (htdask.state.limits.limit_fields)."""
    return {k: float(fields[k]) for k in lim.KINDS if fields.get(k) not in (None, "")}


def scheduler_target(record, settings) -> tuple[str, dict | None, str | None]:
    """(the cluster's scheduler address ('' when none), connection args for a tls:// one, why it cannot be
    asked (None: it can)). Its address: the recorded option, else DASK_SCHEDULER_ADDRESS."""
    options = record.options or {}
    address = options.get("scheduler_address") or settings.dask_scheduler_address or ""
    if not address:
        return "", None, "no scheduler address"
    if address.startswith("tcp://"):
        return address, None, None
    if address.startswith("tls://") and options.get("tls_cert") and options.get("tls_key"):
        try:
            return address, dask_scheduler.tls_connection_args(options["tls_cert"], options["tls_key"],
                                                               options.get("tls_ca")), None
        except OSError as e:
            return address, None, f"its TLS files cannot be read here ({e.strerror or e})"
    return address, None, f"{address.split('://')[0]}:// needs credentials this worker does not hold"


def idle_state(view, address: str, why_not: str | None) -> tuple[float | None, str]:
    """(the scheduler's idle_since, or None when not idle or not known; the words `status` shows)."""
    if why_not is not None:
        return None, f"scheduler {address or '-'} not asked ({why_not}): not counted as idle"
    if view.error is not None:
        return None, f"scheduler {address} {view.error}: not counted as idle"
    if view.idle_since is None:
        return None, "busy"
    return view.idle_since, "idle"


def verdict(limits: lim.Limits, idle_for: float | None, age: float | None) -> tuple[str, str] | None:
    """(reason, detail) when a limit is reached (idle first), else None."""
    if limits.idle_timeout and idle_for is not None and idle_for >= limits.idle_timeout:
        return "idle", f"idle for {lim.text(round(idle_for))} (idle timeout {lim.text(limits.idle_timeout)})"
    if limits.max_lifetime and age is not None and age >= limits.max_lifetime:
        return "lifetime", (f"{lim.text(round(age))} old (maximum lifetime {lim.text(limits.max_lifetime)})")
    return None


def enforce(store: Store, settings, schedd: str) -> dict:
    """One pass over the clusters recorded on `schedd` (see the module docstring). Returns what it did:
    {"checked": n, "culled": {cluster: reason}, "not_asked": {cluster: why}}."""
    from tasks import api
    records = {n: r for n, r in store.get_many(store.cluster_names()).items() if r is not None and r.schedd == schedd}
    kinds = managers(store, list(records))
    fields = store.limit_fields(list(records))
    todo = {}
    resent = []
    for name, rec in records.items():
        if (kinds.get(name) or {}).get("kind") == "gateway":
            continue
        if fields[name].get("culled"):
            judged_at = int(fields[name].get("culled_seq") or 0)
            if rec.seq == judged_at:  # marked, but its delete was never recorded (Redis failed in between)
                api.enqueue_delete(store, name)
                resent.append(name)
                continue
            if not (rec.desired or rec.names):
                continue  # its delete is on its way
            store.uncull(name)  # a request newer than the delete keeps the cluster: judged again from now on
            log.info("cluster %s: a request after its %s limit's delete keeps it", name, fields[name]["culled"])
        limits = lim.effective(own_limits(fields[name]), settings.limit_defaults)
        if limits.any:
            todo[name] = limits
    targets = {n: scheduler_target(records[n], settings) for n, l in todo.items() if l.idle_timeout}
    asked = {address: args for address, args, why in targets.values() if why is None}
    bound = max(0.2, min(2.0, settings.poll_interval / 2))
    views = dask_scheduler.idleness(asked, timeout=min(1.0, bound), total=bound) if asked else {}
    out = {"checked": len(todo), "culled": {}, "not_asked": {}, "delete_sent_again": resent}
    seen = []
    for name in todo:
        since, state = None, ""
        if name in targets:
            address, _, why_not = targets[name]
            since, state = idle_state(views.get(address), address, why_not)
            if since is None and state != "busy":
                out["not_asked"][name] = state
        seen.append((name, since, state))
    observed = store.observe_many(seen) if seen else []  # one round trip, Redis' clock
    store.culled(store.now(), prune=True)  # forget culled clusters older than a day
    for (name, _, _), obs in zip(seen, observed):
        limits = todo[name]
        judged = verdict(limits, obs.idle_for, obs.age)
        if judged is None:
            continue
        reason, detail = judged
        if not store.cull(name, reason, detail, records[name].seq):
            continue
        log.warning("cluster %s: %s: deleting it", name, detail)
        api.enqueue_delete(store, name)
        out["culled"][name] = reason
    return out


@app.task(name="tasks.enforce_limits", bind=True, acks_late=True, ignore_result=False)
def enforce_limits(self, schedd: str | None = None) -> dict:
    """The limits pass for this worker's schedd (beat sends one per schedd every POLL_INTERVAL)."""
    from tasks import context
    from tasks.config import settings
    s = settings()
    if schedd and schedd != s.schedd_name:
        log.warning("limits pass for schedd %s reached the worker of schedd %s; serving %s", schedd, s.schedd_name,
                    s.schedd_name)
    return enforce(context.store(), s, s.schedd_name)
