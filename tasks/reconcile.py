"""Bring a cluster's live jobs to its desired state: reconcile, don't replay.

Requests only move the desired state in Redis. Whoever holds a cluster's lock compares desired with
the queue and acts: a submission of every missing job (indexes reserved with one INCRBY), one
`condor_rm` for the surplus. Many clusters are reconciled together with one condor_q per round
(`reconcile_many`, fed by the batched task in tasks/cluster_tasks.py), and the round's submissions are
made with one `condor_submit` per submit user (tasks/submissions.py: each cluster's description with
its own queue statement, in one file). A burst of requests therefore collapses into a few schedd calls,
and a duplicated or re-delivered task finds nothing left to do.

Fencing: indexes are reserved under the cluster's lease token, checked atomically in Redis
(htdask/state/counters.py), and the token is checked again right before each schedd change; a holder whose lease
expired (stalled past LOCK_TTL) leaves the cluster to the new one (outcome `lost`). A stall inside
condor_submit cannot be fenced, so names make it harmless: counters never go back while a submit may
commit, and of live jobs sharing a worker name the newer are removed.
"""
from __future__ import annotations

import getpass
import logging
import os
import time
from typing import Iterable

from htdask.state import Store
from tasks import ended
from tasks.options import describe, job_options
from tasks.outcome import Outcome
from tasks.removal import Removals
from tasks.submissions import SubmitPlan, record_failure, submit_plans
from htdask.domain import validation
from htdask.domain.jobspec import cluster_constraint, clusters_constraint, ours_constraint
from htdask.domain.jobstatus import JobStatus
from htdask.domain.workerjobs import LIVE, Job, jobs_of, kept_hold, newer_duplicates
from htdask.state.counters import LeaseLost
from workers.runas import UserRefused
from workers.htcondor.schedd import Schedd, ScheddError

log = logging.getLogger(__name__)

#: removal order when scaling down: useless jobs first, then queued ones, running ones last; a job a person
#: held (HOLD_KEEP_CODES) goes just before the running ones: someone is looking at it
REMOVE_ORDER = {JobStatus.HELD: 0, JobStatus.TRANSFERRING_OUTPUT: 0, JobStatus.IDLE: 1, JobStatus.SUSPENDED: 2,
                "kept-hold": 3, JobStatus.RUNNING: 4}  # (transferring output: its worker has exited)
PROJECTION = ["ClusterId", "ProcId", "JobStatus", "DaskGatewayCluster", "DaskWorkerIndex", "DaskWorkerName",
              "HoldReason", "HoldReasonCode", "HoldReasonSubCode", "EnteredCurrentStatus"]
#: rounds of one reconcile_many (each: read, act; another round only when one change cannot reach the
#: desired state: a release or replacement of held jobs, a name-based cluster with jobs both missing and
#: surplus, a schedd that created fewer jobs than asked)
MAX_ROUNDS = 10
#: clusters named in one condor_q constraint; more are read with the marker constraint
MEMBER_LIST_MAX = 200
#: a burst has ended when no request arrived for SETTLE_QUIET seconds (waiting at most SETTLE_MAX)
SETTLE_QUIET, SETTLE_MAX = 0.3, 5.0


