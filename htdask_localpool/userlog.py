"""The job event log ("user log", submit command ``log``, job attribute UserLog), in HTCondor's format.

HTCondor's schedd and shadow append one event per job state change to the file named by the job's
UserLog, as the job's owner; each event is a header line ``NNN (CCC.PPP.SSS) YYYY-MM-DD HH:MM:SS
<text>``, event-specific lines (tab-indented) and a ``...`` line (the manual's "Job Event Log Codes";
the ISO date is the default of DEFAULT_USERLOG_FORMAT_OPTIONS, local time).  The events written
here, and by whom (as in HTCondor):

======  ==================  ===================================================================
code    event               written by
======  ==================  ===================================================================
000     submit              condor_submit, once per job
001     execute             the runner, when the job's process starts
004     evicted             the runner: a running job stopped without a result (runner shutdown),
                            or a job that exited and was requeued (OnExitRemove false:
                            "Job terminated and was requeued", with its return value)
005     terminated          the runner: the job exited and leaves the queue (return value, or
                            signal and "No core file")
009     aborted             condor_rm, and PeriodicRemove (with the RemoveReason)
010     suspended           condor_suspend (the job's processes are stopped: SIGSTOP)
011     unsuspended         condor_continue (SIGCONT)
012     held                condor_hold, the runner's start failures and policy holds (HoldReason,
                            "Code <HoldReasonCode> Subcode <HoldReasonSubCode>")
013     released            condor_release, PeriodicRelease (with the ReleaseReason)
======  ==================  ===================================================================

``htcondor2.JobEventLog`` (the wheel's reader, HTCondor's own ReadUserLog) parses these files; see
tests/test_localpool_userlog.py.  Writes never fail a command or the runner: an event that cannot be
appended (a missing directory, no permission) is logged and dropped, as the shadow does.
"""
from __future__ import annotations

import logging
import os
import pwd
import time

log = logging.getLogger(__name__)

SUBMIT, EXECUTE, EVICTED, TERMINATED, ABORTED, HELD, RELEASED = 0, 1, 4, 5, 9, 12, 13
SUSPENDED, UNSUSPENDED = 10, 11  # condor_suspend / condor_continue
_HOST_ADDR = "<127.0.0.1:9618?addrs=127.0.0.1-9618&alias={host}&noUDP&sock={sock}>"
_USAGE = "Usr 0 00:00:00, Sys 0 00:00:00"


def _header(code: int, ad: dict, when: float | None) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if when is None else when))
    return f"{code:03d} ({int(ad['ClusterId']):03d}.{int(ad['ProcId']):03d}.000) {stamp} "


def _usage_lines(total: bool) -> list[str]:
    lines = [f"\t\t{_USAGE}  -  Run Remote Usage", f"\t\t{_USAGE}  -  Run Local Usage"]
    if total:
        lines += [f"\t\t{_USAGE}  -  Total Remote Usage", f"\t\t{_USAGE}  -  Total Local Usage"]
    lines += ["\t0  -  Run Bytes Sent By Job", "\t0  -  Run Bytes Received By Job"]
    if total:
        lines += ["\t0  -  Total Bytes Sent By Job", "\t0  -  Total Bytes Received By Job"]
    return lines


def _exit_lines(ad: dict) -> list[str]:
    """How the process ended, from ExitBySignal / ExitSignal / ExitCode of the ad."""
    if ad.get("ExitBySignal") is True:
        return [f"\t(0) Abnormal termination (signal {ad.get('ExitSignal')})", "\t(0) No core file"]
    return [f"\t(1) Normal termination (return value {ad.get('ExitCode')})"]


def _one_line(text) -> str:
    return " ".join(str(text or "").split())


