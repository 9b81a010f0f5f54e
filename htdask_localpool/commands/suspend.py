"""condor_suspend / condor_continue (HTCondor: the rm.cpp tool with JobAction Suspend=8, Continue=9).

Arguments, result lines and exit codes are condor_rm's (commands/act.py). `condor_suspend` stops a
running job's processes (SIGSTOP to its process group, as the starter suspends a job) and sets
JobStatus 7 (Suspended), LastSuspensionTime and TotalSuspensions; `condor_continue` resumes them
(SIGCONT), sets JobStatus 2 again and adds the time suspended to CumulativeSuspensionTime. The job
event log gets 010 (suspended) / 011 (unsuspended). Only running jobs are suspended ("Job C.P not
running to be suspended"), only suspended ones continued ("Job C.P not suspended to be continued").
A suspended job keeps its slot; condor_rm and condor_hold act on it as on a running job.
"""
from __future__ import annotations

import signal
import time

from htdask_localpool import procs, store, userlog
from htdask_localpool.commands import act, common


def main(mode: str, argv: list[str] | None = None) -> int:
    return common.run_command(f"condor_{mode}", SuspendAction(mode).run, argv)


class SuspendAction(act.Action):
    def __init__(self, mode: str):
        super().__init__(mode)
        self.signals: list[int] = []  # process groups to signal once the queue change is committed

    def run(self, argv: list[str]) -> int:
        code = super().run(argv)
        sig = signal.SIGSTOP if self.mode == "suspend" else signal.SIGCONT
        for pgid in self.signals:
            procs.kill_group(pgid, sig)
        return code

    def _eligible(self, ad: dict) -> bool:
        return ad.get("JobStatus") == (2 if self.mode == "suspend" else 7)

    def _failure_line(self, c: int, p: int, r: str) -> str:
        if r == act.ALREADY:
            return f"Job {c}.{p} already suspended"
        if r == act.BAD_STATUS:
            return (f"Job {c}.{p} not running to be suspended" if self.mode == "suspend"
                    else f"Job {c}.{p} not suspended to be continued")
        return super()._failure_line(c, p, r)

    def _act(self, ad: dict) -> str:
        if not self._permitted(ad):
            return act.PERMISSION
        st = ad.get("JobStatus")
        now = int(time.time())
        row = self.con.execute("SELECT pid FROM jobs WHERE cluster=? AND proc=?",
                               (ad["ClusterId"], ad["ProcId"])).fetchone()
        pid = row[0] if row else None
        if self.mode == "suspend":
            if st == 7:
                return act.ALREADY
            if st != 2 or not pid:
                return act.BAD_STATUS
            store.set_status(ad, 7, now)
            ad["LastSuspensionTime"] = now
            ad["TotalSuspensions"] = int(ad.get("TotalSuspensions") or 0) + 1
            self.events.add(userlog.SUSPENDED, ad, now)
        else:
            if st != 7:
                return act.BAD_STATUS
            store.set_status(ad, 2, now)
            since = ad.get("LastSuspensionTime")
            if type(since) is int and since:
                ad["CumulativeSuspensionTime"] = int(ad.get("CumulativeSuspensionTime") or 0) + now - since
            ad["LastSuspensionTime"] = 0
            self.events.add(userlog.UNSUSPENDED, ad, now)
        store.save_job(self.con, ad)
        if pid:
            self.signals.append(pid)
        return act.OK