class Reconciler(Removals):
    """Reconciles clusters of one schedd. Cheap to build; holds no state between calls (the jobs being
    retired are read with each round's query). Scale-down and held jobs: tasks/removal.py."""

    def __init__(self, store: Store, schedd: Schedd, settings):
        self.store = store
        self.schedd = schedd
        self.settings = settings
        self._retiring: dict[str, set[str]] = {}  # this round's jobs being retired, per cluster (_query)
        self._tokens: dict[str, object] = {}  # cluster -> its lease's token, while a round holds it

    def submit_user(self, record) -> str | None:
        """The Unix user this cluster's jobs are submitted and removed as; never root."""
        return submit_user(record, self.settings)

    # ---- rounds -------------------------------------------------------------------------------
    def reconcile(self, cluster: str) -> Outcome:
        """Reconcile one cluster (see reconcile_many); its failure is raised."""
        outcome = self.reconcile_many([cluster])[cluster]
        if outcome.exc is not None:
            raise outcome.exc
        return outcome

    def reconcile_many(self, clusters: Iterable[str]) -> dict[str, Outcome]:
        """Bring clusters to their desired state with one condor_q per round for all of them.

        A round holds the locks of its clusters while it reads the queue and acts, so no other
        reconcile changes a cluster between our read and our change; a cluster whose lock is busy is
        left to its holder, which re-reads the generation after releasing it. A cluster whose change could
        not reach the desired state by itself is read again next round (to go on), and so is one whose
        generation moved (a newer request), once requests have stopped arriving. A cluster that fails has its error
        recorded in its outcome (`exc`) and its state, and is dropped; a failing query is raised. The
        round's submissions are planned cluster by cluster and made together, one condor_submit per
        submit user (tasks/submissions.py), still under the round's locks.

        A change that reaches the desired state (condor_submit created every job asked for, condor_rm
        removed the surplus) is not read back: the schedd's answer is the confirmation, and the poller
        (tasks/poll.py) reconciles any later drift. That saves one condor_q per change, which is a
        visible part of a large scale-up (bench/scale_10k.py) and of every round's cost.
        """
        outcomes = {c: Outcome(c) for c in dict.fromkeys(clusters)}
        pending, hold_checked = list(outcomes), set()
        handled: dict[str, int] = {}  # cluster -> newest request seq acted on, when newer than recorded
        for _ in range(MAX_ROUNDS):
            locks = self._lock_all(pending, outcomes)
            if not locks:
                break
            self._tokens = {c: lock.local.token for c, lock in locks.items()}
            gens, acted = {}, set()
            try:
                gens = self.store.generations(list(locks))
                jobs = self._query(list(locks))
                records = self.store.get_many(list(locks))
                plans: list[SubmitPlan] = []
                for c in locks:
                    if self._step_cluster(records[c], jobs.get(c, []), outcomes[c], plans,
                                          hold_policy=c not in hold_checked):
                        acted.add(c)
                    hold_checked.add(c)
                acted |= submit_plans(self.store, self.schedd, self.settings, plans)  # short of jobs: again
                for c in locks:
                    rec = records[c]
                    if rec is not None and outcomes[c].exc is None and rec.seq > rec.handled_seq:
                        handled[c] = rec.seq
            finally:
                self._tokens = {}
                self._release_all(locks, outcomes)
            # A request that found a lock busy bumped that cluster's generation before we released it.
            after = self.store.generations(list(gens)) if gens else {}
            moved = {c for c in gens if outcomes[c].state == "ok" and after[c] != gens[c]}
            if moved:
                self._settle(moved)
            pending = [c for c in locks if (c in acted or c in moved) and outcomes[c].exc is None
                       and outcomes[c].state == "ok"]
            if not pending:
                break
        self.store.clear_errors([c for c, o in outcomes.items() if o.state == "ok" and o.error is None],
                                handled={c: seq for c, seq in handled.items() if outcomes[c].state == "ok"})
        return outcomes

    def _lock_all(self, clusters: list[str], outcomes: dict[str, Outcome]) -> dict:
        """Take the clusters' locks (one round trip). A busy one is left to its holder; its outcome says
        when the lock expires unless renewed (`retry_in`): a dead holder's lease frees itself by then."""
        locks = {c: self.store.cluster_lock(c) for c in clusters}
        taken, expiry = self.store.try_locks(list(locks.values()))
        taken = {lock.name for lock in taken}
        held = {}
        for c, lock in locks.items():
            if lock.name in taken:
                held[c], outcomes[c].state = lock, "ok"
            else:
                outcomes[c].state, outcomes[c].retry_in = "busy", expiry[lock.name]
                log.info("cluster %s: reconcile already running elsewhere; it will apply the newest request", c)
        return held

    def _release_all(self, locks: dict, outcomes: dict[str, Outcome]) -> None:
        """Release the round's locks (one round trip); a cluster whose lease had expired is `lost`: the
        holder since then owns its records."""
        names = {lock.name: c for c, lock in locks.items()}
        for lock in self.store.release_locks(list(locks.values())):
            log.warning("cluster %s: reconcile lock expired before release", names[lock.name])
            outcomes[names[lock.name]].state = "lost"

    def _fenced(self, name: str, outcome: Outcome) -> bool:
        """True while the round's lease on the cluster is still ours (checked right before a schedd change);
        else the outcome is `lost` and nothing is done."""
        if self.store.lease_held(name, self._tokens.get(name)):
            return True
        return self._lost(name, outcome)

    @staticmethod
    def _lost(name: str, outcome: Outcome) -> bool:
        log.warning("cluster %s: lease lost (expired while this round was stalled); leaving the cluster to its "
                    "new holder", name)
        outcome.state = "lost"
        return False

    def _query(self, clusters: list[str]) -> dict[str, list[dict]]:
        """One condor_q for the clusters' jobs, grouped by cluster."""
        if len(clusters) == 1:
            constraint = cluster_constraint(clusters[0])
        elif len(clusters) <= MEMBER_LIST_MAX:
            constraint = clusters_constraint(clusters)
        else:
            constraint = ours_constraint()
        by_cluster: dict[str, list[dict]] = {}
        for ad in self.schedd.query(constraint, PROJECTION):
            by_cluster.setdefault(ad.get("DaskGatewayCluster"), []).append(ad)
        self._retiring = self.store.retiring([c for c in clusters if c in by_cluster])
        return by_cluster

    def _settle(self, clusters: set[str]) -> None:
        """Wait until requests to these clusters stop arriving (a burst), so the next round acts once."""
        deadline = time.monotonic() + SETTLE_MAX
        last, still_since = None, time.monotonic()
        while time.monotonic() < deadline:
            now = self.store.generations(sorted(clusters))
            if now != last:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= SETTLE_QUIET:
                return
            time.sleep(0.05)

    def _step_cluster(self, record, ads: list[dict], outcome: Outcome, plans: list[SubmitPlan],
                      hold_policy: bool) -> bool:
        if record is None:
            outcome.state = "gone"
            return False
        try:
            return self._step(record, jobs_of(record.name, ads), outcome, plans, hold_policy)
        except LeaseLost:
            return self._lost(record.name, outcome)
        except (ScheddError, validation.ValidationError) as err:
            record_failure(self.store, record.name, outcome, err)
            return False

    # ---- one pass -------------------------------------------------------------------------------
    def _step(self, record, jobs: list[Job], outcome: Outcome, plans: list[SubmitPlan],
              hold_policy: bool = True) -> bool:
        """Compare desired with the queue and make one change (a submission is planned into `plans`);
        True when the cluster needs another round (its change could not reach the desired state by
        itself; a submission that falls short is found by submit_plans)."""
        name = record.name
        leaving = self._retiring.get(name, ())  # being retired: not counted (tasks/removal.py)
        live = [j for j in jobs if j.status in LIVE and j.job_id not in leaving]
        outcome.desired, outcome.live = record.desired, len(live)
        duplicates = newer_duplicates(live)
        if duplicates:
            if self._fenced(name, outcome):
                self._remove_duplicates(record, duplicates, outcome)
            return outcome.state == "ok"  # read again
        if hold_policy and self._apply_hold_policy(record, live, outcome):
            return True
        if record.names is not None:
            # A wanted name whose job ended is the gateway's to replace (under a new name), not ours.
            have = {j.name for j in live} | self.store.submitted_names(name)
            missing = sorted(record.names - have)
            surplus = [j for j in live if j.name not in record.names]
            if missing:
                self._plan_submit(record, jobs, live, plans, names=missing, outcome=outcome)
                return bool(surplus)
            if surplus and self._fenced(name, outcome):
                return self._remove(record, surplus, outcome)
            return False
        diff = record.desired - len(live)
        if diff > 0:
            self._plan_submit(record, jobs, live, plans, count=diff, outcome=outcome)
            return False
        if diff < 0:
            keep = self.settings.hold_keep_codes
            surplus = sorted(live, key=lambda j: (REMOVE_ORDER["kept-hold"] if kept_hold(j, keep) else
                                                  REMOVE_ORDER.get(j.status, 9), -j.index))[:-diff]
            return self._fenced(name, outcome) and self._remove(record, surplus, outcome)
        return False

    def _remove_duplicates(self, record, duplicates: list[Job], outcome: Outcome) -> None:
        """Remove the newer of live jobs that share a worker name (by job id: the oldest job of each name
        stays, whatever it is running). They come from a submit that committed although it reported a
        failure, or from a stalled holder's submit of a name-based cluster's names."""
        log.warning("cluster %s: %d jobs carry a worker name an older live job has (%s); removing them",
                    record.name, len(duplicates), ", ".join(f"{j.job_id} ({j.name})" for j in duplicates[:10]))
        self._remove_jobs(record, duplicates, outcome,
                          reason=f"duplicate worker name in {record.name}; the older job stays")

    def _crash_backoff(self, record, outcome: Outcome) -> bool:
        """True when a crash loop (tasks/ended.py) delays this cluster's next submission; the reason and
        the time of the next try are kept in its state for `status`.

        The poller records ended jobs between polls; a cluster short again within this reconcile (its new
        jobs ended within seconds) has its history read here, so a fast loop is seen at once.
        """
        now = time.time()
        if outcome.submitted and outcome.started:
            constraint = f"{cluster_constraint(record.name)} && EnteredCurrentStatus >= {int(outcome.started) - 1}"
            self.store.add_ended(ended.fetch(self.schedd, constraint, record.schedd))
        loop = ended.crash_loop(self.store.ended_records(record.name), now, self.settings)
        # the loop stays recorded (for status and the metric) while it lasts, not only while it delays
        self.store.set_backoff(record.name, loop and loop.until, loop.reason() if loop else "",
                               lasts_until=loop and loop.lasts_until)
        if loop is None or loop.until <= now:
            return False
        log.warning("cluster %s: %s; next submission in %.0fs", record.name, loop.reason(), loop.until - now)
        return True

    def _plan_submit(self, record, jobs, live, plans: list[SubmitPlan], *, outcome: Outcome, count: int = 0,
                     names: list[str] | None = None) -> None:
        """Plan the submission of `count` jobs (or of the jobs `names`) after the crash-loop backoff and
        MAX_IDLE_PER_CLUSTER checks, their indexes reserved now; submit_plans makes it."""
        name = record.name
        if names is None and self._crash_backoff(record, outcome):
            return
        outcome.started = outcome.started or time.time()
        wanted = len(names) if names is not None else count
        cap = self.settings.max_idle_per_cluster
        if cap > 0:
            idle = sum(1 for j in live if j.status == JobStatus.IDLE)
            wanted = min(wanted, max(0, cap - idle))
            if wanted == 0:
                log.info("cluster %s: %d idle jobs reach MAX_IDLE_PER_CLUSTER=%d; submitting later",
                         name, idle, cap)
                return
        # fenced by our lease; an empty cluster starts again at index 0 unless a submit of it may still commit
        floor = max((j.index for j in jobs), default=-1) + 1
        token = self._tokens.get(name)
        first = self.store.reserve_indexes(name, wanted, token, floor=floor, empty=not jobs)
        labels = names[:wanted] if names is not None else [f"{name}-{first + i}" for i in range(wanted)]
        items = [(first + i, label) for i, label in enumerate(labels)]
        user = self.submit_user(record)
        owner = user or getpass.getuser()
        description = describe(name, owner, record.options, items, self.settings, create=True)
        log.info("cluster %s: submitting %d jobs as %s, indexes %d..%d (counter now %d)",
                 name, wanted, owner, first, first + wanted - 1, first + wanted)
        plans.append(SubmitPlan(record, outcome, user, items, description, by_name=names is not None, token=token))


def submit_user(record, settings) -> str | None:
    """Owner, else DEFAULT_OWNER, else the worker's own user (None); refuses root."""
    user = (record.owner if record else None) or settings.default_owner
    if user is None and os.geteuid() == 0:
        raise UserRefused("root", "the Celery worker runs as root and the cluster has no owner; set DEFAULT_OWNER "
                          "or give the cluster an owner")
    return user

