"""condor_rm / condor_hold / condor_release (one program in HTCondor: rm.cpp).

Argument handling, messages and exit codes follow rm.cpp: cluster and user arguments are
OR-ed into one constraint (AND-ed with -constraint), C.P ids are acted on one by one with
a result line each.  The queue change is one transaction; the runner is woken to kill
processes of removed/held jobs.
"""
from __future__ import annotations

import logging
import sys
import time

from htdask_localpool import ads, daemon, paths, store, userlog
from htdask_localpool.commands import common

log = logging.getLogger(__name__)

# result codes (JobActionResults)
OK, NOT_FOUND, BAD_STATUS, PERMISSION, ALREADY = "ok", "notfound", "badstatus", "perm", "already"

VERBS = {  # mode -> (infinitive, past, default reason, past for one job)
    "rm": ("remove", "marked for removal", "via condor_rm", "marked for removal"),
    "hold": ("hold", "held", "via condor_hold", "held"),
    "release": ("release", "released", "via condor_release", "released"),
    "suspend": ("suspend", "suspended", "via condor_suspend", "suspended"),  # commands/suspend.py
    "continue": ("continue", "continued", "via condor_continue", "continued"),
}
CT_NONE, CT_ALL, CT_CLUSTER, CT_USER, CT_SIMPLE, CT_COMPLEX = range(6)


def main(mode: str, argv: list[str] | None = None) -> int:
    return common.run_command(f"condor_{mode}", Action(mode).run, argv)


def usage_text(mode: str) -> str:
    word = VERBS[mode][0]
    reason = {"rm": "RemoveReason", "hold": "HoldReason", "release": "ReleaseReason"}.get(mode, "reason")
    lines = [f"Usage: condor_{mode} [options] [constraints]",
             " where [options] is zero or more of:",
             "  -help               Display this message and exit",
             "  -version            Display version information and exit",
             "  -long               Display full result classad",
             "  -totals             Display success/failure totals",
             "  -debug              Display debugging information while running",
             "  -name schedd_name   Connect to the given schedd",
             "  -pool hostname      Use the given central manager to find daemons",
             '  -addr <ip:port>     Connect directly to the given "sinful string"',
             f"  -reason reason      Use the given {reason}"]
    if mode == "hold":
        lines.append("  -subcode number     Set HoldReasonSubCode")
    if mode == "rm":
        lines += ["  -forcex             Force the immediate local removal of jobs in the X state",
                  "                      (only affects jobs already being removed)"]
    lines += [" and where [constraints] is one of:",
              f"  cluster.proc        {word} the given job",
              f"  cluster             {word} the given cluster of jobs",
              f"  user                {word} all jobs owned by user",
              f"  -constraint expr    {word} all jobs matching the boolean expression",
              f"  -all                {word} all jobs (cannot be used with other constraints)",
              f"  -held               {word} only held jobs (may be combined with the above constraints)"]
    return "\n".join(lines) + "\n"