def event_text(code: int, ad: dict, *, host: str = "localhost", when: float | None = None) -> str:
    """The text of one event (header to ``...`` line, newline-terminated) about job ``ad``.

    The ad must hold ClusterId and ProcId, and what the event reports: ExitCode or ExitBySignal +
    ExitSignal (004 requeued, 005), HoldReason/HoldReasonCode/HoldReasonSubCode (012), RemoveReason
    (009), ReleaseReason (013).  ValueError for a code not listed in the module docstring.
    """
    head = _header(code, ad, when)
    if code == SUBMIT:
        lines = [head + "Job submitted from host: " + _HOST_ADDR.format(host=host, sock="schedd_localpool")]
        if isinstance(ad.get("SubmitEventNotes"), str) and ad["SubmitEventNotes"]:  # read back as LogNotes
            lines.append("    " + _one_line(ad["SubmitEventNotes"]))
    elif code == EXECUTE:
        lines = [head + "Job executing on host: " + _HOST_ADDR.format(host=host, sock="startd_localpool")]
    elif code == EVICTED:
        if "ExitCode" in ad or ad.get("ExitBySignal") is True:  # exited, OnExitRemove false: runs again
            lines = [head + "Job was evicted.", "\t(0) Job terminated and was requeued"]
            lines += _usage_lines(total=False) + _exit_lines(ad)
        else:
            lines = [head + "Job was evicted.", "\t(0) Job was not checkpointed."] + _usage_lines(total=False)
    elif code == TERMINATED:
        lines = [head + "Job terminated."] + _exit_lines(ad) + _usage_lines(total=True)
    elif code == ABORTED:
        lines = [head + "Job was aborted.", "\t" + _one_line(ad.get("RemoveReason") or "")]
    elif code == HELD:
        lines = [head + "Job was held.", "\t" + _one_line(ad.get("HoldReason") or "Unspecified job hold reason"),
                 f"\tCode {int(ad.get('HoldReasonCode') or 0)} Subcode {int(ad.get('HoldReasonSubCode') or 0)}"]
    elif code == SUSPENDED:
        lines = [head + "Job was suspended.", "\tNumber of processes actually suspended: 1"]
    elif code == UNSUSPENDED:
        lines = [head + "Job was unsuspended."]
    elif code == RELEASED:
        lines = [head + "Job was released.", "\t" + _one_line(ad.get("ReleaseReason") or "")]
    else:
        raise ValueError(f"event code {code} is not written by the local pool")
    return "\n".join(lines) + "\n...\n"


def path_of(ad: dict) -> str | None:
    """The job's event log (UserLog, absolute as condor_submit stores it), or None."""
    p = ad.get("UserLog")
    return p if isinstance(p, str) and p and os.path.isabs(p) else None


class Pending:
    """Events collected inside a queue transaction, appended after it commits (no file I/O under the
    database lock; an event is never written for a change that was rolled back)."""

    def __init__(self, host: str = "localhost"):
        self.host = host
        self.items: list[tuple[str, str, str]] = []  # (path, owner, text)

    def add(self, code: int, ad: dict, when: float | None = None) -> None:
        path = path_of(ad)
        if path is not None:
            self.items.append((path, str(ad.get("Owner") or ""), event_text(code, ad, host=self.host, when=when)))

    def write(self) -> None:
        items, self.items = self.items, []
        by_file: dict[tuple[str, str], list[str]] = {}
        for path, owner, text in items:
            by_file.setdefault((path, owner), []).append(text)
        for (path, owner), texts in by_file.items():
            append(path, owner, "".join(texts))


def append(path: str, owner: str, text: str) -> bool:
    """Append ``text`` to ``path`` as ``owner`` (when running as root), in one write(2) to an
    O_APPEND descriptor (concurrent writers never interleave inside an event).  False if it failed."""
    def write():
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)

    try:
        pw = pwd.getpwnam(owner) if os.geteuid() == 0 and owner else None
        as_owner(pw, write)
        return True
    except (OSError, KeyError) as exc:
        log.warning("job event log %s (owner %s) not written: %s", path, owner or "?", exc)
        return False


def as_owner(pw, fn):
    """Run fn with the owner's effective uid/gid/groups (a root process and a non-root owner), else as is."""
    if pw is None or os.geteuid() != 0 or pw.pw_uid == 0:
        return fn()
    saved_groups = os.getgroups()
    saved_egid = os.getegid()
    os.setgroups(os.getgrouplist(pw.pw_name, pw.pw_gid))
    os.setegid(pw.pw_gid)
    os.seteuid(pw.pw_uid)
    try:
        return fn()
    finally:
        os.seteuid(0)
        os.setegid(saved_egid)
        os.setgroups(saved_groups)
