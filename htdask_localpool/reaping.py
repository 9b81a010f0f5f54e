"""Recording the end of job processes the runner reaped: exit attributes, OnExitHold /
OnExitRemove (htdask_localpool.policy), a failed output transfer's hold, history, the job event log."""
from __future__ import annotations

import logging
import time

from htdask_localpool import policy, store, userlog

log = logging.getLogger("htdask_localpool.runner")


def record_finished(con, finished, host: str, slot_name: str, expr_cache: dict) -> None:
    """`finished`: [(spawn.Running, returncode)] of processes that are gone (negative rc: signal)."""
    _hold = policy.hold
    now = int(time.time())
    events = userlog.Pending(host)
    with store.transaction(con):
        for job, rc in finished:
            row = store.load_job(con, *job.key)
            if row is None:
                continue
            status, _pid, ad = row
            wall = max(0.0, time.time() - job.started)
            ad["RemoteWallClockTime"] = float(ad.get("RemoteWallClockTime") or 0.0) + wall
            ad["LastRemoteHost"] = job.remote.host.slot if job.remote else slot_name
            ad.pop("RemoteHost", None)
            ad.pop("JobPid", None)
            if status in (2, 7) and job.remote is not None and job.remote.hold:
                _hold(ad, *job.remote.hold, now)  # output transfer failed: the shadow holds it
                store.save_job(con, ad, pid=None, pid_start=None)
                events.add(userlog.HELD, ad, now)
            elif status in (2, 7):
                if rc >= 0:
                    ad["ExitBySignal"] = False
                    ad["ExitCode"] = rc
                    ad.pop("ExitSignal", None)
                else:
                    ad["ExitBySignal"] = True
                    ad["ExitSignal"] = -rc
                    ad.pop("ExitCode", None)
                outcome = policy.at_exit(ad, now, expr_cache)
                events.add({"completed": userlog.TERMINATED, "requeued": userlog.EVICTED,
                            "held": userlog.HELD}[outcome], ad, now)
                if outcome == "completed":
                    store.move_to_history(con, ad)
                else:
                    store.save_job(con, ad, pid=None, pid_start=None)
                log.info("job %d.%d exited (rc %d): %s%s", *job.key, rc, outcome,
                         f" ({ad.get('HoldReason')})" if outcome == "held" else "")
            elif status == 3:
                store.move_to_history(con, ad)
                log.info("job %d.%d removed", *job.key)
            else:
                store.save_job(con, ad, pid=None, pid_start=None)
    events.write()  # removed / held jobs: their 009 / 012 came from condor_rm / condor_hold / the policy