class Action:
    def __init__(self, mode: str):
        self.mode = mode
        self.name = f"condor_{mode}"
        self.infinitive, self.past, self.default_reason, self.one_past = VERBS[mode]
        self.reason: str | None = None
        self.subcode = 0
        self.totals = False
        self.held = False  # -held: only jobs in the held state
        self.had_error = False
        self.job_ids: list[tuple[int, int, str]] = []
        self.has_constraint = CT_NONE
        self.global_constraint = ""
        self.has_usercluster = CT_NONE
        self.usercluster = ""
        self.err: list[str] = []
        self.out: list[str] = []
        self.target = common.Target()  # -name / -pool: rm.cpp looks the schedd up before acting
        self.events = userlog.Pending(common.schedd_name())  # job event log: 009 / 012 / 013, after commit

    # ------------------------------------------------------------ arguments (rm.cpp main/procArg)

    def _usage(self, code: int = 1):
        raise common.Exit(code, "".join(self.err) + usage_text(self.mode))

    def parse(self, argv: list[str]) -> None:
        if not argv:
            self.err.append("You did not specify any jobs\n")
            self._usage()
        i = 0
        dp = common.dash_prefix
        while i < len(argv):
            a = argv[i]
            if a.startswith("-"):
                if dp(a, "debug", 1):
                    pass
                elif dp(a, "long", 1):
                    pass
                elif dp(a, "totals", 3):
                    self.totals = True
                elif dp(a, "constraint", 1):
                    i += 1
                    if i >= len(argv) or argv[i].startswith("-"):
                        raise common.Exit(1, f"{self.name}: -constraint requires another argument\n")
                    self._add_constraint(argv[i], CT_SIMPLE)
                elif dp(a, "all", 1):
                    if self.has_constraint or self.has_usercluster:
                        raise common.Exit(1, f"{self.name}: can't mix -all with other constraints\n")
                    self._add_constraint("ClusterId >= 0", CT_ALL)
                elif dp(a, "name", 1) or dp(a, "pool", 1):
                    i = self.target.take(argv, i, "name" if dp(a, "name", 1) else "pool",
                                         f"{self.name}: {a} requires another argument\n")
                elif dp(a, "addr", 2):
                    i += 1
                    if i >= len(argv):
                        raise common.Exit(1, f"{self.name}: {a} requires another argument\n")
                elif dp(a, "reason", 1):
                    i += 1
                    if i >= len(argv):
                        raise common.Exit(1, f"{self.name}: -reason requires another argument\n")
                    self.reason = argv[i]
                elif dp(a, "subcode", 1):
                    i += 1
                    if i >= len(argv):
                        raise common.Exit(1, f"{self.name}: -subcode requires another argument\n")
                    try:
                        self.subcode = int(argv[i])
                    except ValueError:
                        raise common.Exit(1, f"Invalid -subcode {argv[i]}!\n")
                elif dp(a, "forcex", 1 if self.mode == "rm" else 2):
                    if self.mode != "rm":
                        self.err.append("-forcex is only valid with condor_rm\n")
                        self._usage()
                elif dp(a, "held", 3) or dp(a, "hold", 3):  # "-hold" is accepted as a synonym
                    self.held = True
                elif dp(a, "version", 1):
                    raise common.Exit(0, "")
                elif dp(a, "help", 1):
                    self._usage(0)
                else:
                    self.err.append(f"Unrecognized option: {a}\n")
                    self._usage()
            else:
                if self.has_constraint == CT_ALL:
                    self._usage()
                self._proc_arg(a)
            i += 1
        if not self.has_constraint and not self.has_usercluster and not self.job_ids and not self.held:
            self.err.append("You did not specify any jobs\n")
            self._usage()
        if self.held and self.job_ids:  # the held filter needs the constraint path (rm.cpp)
            for c, p, _text in self.job_ids:
                one = f"(ClusterId == {c} && ProcId == {p})"
                self.usercluster = one if not self.has_usercluster else f"{self.usercluster} || {one}"
                self.has_usercluster = CT_COMPLEX
            self.job_ids = []

    def _proc_arg(self, arg: str) -> None:
        if arg[:1].isdigit() or (arg[:1] == "-" and arg[1:2].isdigit()):
            head, dot, tail = arg.partition(".")
            try:
                c = int(head)
            except ValueError:
                c = None
            if c is not None and c <= 0:
                self.err.append(f"Invalid cluster # from {arg}.\n")
                self.had_error = True
                return
            if c is not None and not dot:
                self._add_cluster(c)
                return
            if c is not None and tail and (tail.isdigit() or (tail[0] == "-" and tail[1:].isdigit())):
                if int(tail) < 0:
                    self.err.append(f"Invalid proc # from {arg}.\n")
                    self.had_error = True
                    return
                self.job_ids.append((c, int(tail), arg))
                return
            self.err.append(f'Warning: unrecognized "{arg}" skipped.\n')
            return
        self._add_user(arg)

    def _add_cluster(self, c: int) -> None:
        self._add_term(f"ClusterId == {c}", CT_CLUSTER)

    def _add_user(self, user: str) -> None:
        self._add_term(f'Owner == "{user}"', CT_USER)

    def _add_term(self, term: str, kind: int) -> None:
        """OR one more cluster or owner test into the selection (two or more make it complex)."""
        if not self.has_usercluster:
            self.usercluster, self.has_usercluster = term, kind
        else:
            self.usercluster += f" || {term}"
            self.has_usercluster = CT_COMPLEX

    def _add_constraint(self, text: str, kind: int) -> None:
        if self.has_constraint in (CT_NONE, CT_ALL):
            self.global_constraint = text
            self.has_constraint = kind
        elif self.has_constraint == CT_COMPLEX:
            self.global_constraint += f" && ({text})"
        else:
            self.global_constraint = f"({self.global_constraint}) && ({text})"
            self.has_constraint = CT_COMPLEX

    # ------------------------------------------------------------ doing it

    def run(self, argv: list[str]) -> int:
        self.parse(argv)
        t = self.target
        if t.unknown():  # rm.cpp: a -name is looked up in the collector, -pool through DCSchedd::locate
            why = (f"Error: cannot get address of schedd {t.host_part(t.name)}\n" if t.pool is None
                   else f"{self.name}: Can't find address for schedd {t.name or common.schedd_name()}\n")
            raise common.Exit(1, "".join(self.err) + why)
        self.user = paths.current_user()
        self.superuser = paths.is_root()
        reason = self.reason if self.reason is not None else self.default_reason
        self.reason_text = f"{reason} (by user {self.user})"
        files = common.pool_files()
        self.con = store.connect(files)
        changed = False
        if self.job_ids:
            if self.has_constraint:
                self.err.append("Warning, -constraint is ignored for fully qualified job ids\n")
            changed |= self._by_list()
        if self.has_usercluster:
            self._add_constraint(self.usercluster, self.has_usercluster)
        if self.has_constraint or self.held:
            changed |= self._by_constraint()
        self.con.close()
        self.events.write()
        if changed:
            daemon.ensure_runner(files)
            daemon.wake(files)
        sys.stdout.write("".join(self.out))
        sys.stdout.flush()
        sys.stderr.write("".join(self.err))
        return 1 if self.had_error else 0

    def _by_list(self) -> bool:
        results = []
        with store.transaction(self.con):
            for c, p, _text in self.job_ids:
                row = store.load_job(self.con, c, p)
                if row is None:
                    results.append((c, p, NOT_FOUND))
                    continue
                results.append((c, p, self._act(row[2])))
        if self.totals:
            self.out.append(_totals(r for *_x, r in results))
        if any(r != OK for *_x, r in results):
            self.had_error = True
            self.err.append("\n")  # errstack.getFullText() of an empty stack
        for c, p, r in results:
            if r == OK:
                self.out.append(f"Job {c}.{p} {self.one_past}\n")
            else:
                self.err.append(self._failure_line(c, p, r) + "\n")
        return any(r == OK for *_x, r in results)

    def _failure_line(self, c: int, p: int, r: str) -> str:
        if r == NOT_FOUND:
            return f"Job {c}.{p} not found"
        if r == PERMISSION:
            return f"Permission denied to {self.infinitive} job {c}.{p}"
        if r in (BAD_STATUS, ALREADY):
            if self.mode == "rm":
                return f"Job {c}.{p} already marked for removal"
            if self.mode == "hold":
                return f"Job {c}.{p} already held"
            return f"Job {c}.{p} not held to be released"
        return f"No result found for job {c}.{p}"

    def _by_constraint(self) -> bool:
        from htdask_localpool import match

        text = self.global_constraint
        cmsg = {CT_USER: " of user " + text.split(" == ", 1)[-1],
                CT_CLUSTER: " in cluster " + text.split(" == ", 1)[-1],
                CT_ALL: "", CT_NONE: ""}.get(self.has_constraint, f" matching constraint ({text})")
        jobs_word = "held jobs" if self.held else "jobs"
        if self.held:
            text = f"{text} && (JobStatus == 5)" if text else "JobStatus == 5"
        try:
            constraint = match.Constraint(text, store.name_spellings(self.con))
        except ValueError:  # DCSchedd::actOnJobs cannot put it into the command ad
            self.had_error = True
            self.err.append("DCSchedd::actOnJobs:1:Can't insert constraint into ClassAd\n")
            self.err.append(f"Couldn't find/{self.infinitive} all {jobs_word}{cmsg}\n")
            return False
        # Evaluate on a read snapshot (no write lock held while scanning a big queue), then
        # re-check each candidate inside the transaction before changing it.
        total = self.con.execute("SELECT count(*) FROM jobs").fetchone()[0]
        candidates = []
        for c, p, adtext in self.con.execute("SELECT cluster, proc, ad FROM jobs ORDER BY cluster, proc"):
            ad = ads.decode(adtext)
            if self._eligible(ad) and constraint.matches(ad):
                candidates.append((c, p))
        results = []
        if candidates:
            with store.transaction(self.con):
                for c, p in candidates:
                    row = store.load_job(self.con, c, p)
                    if row is None or not self._eligible(row[2]) or not constraint.matches(row[2]):
                        continue
                    results.append(self._act(row[2]))
        if self.totals:
            self.out.append(_totals(results))
        if OK in results:
            self.out.append(f"All {jobs_word}{cmsg} have been {self.past}\n")
            return True
        if total == 0:
            self.err.append(f"{self.name}:0:There are no jobs in the queue\n")
            return False
        self.had_error = True
        self.err.append("\n")
        self.err.append(f"Couldn't find/{self.infinitive} all {jobs_word}{cmsg}\n")
        return False

    def _eligible(self, ad: dict) -> bool:
        """The schedd only applies a constraint action to jobs in a status it can change."""
        st = ad.get("JobStatus")
        if self.mode == "rm":
            return st not in (3, 4)
        if self.mode == "hold":
            return st not in (3, 4, 5)
        return st == 5

    def _permitted(self, ad: dict) -> bool:
        return self.superuser or str(ad.get("Owner", "")) == self.user

    def _act(self, ad: dict) -> str:
        """Apply the action to one job ad inside the transaction; result code."""
        if not self._permitted(ad):
            return PERMISSION
        st = ad.get("JobStatus")
        now = int(time.time())
        if self.mode == "rm":
            if st in (3, 4):
                return ALREADY
            store.set_status(ad, 3, now)
            ad["RemoveReason"] = self.reason_text
            self.events.add(userlog.ABORTED, ad, now)
            row = self.con.execute("SELECT pid FROM jobs WHERE cluster=? AND proc=?",
                                   (ad["ClusterId"], ad["ProcId"])).fetchone()
            if row is None or row[0] is None:
                store.move_to_history(self.con, ad)  # no process: leaves the queue now
            else:
                store.save_job(self.con, ad)  # the runner kills it, then it leaves the queue
            return OK
        if self.mode == "hold":
            if st == 5:
                return ALREADY
            if st in (3, 4):
                return BAD_STATUS
            store.set_status(ad, 5, now)
            ad["HoldReason"] = self.reason_text
            ad["HoldReasonCode"] = 1
            ad["HoldReasonSubCode"] = self.subcode
            ad["NumHolds"] = int(ad.get("NumHolds") or 0) + 1
            store.save_job(self.con, ad)
            self.events.add(userlog.HELD, ad, now)
            return OK
        if st != 5:
            return BAD_STATUS
        store.set_status(ad, 1, now)
        for attr in ("HoldReason", "HoldReasonCode", "HoldReasonSubCode"):
            if attr in ad:
                ad["Last" + attr] = ad.pop(attr)
        ad["ReleaseReason"] = self.reason_text
        store.save_job(self.con, ad)
        self.events.add(userlog.RELEASED, ad, now)
        return OK


def _totals(results) -> str:
    results = list(results)
    return (f"{results.count(OK)} Succeeded, 0 Failed, {results.count(NOT_FOUND)} Not Found, "
            f"{results.count(BAD_STATUS)} Bad Status, {results.count(ALREADY)} Already Done, "
            f"{results.count(PERMISSION)} Permission Denied\n")
