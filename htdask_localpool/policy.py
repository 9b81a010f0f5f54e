"""Job policy expressions, evaluated with classad2 against the job ad as the schedd/shadow do.

At exit (UserPolicy::AnalyzePolicy, src/condor_utils/user_job_policy.cpp): OnExitHold first,
then OnExitRemove (false: the job goes back to idle and runs again; that is how max_retries /
success_exit_code work, see jobad._policy).  Periodically: PeriodicRemove, then PeriodicHold
for idle and running jobs, PeriodicRelease for held ones.  Hold reasons and codes are
HTCondor's: code 3 (JobPolicy), "The job attribute PeriodicHold expression '<expr>' evaluated
to TRUE" unless the job gives its own *HoldReason / *HoldSubCode.

Stdlib + classad2, the latter imported only when an ad has a non-literal policy expression.
"""
from __future__ import annotations

import logging
import time

from htdask_localpool import ads, store, userlog

log = logging.getLogger(__name__)

JOB_POLICY = 3  # HoldReasonCode JobPolicy
# the SQL pre-filter: ads that hold a policy expression (stored {"$e": ...}) or a literal true
PERIODIC_SQL = ("SELECT cluster, proc FROM jobs WHERE seeded=0 AND status IN (1, 2, 5) AND "
                "(ad LIKE '%\"Periodic%\":{\"$e\"%' OR ad LIKE '%\"Periodic%\":true%')")


def _evaluate(ad: dict, name: str, cache: dict):
    """(found, value) of attribute ``name`` evaluated in ``ad``; UNDEFINED -> None."""
    key, v = ads.lookup(ad, name)
    if key is None:
        return False, None
    if type(v) is not ads.Expr:
        return True, v
    import classad2

    cad = classad2.ClassAd({k: ads.to_classad_value(x, cache) for k, x in ad.items()})
    return True, ads.from_classad_value(cad.eval(key))


def is_true(ad: dict, name: str, cache: dict) -> bool:
    """EvalBool: true, or a non-zero number."""
    found, v = _evaluate(ad, name, cache)
    if not found or v is None or type(v) in (str, list, dict) or type(v) is ads.Expr:
        return False
    return bool(v)


def _reason(ad: dict, attr: str, cache: dict) -> tuple[str, int]:
    """(reason text, subcode) for a policy action by expression ``attr`` (HTCondor's wording)."""
    found, text = _evaluate(ad, attr + "Reason", cache)
    _f, sub = _evaluate(ad, attr + "SubCode", cache)
    sub = sub if type(sub) is int else 0
    if found and type(text) is str and text:
        return text, sub
    expr = ads.old_expr(ad[attr]) if type(ad.get(attr)) is ads.Expr else ads.unparse(ad.get(attr), old=True)
    return f"The job attribute {attr} expression '{expr}' evaluated to TRUE", sub


def hold(ad: dict, code: int, subcode: int, reason: str, now: int) -> None:
    store.set_status(ad, 5, now)
    ad["HoldReason"] = reason
    ad["HoldReasonCode"] = code
    ad["HoldReasonSubCode"] = subcode
    ad["NumHolds"] = int(ad.get("NumHolds") or 0) + 1
    ad.pop("RemoteHost", None)


def at_exit(ad: dict, now: int, cache: dict) -> str:
    """Apply OnExitHold / OnExitRemove to a job whose process ended (exit attributes already set).

    Returns "held", "completed" or "requeued"; the ad is updated accordingly.
    """
    ad["NumJobCompletions"] = int(ad.get("NumJobCompletions") or 0) + 1
    if is_true(ad, "OnExitHold", cache):
        reason, sub = _reason(ad, "OnExitHold", cache)
        hold(ad, JOB_POLICY, sub, reason, now)
        return "held"
    found, remove = _evaluate(ad, "OnExitRemove", cache)
    if found and remove is not None and not (type(remove) in (bool, int, float) and remove):
        store.set_status(ad, 1, now)  # false (or ERROR): run it again
        ad.pop("RemoteHost", None)
        return "requeued"
    store.set_status(ad, 4, now)
    ad["CompletionDate"] = now
    return "completed"


def periodic(ad: dict, now: int, cache: dict) -> str | None:
    """Apply PeriodicRemove / PeriodicHold / PeriodicRelease; the action taken or None."""
    status = ad.get("JobStatus")
    if is_true(ad, "PeriodicRemove", cache):
        reason, _sub = _reason(ad, "PeriodicRemove", cache)
        store.set_status(ad, 3, now)
        ad["RemoveReason"] = reason
        return "removed"
    if status in (1, 2) and is_true(ad, "PeriodicHold", cache):
        reason, sub = _reason(ad, "PeriodicHold", cache)
        hold(ad, JOB_POLICY, sub, reason, now)
        return "held"
    if status == 5 and is_true(ad, "PeriodicRelease", cache):
        reason, _sub = _reason(ad, "PeriodicRelease", cache)
        store.set_status(ad, 1, now)
        ad["ReleaseReason"] = reason
        ad["NumJobReleases"] = int(ad.get("NumJobReleases") or 0) + 1
        return "released"
    return None


def apply_periodic(con, cache: dict, events: userlog.Pending | None = None) -> None:
    """PeriodicRemove / PeriodicHold / PeriodicRelease of the queued jobs that have such expressions
    (one transaction; a running job's process is then stopped by the runner's enforcement). The
    job event log events (009 / 012 / 013) are added to ``events`` for the caller to write."""
    keys = con.execute(PERIODIC_SQL).fetchall()
    if not keys:
        return
    now = int(time.time())
    with store.transaction(con):
        for c, p in keys:
            row = store.load_job(con, c, p)
            if row is None or row[0] not in (1, 2, 5):
                continue
            _status, pid, ad = row
            ad["ServerTime"] = now  # what the schedd puts in the ad it evaluates
            action = periodic(ad, now, cache)
            if action is None:
                continue
            log.info("job %d.%d %s by its policy: %s", c, p, action,
                     ad.get({"held": "HoldReason", "removed": "RemoveReason"}.get(action, "ReleaseReason")))
            if events is not None:
                events.add({"removed": userlog.ABORTED, "held": userlog.HELD, "released": userlog.RELEASED}[action],
                           ad, now)
            if action == "removed" and pid is None:
                store.move_to_history(con, ad)  # no process to stop: leaves the queue now
            else:
                store.save_job(con, ad)
