"""One `condor_submit` per round and submit user: the submissions a batched round planned, made together.

A round of tasks/reconcile.py plans one submission for each cluster short of jobs (`SubmitPlan`: its
items, already reserved with one INCRBY, and its own description from htdask/domain/jobspec.py). `submit_plans`
groups the plans by the Unix user they are submitted as and by the submit commands their descriptions
assign, and makes ONE condor_submit per group: the parts one after the other, each ending in its own
`queue DaskWorkerIndex,DaskWorkerName from (...)` (domain/submitdesc.CombinedDescription). condor_submit
puts every job of such a file into one HTCondor cluster, ProcIds in order across the queue statements,
so the returned ids are handed back part by part, each cluster's in item order. A group of one cluster
makes exactly the submission a lone reconcile makes.

Why the commands are part of the group: a submit command keeps its value across queue statements until
it is assigned again, so a part that does not assign a command another part assigns (docker_image,
request_disk, a site's extra_submit line) would inherit that value. Parts of one group assign the same
commands, so every job sees its own cluster's values and nothing else.

A submit that failed may have committed: a schedd can queue the jobs and then answer "ERROR: Failed to
commit job submission into the queue." (a timeout after the commit), and a timeout or a signal may strike
after it. So after any failure of condor_submit the queue is read (one condor_q for the group) before
anything is submitted again: jobs of the submit found there are handed back as submitted (nothing is
submitted twice); only when none is there was the transaction aborted. Then a refusal (an error exit)
does not fail innocent clusters: the group is split in halves and each half submitted again, down to
single clusters, so only the cluster that causes the error gets it (in its outcome and its state, as a
lone reconcile records it), at about 2·log2(n) extra calls per bad cluster. A timeout, a signal or a
queue that cannot be read gives every cluster of the group the error; the next reconcile reads the queue
before submitting again. Two live jobs that share a name anyway are resolved by the reconciler (the newer
is removed). Right before each condor_submit the clusters' lease tokens are checked (fencing): a cluster
whose lease expired is not submitted (outcome `lost`). Once the group's condor_submit calls have exited,
their submits in flight are cleared (htdask/state/counters.py).
When the schedd created fewer jobs than asked, the shortfall falls on the last parts in order; those
clusters are reconciled again (another round).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from htdask.domain import validation
from htdask.domain.jobspec import clusters_constraint, ours_constraint
from htdask.domain.submitdesc import CombinedDescription, SubmitDescription
from htdask.domain.workerjobs import job_order
from workers.htcondor.schedd import ParseError, Schedd, ScheddError, ScheddTimeout

log = logging.getLogger(__name__)

#: clusters named in the constraint of the condor_q that reads a failed submit back; more: all our jobs
READ_BACK_LIST_MAX = 200
#: jobs of one combined condor_submit at most (a schedd refuses a submission above MAX_JOBS_PER_SUBMISSION,
#: 20,000 by default); a single cluster asking for more still goes alone
MAX_COMBINED_JOBS = 10_000


@dataclass
class SubmitPlan:
    """One cluster's submission, planned by a round: the jobs `items` (index, name), in order."""
    record: Any  # the cluster's state record (state.Store.get_many)
    outcome: Any  # its tasks.reconcile.Outcome, completed when the jobs exist
    user: str | None  # the Unix user to submit as (None: the worker's own)
    items: list[tuple[int, str]]
    description: SubmitDescription
    by_name: bool  # a name-based cluster (the gateway's): the names submitted are recorded
    token: Any = None  # the token of the cluster's lease, under which the items were reserved (fencing)
    created: list[str] = field(default_factory=list)  # names of the items whose jobs exist

    @property
    def cluster(self) -> str:
        return self.record.name

    @property
    def wanted(self) -> int:
        return len(self.items)


def record_failure(store, cluster: str, outcome, err: Exception) -> None:
    """A cluster's failed change: one log line, its outcome (`exc`, `error`) and its state's error."""
    log.error("cluster %s: %s", cluster, err)
    outcome.exc, outcome.error = err, str(err)
    store.set_error(cluster, str(err))


def submit_plans(store, schedd: Schedd, settings, plans: list[SubmitPlan]) -> set[str]:
    """Make the planned submissions with one condor_submit per group (see the module docstring); the
    clusters that got fewer jobs than asked (to reconcile again). A failure is recorded per cluster."""
    short: set[str] = set()
    try:
        for group in _groups(plans, schedd.combines_descriptions):
            for plan in group:
                record = plan.record
                if record.seq > record.handled_seq and not plan.outcome.submitted and record.updated_at:
                    # the first condor_submit serving the newest request: enqueue -> submit started
                    store.metrics.request_to_submit(settings.schedd_name, time.time() - record.updated_at)
            _submit_group(store, schedd, group, short)
    finally:  # every condor_submit of these plans has exited: none of them can commit any more
        store.submit_done([(p.cluster, p.token, p.created if p.by_name else None) for p in plans])
    return short


def _groups(plans: list[SubmitPlan], combine: bool) -> list[list[SubmitPlan]]:
    """Plans by (user, commands assigned), in plan order, each group at most MAX_COMBINED_JOBS jobs."""
    if not combine:
        return [[plan] for plan in plans]
    by_key: dict[tuple, list[list[SubmitPlan]]] = {}
    for plan in plans:
        chunks = by_key.setdefault((plan.user, plan.description.command_keys()), [[]])
        if chunks[-1] and sum(p.wanted for p in chunks[-1]) + plan.wanted > MAX_COMBINED_JOBS:
            chunks.append([])
        chunks[-1].append(plan)
    return [chunk for chunks in by_key.values() for chunk in chunks]


