"""condor_submit: parse a submit description, queue its jobs in one transaction.

The text is read by HTCondor's own submit-language code (htdask_localpool.submitlang, htcondor2)
and each job ad built as condor_submit builds it (htdask_localpool.jobad).  Output, error texts
and exit codes follow HTCondor's condor_submit (submit.cpp); the ClusterId is allocated
inside the same BEGIN IMMEDIATE transaction that inserts the jobs, so concurrent submits
never share or lose ids.  ``-dry-run FILE`` (``-`` = stdout) prints the attributes
condor_submit would send to the schedd (SimScheddQ's "Attr=value" lines) and queues nothing.
"""
from __future__ import annotations

import logging
import os
import sys
import time

from htdask_localpool import ads, calls_log, daemon, jobad, paths, store, submitlang, userlog
from htdask_localpool.commands import common
from htdask_localpool.submitlang import SubmitError

log = logging.getLogger(__name__)

class Usage(Exception):
    """Command-line problem: message printed as is on stderr, exit 1."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    calls_log.record("condor_submit", argv)
    try:
        return common.guarded(_submit, argv)
    except Usage as exc:
        sys.stderr.write(str(exc))
        return 1
    except SubmitError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"\nERROR: {exc}\n")
        return 1


class Options:
    def __init__(self):
        self.target = common.Target()  # -name / -remote / -pool
        self.file: str | None = None
        self.terse = False
        self.verbose = False
        self.batch_name: str | None = None
        self.appended: list[str] = []
        self.preset: list[tuple[str, str]] = []
        self.dry_run: str | None = None  # output file, "-" = stdout
        self.dry_cluster = 1


def _parse_args(argv: list[str]) -> Options:
    o = Options()
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-":
            o.file = "-"
        elif a.startswith("-") and len(a) > 1:
            if common.dash_prefix(a, "terse", 3):
                o.terse = True
            elif common.dash_prefix(a, "verbose", 1):
                o.verbose = True
            elif common.dash_prefix(a, "batch-name", 3):
                i += 1
                if i >= len(argv):
                    raise Usage("condor_submit: -batch-name requires another argument\n")
                o.batch_name = argv[i]
            elif common.dash_prefix(a, "append", 1):
                i += 1
                if i >= len(argv):
                    raise Usage("condor_submit: -append requires another argument\n")
                o.appended.append(argv[i])
            elif common.dash_prefix(a, "queue", 1):
                i += 1
                if i >= len(argv):
                    raise Usage("condor_submit: -queue requires another argument\n")
                o.appended.append("queue " + argv[i])
            elif common.dash_colon_prefix(a, "dry-run", 3)[0]:
                opts = common.dash_colon_prefix(a, "dry-run", 3)[1] or ""
                for opt in [x for x in opts.split(",") if x]:
                    if opt.startswith("cluster="):
                        o.dry_cluster = max(1, int(opt.split("=", 1)[1] or 1))
                    else:
                        raise Usage(f"unknown option {opt} for -dry-run:<opts>\n")
                i += 1
                if i >= len(argv) or (argv[i].startswith("-") and argv[i] != "-"):
                    raise Usage("condor_submit: -dry-run requires another argument\n")
                o.dry_run = argv[i]
            elif common.dash_prefix(a, "disable", 1) or common.dash_prefix(a, "spool", 2):
                pass  # accepted, no meaning for a local pool
            elif common.dash_prefix(a, "name", 1) or common.dash_prefix(a, "remote", 1) \
                    or common.dash_prefix(a, "pool", 1):
                which = "pool" if common.dash_prefix(a, "pool", 1) else "name"
                i = o.target.take(argv, i, which, f"condor_submit: {a} requires another argument\n")
            else:
                raise Usage(f"condor_submit: unknown option {a}\n")
        elif "=" in a:
            key, _, value = a.partition("=")
            o.preset.append((key.strip(), value.strip()))
        elif o.file is None:
            o.file = a
        else:
            raise Usage(f"condor_submit: unexpected argument {a}\n")
        i += 1
    if o.batch_name is not None:
        v = o.batch_name if o.batch_name.startswith('"') else f'"{o.batch_name}"'
        o.appended.append(f"MY.JobBatchName = {v}")
    return o


def _submit(argv: list[str]) -> int:
    o = _parse_args(argv)
    if o.dry_run is None and o.target.unknown():  # submit.cpp: DCSchedd::locate() before reading the file
        who = f"schedd {o.target.name}" if o.target.name else "local schedd"
        raise SubmitError(f"Can't find address of {who}")
    from_stdin = o.file in (None, "-")
    if o.file is None and (o.preset and any(l.lower().startswith("queue") for l in o.appended)):
        text, label = "", "(command line)"
        from_stdin = False
    elif from_stdin:
        text, label = sys.stdin.read(), "(stdin)"
    else:
        try:
            with open(o.file, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as exc:
            raise SubmitError(f"Failed to open command file ({o.file}) ({exc.strerror})")
        label = o.file
    verbose = (o.verbose or from_stdin) and not o.terse and o.dry_run is None
    show_progress = not o.terse and not verbose and not from_stdin
    if show_progress:
        sys.stdout.write("Dry-Run job(s)" if o.dry_run is not None else "Submitting job(s)")
        sys.stdout.flush()

    cwd = os.getcwd()
    desc = submitlang.parse(text, appended=o.appended, preset=o.preset)
    if not desc.had_queue:
        raise SubmitError(f'"{label}" doesn\'t contain any "queue" commands -- no jobs queued')
    if sum(q.num_jobs for q in desc.queues) == 0:
        if show_progress:
            sys.stdout.write("\n")
        sys.stdout.flush()
        sys.stderr.write(f'\nWARNING: "{label}" has only empty "queue" commands -- no jobs queued\n')
        return 0
    # $(SUBMIT_FILE): the file name as given; condor_submit sets none for stdin, "null" for no file
    submit_file = "" if from_stdin else ("null" if o.file is None else o.file)
    builder = jobad.AdBuilder(owner=paths.current_user(), cwd=cwd, host=common.schedd_name(),
                              qdate=int(time.time()), environ=dict(os.environ))
    if o.dry_run is not None:
        return _dry_run(o, desc, builder, submit_file, show_progress)

    files = common.pool_files()
    con = store.connect(files)
    if store.take_fault(con, "fault_submit_fail"):
        raise SubmitError("Failed to connect to local queue manager\n"
                          f"CEDAR:6001:Failed to connect to {common.SCHEDD_ADDR.split('?')[0]}>")
    delay = float(store.get_meta(con, "fault_submit_delay", 0) or 0)
    if delay > 0:
        time.sleep(delay)  # a process killed here has queued nothing

    with store.transaction(con):
        cluster = store.allocate_cluster(con)
        job_ads = build_all(builder, desc, cluster, submit_file)
        keep = int(store.get_meta(con, "fault_submit_partial", 0) or 0)
        if keep > 0:  # the schedd accepted only the first `keep` jobs (one-shot knob)
            store.set_meta(con, "fault_submit_partial", 0)
            job_ads = job_ads[:keep]
        store.insert_jobs(con, job_ads)
    con.close()
    events = userlog.Pending(common.schedd_name())  # 000 before the runner can write a job's 001
    for ad in job_ads:
        events.add(userlog.SUBMIT, ad, builder.qdate)
        if ad.get("JobStatus") == 5:  # `hold = true`, or a universe this pool cannot run
            events.add(userlog.HELD, ad, builder.qdate)
    events.write()
    daemon.ensure_runner(files)
    daemon.wake(files)

    out = []
    if o.terse:
        out.append(f"{cluster}.{job_ads[0]['ProcId']} - {cluster}.{job_ads[-1]['ProcId']}\n")
    elif verbose:
        for ad in job_ads:
            out.append(f"\n** Proc {cluster}.{ad['ProcId']}:\n")
            out.append(ads.format_old(ad))
        out.append(f"\n{len(job_ads)} job(s) submitted to cluster {cluster}.\n")
    else:
        out.append("." * len(job_ads) + "\n")
        out.append(f"{len(job_ads)} job(s) submitted to cluster {cluster}.\n")
    sys.stdout.write("".join(out))
    sys.stdout.flush()
    sys.stderr.write(f"To monitor your job(s), run: condor_watch_q -clusters {cluster}\n")
    return 0


def build_all(builder: jobad.AdBuilder, desc: submitlang.Description, cluster: int,
              submit_file: str) -> list[dict]:
    """Every job ad of the description, ProcIds from 0 in queue order (item by item, then step)."""
    out = []
    proc = 0
    for q in desc.queues:
        expander = submitlang.Expander(q, cluster, submit_file, builder.qdate)
        rows = q.rows if q.rows is not None else [None]
        for row, item in enumerate(rows):
            for step in range(q.count):
                out.append(builder.build(expander.values(proc, step, row, item), cluster, proc))
                proc += 1
    return out


def _dry_run(o: Options, desc: submitlang.Description, builder: jobad.AdBuilder, submit_file: str,
             show_progress: bool) -> int:
    """What SimScheddQ writes: per job "\n", the cluster ad's attributes before proc 0 ("ClusterId=C"
    first), then "ProcId=P", "JobStatus=S" and the attributes that differ between the jobs."""
    cluster = o.dry_cluster
    job_ads = build_all(builder, desc, cluster, submit_file)
    first = job_ads[0]
    common_names = [k for k in first if k not in ("ClusterId", "ProcId", "JobStatus")
                    and all(k in ad and ad[k] == first[k] and type(ad[k]) is type(first[k]) for ad in job_ads)]
    chunks = []
    for ad in job_ads:
        lines = ["\n"]
        if ad is first:
            lines.append(f"ClusterId={cluster}\n")
            lines += [f"{k}={ads.unparse(first[k], old=True)}\n" for k in common_names]
        lines.append(f"ProcId={ad['ProcId']}\nJobStatus={ad['JobStatus']}\n")
        lines += [f"{k}={ads.unparse(v, old=True)}\n" for k, v in ad.items()
                  if k not in common_names and k not in ("ClusterId", "ProcId", "JobStatus")]
        chunks.append("".join(lines))
    to_stdout = o.dry_run == "-"
    if not to_stdout:
        try:
            with open(o.dry_run, "w") as f:
                f.write("".join(chunks))
        except OSError as exc:
            raise SubmitError(f"Failed to open file -dry-run output file ({exc.strerror})") from None
    dot = "." if show_progress else ""
    out = [c + dot for c in chunks] if to_stdout else [dot * len(chunks)]
    if o.terse:
        out.append(f"{cluster}.0 - {cluster}.{len(job_ads) - 1}\n")
    else:
        out.append(("\n" if show_progress else "") + f"{len(job_ads)} job(s) dry-run to cluster {cluster}.\n")
    sys.stdout.write("".join(out))
    sys.stdout.flush()
    return 0
