"""One `condor_submit` per round and submit user: the submissions a batched round planned, made together.

A round of tasks/reconcile.py plans one submission for each cluster short of jobs (`SubmitPlan`: its
items, already reserved with one INCRBY, and its own description from domain/jobspec.py). `submit_plans`
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

A failing group does not fail innocent clusters: condor_submit is one transaction with the schedd (a
non-zero exit queues nothing), so on such a failure or a refusal the group is split in halves and each
half submitted again, down to single clusters: only the cluster that causes the error gets it (in its
outcome and its state, as a lone reconcile records it), at about 2·log2(n) extra calls per bad cluster.
After a timeout or an unreadable answer the jobs may exist: every cluster of the group takes the error,
and the next reconcile reads the queue before submitting again (as for a lone cluster).
When the schedd created fewer jobs than asked, the shortfall falls on the last parts in order; those
clusters are reconciled again (another round).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from domain import validation
from domain.submitdesc import CombinedDescription, SubmitDescription
from workers.htcondor.schedd import ParseError, Schedd, ScheddError, ScheddTimeout

log = logging.getLogger(__name__)

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
    for group in _groups(plans, schedd.combines_descriptions):
        for plan in group:
            record = plan.record
            if record.seq > record.handled_seq and not plan.outcome.submitted and record.updated_at:
                # the first condor_submit serving the newest request: enqueue -> submit started
                store.metrics.request_to_submit(settings.schedd_name, time.time() - record.updated_at)
        _submit_group(store, schedd, group, short)
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
    if len(group) == 1:
        desc = group[0].description
    else:
        desc = CombinedDescription(p.description for p in group)
        log.info("one condor_submit for %d clusters (%d jobs) as %s: %s", len(group), desc.num_jobs,
                 group[0].user or "the worker's user", ", ".join(p.cluster for p in group))
    try:
        ids = schedd.submit(desc, user=group[0].user)
    except (ScheddError, validation.ValidationError) as err:
        if len(group) == 1 or not _queued_nothing(err):
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
        _hand_back(store, plan, got)
        if len(got) < plan.wanted:
            short.add(plan.cluster)


def _queued_nothing(err: Exception) -> bool:
    """Whether a failed submission certainly queued no job: refused before it ran, or condor_submit
    exited with an error status (its transaction aborted). Not after a timeout or a signal (killed,
    perhaps after the commit) nor an unreadable answer (exit 0: the jobs exist): submitting again could
    queue jobs twice, so those clusters take the error and the next round reads the queue."""
    if isinstance(err, validation.ValidationError):
        return True
    if isinstance(err, (ScheddTimeout, ParseError)):
        return False
    return (err.returncode or 0) > 0  # exited with an error status (not killed by a signal)


def _hand_back(store, plan: SubmitPlan, ids: list[str]) -> None:
    """The cluster's share of a submission's job ids (its items' jobs, the first len(ids) of them)."""
    name, outcome = plan.cluster, plan.outcome
    log.info("cluster %s: submitted jobs %s", name, span(ids))
    if plan.by_name:  # procs are created in item order: the first len(ids) names exist
        store.mark_submitted(name, [label for _index, label in plan.items[:len(ids)]])
    if len(ids) != plan.wanted:
        log.warning("cluster %s: asked for %d jobs, the schedd created %d; reconciling again",
                    name, plan.wanted, len(ids))
    outcome.submitted.extend(ids)
    outcome.live = (outcome.live or 0) + len(ids)


def span(ids: list[str]) -> str:
    """'7.0 - 7.2 (3)' for a log line."""
    if not ids:
        return "none"
    return ids[0] if len(ids) == 1 else f"{ids[0]} - {ids[-1]} ({len(ids)})"