def _submit_group(store, schedd: Schedd, group: list[SubmitPlan], short: set[str]) -> None:
    held = store.leases_held([(p.cluster, p.token) for p in group])
    for plan, ours in zip(group, held):
        if not ours:
            log.warning("cluster %s: lease lost (expired while this round was stalled); not submitting its %d "
                        "jobs, its new holder reconciles it", plan.cluster, plan.wanted)
            plan.outcome.state = "lost"
    group = [plan for plan, ours in zip(group, held) if ours]
    if not group:
        return
    if len(group) == 1:
        desc = group[0].description
    else:
        desc = CombinedDescription(p.description for p in group)
        log.info("one condor_submit for %d clusters (%d jobs) as %s: %s", len(group), desc.num_jobs,
                 group[0].user or "the worker's user", ", ".join(p.cluster for p in group))
    try:
        ids = schedd.submit(desc, user=group[0].user)
    except (ScheddError, validation.ValidationError) as err:
        found = {} if isinstance(err, validation.ValidationError) else _read_back(schedd, group, err)
        if found is not None and any(found.values()):  # it committed in spite of its answer
            log.warning("condor_submit reported a failure (%s) but queued jobs; they are kept, not submitted "
                        "again: %s", _oneline(err), ", ".join(f"{p.cluster} {len(found[p.cluster])} of "
                                                              f"{p.wanted}" for p in group))
            for plan in group:
                _hand_back(store, plan, found[plan.cluster], short)
            return
        if found is None or len(group) == 1 or not _queued_nothing(err):
            for plan in group:
                record_failure(store, plan.cluster, plan.outcome, err)
            return
        # nothing was queued (one transaction): find the cluster that fails by halves
        log.warning("a condor_submit for %d clusters failed (%s); submitting them in halves", len(group), err)
        half = len(group) // 2
        _submit_group(store, schedd, group[:half], short)
        _submit_group(store, schedd, group[half:], short)
        return
    start = 0
    for plan in group:
        got = ids[start:start + plan.wanted]
        start += plan.wanted
        _hand_back(store, plan, list(zip(got, (label for _index, label in plan.items))), short)


def _read_back(schedd: Schedd, group: list[SubmitPlan], err: Exception) -> dict[str, list] | None:
    """After a failed condor_submit (exited: it commits nothing more), the jobs of the group's items in the
    queue: cluster -> [(job id, worker name)] in job order; None when the queue cannot be read."""
    clusters = [p.cluster for p in group]
    constraint = clusters_constraint(clusters) if len(clusters) <= READ_BACK_LIST_MAX else ours_constraint()
    wanted = {(p.cluster, label): p.cluster for p in group for _index, label in p.items}
    found: dict[str, list] = {c: [] for c in clusters}
    try:
        for ad in schedd.query(constraint, ["ClusterId", "ProcId", "DaskGatewayCluster", "DaskWorkerName"]):
            key = (ad.get("DaskGatewayCluster"), ad.get("DaskWorkerName"))
            if key in wanted:
                found[wanted[key]].append((f"{ad['ClusterId']}.{ad['ProcId']}", key[1]))
    except ScheddError as read_err:
        log.error("condor_submit for %s failed (%s) and the queue could not be read (%s); the next round reads "
                  "it before submitting again", ", ".join(clusters), _oneline(err), _oneline(read_err))
        return None
    return {c: sorted(jobs, key=lambda j: job_order(j[0])) for c, jobs in found.items()}


def _oneline(err: Exception) -> str:
    return " ".join(str(err).split())[:300]


def _queued_nothing(err: Exception) -> bool:
    """Whether a failed submission that the queue shows queued nothing may be split and submitted again:
    refused before it ran, or condor_submit exited with an error status (a refusal some cluster of the
    group may cause). Not after a timeout or a signal, nor an unreadable answer: nothing of the group
    causes those, so its clusters take the error and the next round reads the queue."""
    if isinstance(err, validation.ValidationError):
        return True
    if isinstance(err, (ScheddTimeout, ParseError)):
        return False
    return (err.returncode or 0) > 0  # exited with an error status (not killed by a signal)


def _hand_back(store, plan: SubmitPlan, jobs: list[tuple[str, str]], short: set[str]) -> None:
    """The cluster's share of a submission: [(job id, worker name)] of its items' jobs that exist (the
    names of a name-based cluster are recorded by `submit_plans`); a cluster that got other than its count of
    jobs goes to `short` (read again this reconcile)."""
    name, outcome = plan.cluster, plan.outcome
    ids = [job_id for job_id, _name in jobs]
    log.info("cluster %s: submitted jobs %s", name, span(ids))
    plan.created.extend(label for _id, label in jobs)
    if len(ids) != plan.wanted:
        log.warning("cluster %s: asked for %d jobs, the schedd created %d; reconciling again",
                    name, plan.wanted, len(ids))
    if len(ids) != plan.wanted:  # short, or more (duplicates of a commit reported as failed): read again
        short.add(name)
    outcome.submitted.extend(ids)
    outcome.live = (outcome.live or 0) + len(ids)


def span(ids: list[str]) -> str:
    """'7.0 - 7.2 (3)' for a log line."""
    if not ids:
        return "none"
    return ids[0] if len(ids) == 1 else f"{ids[0]} - {ids[-1]} ({len(ids)})"
