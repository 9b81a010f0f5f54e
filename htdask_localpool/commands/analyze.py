"""condor_q -better-analyze for the local pool (HTCondor: src/condor_q.V6/jobmatch.cpp, a short version).

For each job: its Requirements (unparsed by classad2), then why it is where it is. A held job shows
its HoldReason, a running one says so. An idle job is matched, as HTCondor's analysis does, against
the slot ads of the pool (`htdask_localpool/machine.py`: every slot advertises the machine; the runner
publishes the ad when it starts): each top-level clause of the Requirements with the number of slots
it matches, the last rejection recorded in the job ad (LastRejMatchReason / LastRejMatchTime), and
the run analysis summary ("Of N machines, N are rejected by your job's requirements" and, when no slot
matches, the warning "No machines matched the jobs's constraints").
"""
from __future__ import annotations

import logging
import time

from htdask_localpool import ads, machine, store
from htdask_localpool.commands import common

log = logging.getLogger(__name__)


def clauses(text: str) -> list[str]:
    """The top-level `&&` operands of an expression's text, outer parentheses dropped."""
    out, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch in "([{":
            depth += 1
        elif not quoted and ch in ")]}":
            depth -= 1
        elif not quoted and depth == 0 and text.startswith("&&", i):
            out.append(text[start:i])
            start = i + 2
            i += 1
        i += 1
    out.append(text[start:])
    parts = []
    for part in (p.strip() for p in out):
        while part.startswith("(") and part.endswith(")") and clauses_balanced(part[1:-1]):
            part = part[1:-1].strip()
        parts.append(part)
    return [p for p in parts if p]


def clauses_balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def _idle(rid: str, ad: dict, slot: dict | None, slots: int, running: int) -> list[str]:
    if slot is None:
        return ["The local pool's runner is not running; it starts when a condor_* command is run.", ""]
    matcher = machine.Matcher(slot)
    lines = []
    req = ad.get("Requirements")
    if req is not None:
        lines += [f"The Requirements expression for job {rid} reduces to these conditions:", "",
                  "         Slots", "Step    Matched  Condition", "-----  --------  ---------"]
        for step, clause in enumerate(clauses(ads.unparse(req))):
            try:
                ok = matcher.matches({**ad, "Requirements": ads.Expr(clause)})
            except Exception:  # a clause classad2 cannot parse alone: not counted
                continue
            lines.append(f"[{step}]{slots if ok else 0:>12}  {clause}")
        lines.append("")
    reason = ad.get("LastRejMatchReason")
    if isinstance(reason, str):
        when = ad.get("LastRejMatchTime")
        lines += ["No successful match recorded."]
        if isinstance(when, int):
            lines.append(f"Last failed match: {time.strftime('%a %b %d %H:%M:%S %Y', time.localtime(when))}")
        lines += ["", f"Reason for last match failure: {reason}", ""]
    matched = matcher.matches(ad)
    able = slots - running if matched else 0
    lines += [f"{rid}:  Run analysis summary ignoring user priority.  Of {slots} machines,",
              f"{0 if matched else slots:>6} are rejected by your job's requirements",
              f"{0:>6} reject your job because of their own requirements",
              f"{running if matched else 0:>6} match and are already running jobs",
              f"{max(0, able):>6} are able to run your job", ""]
    if not matched:
        lines += ["WARNING:  Be advised:", "   No machines matched the jobs's constraints", ""]
    elif able <= 0:
        lines += [f"No slot is free: all {slots} slots of the local pool are running jobs. "
                  "Idle jobs start in ClusterId.ProcId order as slots free up.", ""]
    return lines


def write(out, con, rows: list[dict]) -> None:
    lines = ["", common.schedd_title()]
    slots = store.get_meta(con, "runner_slots", None)
    slot = machine.loads(store.get_meta(con, "machine_ad", None)) if slots is not None else None
    running = store.status_counts(con).get(2, 0)
    for ad in rows:
        rid = f"{ad.get('ClusterId')}.{ad.get('ProcId', 0):03d}"
        req = ad.get("Requirements")
        if req is not None:
            lines += [f"The Requirements expression for job {rid} is", "",
                      "    " + ads.unparse(req, old=True), ""]
        st = ad.get("JobStatus")
        if st == 5:
            lines.append(f"{rid}:  Job is held.")
            reason = ad.get("HoldReason")
            if isinstance(reason, str) and reason:
                lines += ["", f"Hold reason: {reason}"]
        elif st in (2, 6):
            lines.append(f"{rid}:  Job is running.")
        elif st == 7:
            lines.append(f"{rid}:  Job is suspended.")
        elif st == 3:
            lines.append(f"{rid}:  Job is removed.")
        elif st == 4:
            lines.append(f"{rid}:  Job is completed.")
        else:
            if store.get_meta(con, "execute_hosts", 0) and str(ad.get("ShouldTransferFiles")).upper() == "NO":
                lines.append("No execute host matches: should_transfer_files = NO requires "
                             f"TARGET.FileSystemDomain == \"{ad.get('FileSystemDomain')}\" (the submit host's), "
                             "and every execute host of this pool is its own FileSystemDomain.")
                lines.append("")
            lines += _idle(rid, ad, slot, int(slots or 0), running)
        lines.append("")
    out.write("\n".join(lines) + "\n")
