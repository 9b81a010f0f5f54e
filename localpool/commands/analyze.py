"""condor_q -better-analyze for the local pool: a short, honest version.

HTCondor's analysis (src/condor_q.V6/jobmatch.cpp) prints the job's Requirements, then
matches them against every slot ad of the pool.  This pool has no machine ads and no
matchmaking: it starts idle jobs in ClusterId.ProcId order on LOCALPOOL_SLOTS slots.  So
the analysis says what is true here: the Requirements (unparsed by classad2), then why the
job is held (HoldReason), that it runs, or whether a slot is free for an idle job.
"""
from __future__ import annotations

import logging

from localpool import ads, store
from localpool.commands import common

log = logging.getLogger(__name__)


def write(out, con, rows: list[dict]) -> None:
    lines = ["", common.schedd_title()]
    slots = store.get_meta(con, "runner_slots", None)
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
        elif st in (2, 6, 7):
            lines.append(f"{rid}:  Job is running.")
        elif st == 3:
            lines.append(f"{rid}:  Job is removed.")
        elif st == 4:
            lines.append(f"{rid}:  Job is completed.")
        else:
            lines.append(f"{rid}:  Job is idle.")
            lines.append("")
            if store.get_meta(con, "execute_hosts", 0) and str(ad.get("ShouldTransferFiles")).upper() == "NO":
                lines.append("No execute host matches: should_transfer_files = NO requires "
                             f"TARGET.FileSystemDomain == \"{ad.get('FileSystemDomain')}\" (the submit host's), "
                             "and every execute host of this pool is its own FileSystemDomain.")
            elif slots is None:
                lines.append("The local pool's runner is not running; it starts when a condor_* command is run.")
            elif running >= int(slots):
                lines.append(f"No slot is free: all {slots} slots of the local pool are running jobs. "
                             "Idle jobs start in ClusterId.ProcId order as slots free up.")
            else:
                lines.append(f"{int(slots) - running} of the local pool's {slots} slots are free; "
                             "the runner starts idle jobs in ClusterId.ProcId order within a second.")
            lines.append("(The local pool has no machine ads: Requirements are not matched against slots.)")
        lines.append("")
    out.write("\n".join(lines) + "\n")
