"""`tasks.ended_jobs`: how the jobs of some workers ended, from the schedd's history (one call).

Completed and removed jobs leave the queue, so the poller's records cannot say how a job ended. The
Dask Gateway backend asks this task (rarely: only for workers whose job vanished before the worker
connected) and reads the answer from the result backend; nothing is written to our state keys.
"""
from __future__ import annotations

import logging

import classad2

from tasks import context
from tasks.app import app
from htdask.domain import validation
from htdask.domain.jobspec import CONSTRAINT_MAX, cluster_constraint

log = logging.getLogger(__name__)

#: what the gateway reports about an ended job
PROJECTION = ["ClusterId", "ProcId", "DaskWorkerName", "JobStatus", "ExitCode", "ExitBySignal", "ExitSignal",
              "RemoveReason", "HoldReason", "EnteredCurrentStatus", "CompletionDate", "NumJobStarts"]


def _name_lists(names: list[str]) -> list[str]:
    """The quoted names as comma-separated lists, each short enough for one constraint (one argv word)."""
    lists, group, size = [], [], 0
    for quoted in map(classad2.quote, names):
        if group and size + len(quoted) + 2 > CONSTRAINT_MAX - 200:
            lists.append(", ".join(group))
            group, size = [], 0
        group.append(quoted)
        size += len(quoted) + 2
    return lists + [", ".join(group)] if group else lists


@app.task(name="tasks.ended_jobs", acks_late=True)
def ended_jobs(cluster: str, names: list[str], limit: int = 200) -> dict[str, dict]:
    """The newest history ad of each named worker of `cluster` that has one: {worker name: ad}. Many names
    take several history calls (each constraint one bounded argument), each reading at most `limit` ads."""
    validation.validate_cluster_name(cluster)
    names = sorted({validation.validate_worker_name(n) for n in names})
    if not names:
        return {}
    out: dict[str, dict] = {}
    for wanted in _name_lists(names):
        constraint = f"{cluster_constraint(cluster)} && member(DaskWorkerName, {{{wanted}}})"
        for ad in context.schedd().history(constraint=constraint, projection=PROJECTION, limit=limit):
            _keep_newest(out, ad)
    log.info("cluster %s: history of %d workers asked, %d found", cluster, len(names), len(out))
    return out


def _keep_newest(out: dict[str, dict], ad: dict) -> None:
    """Keep `ad` in `out` under its worker name when it is that worker's newest job."""
    name = ad.get("DaskWorkerName")
    if not isinstance(name, str):
        return
    key = (ad.get("ClusterId") or 0, ad.get("ProcId") or 0)
    old = out.get(name)
    if old is None or key > (old.get("ClusterId") or 0, old.get("ProcId") or 0):
        out[name] = {k: ad.get(k) for k in PROJECTION}
