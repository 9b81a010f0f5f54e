"""The cluster commands: scale, delete, status, jobs, poll (each with --json and examples in --help)."""
from __future__ import annotations

import re
import signal
import sys
import threading
import time

import click

from htdask import scaleopts
from htdask.base import (BadInput, Command, Failure, duration, emit_json, examples, json_option, store as _store,
                         table)
from htdask.domain import joboptions, validation
from htdask.domain.jobstatus import JobStatus

def _known(store, cluster: str, culled_ok: bool = False) -> None:
    """An unknown cluster is one line and exit 1 (status, jobs, delete alike); `culled_ok`: one a limit
    deleted within a day is known (status shows why)."""
    from tasks import health
    try:
        health.require_known(store, cluster)
    except health.UnknownCluster as e:
        if culled_ok and cluster in store.culled(store.now()):
            return
        raise Failure(str(e)) from None


_BARE_NUMBER = re.compile(r"^\s*\d+(\.\d+)?\s*$")


@click.command(cls=Command, epilog=examples(
    "htdask scale mycluster 4 --scheduler tcp://10.0.0.5:8786 --owner alice --wait",
    "htdask scale mycluster 4 --email alice@example.org   # owner from USER_MAP_FILE or CI Connect",
    "htdask scale mycluster 8 --memory 4GiB               # other options stay as recorded",
    "htdask scale mycluster 0 --json",
    "htdask scale mycluster 4 --scheduler tls://10.0.0.5:8786 --tls-cert w.crt --tls-key w.pem",
    "htdask scale mycluster 4 --universe docker --image ghcr.io/dask/dask:2026.8.0 --dry-run",
    "htdask scale mycluster 4 --idle-timeout 30m --max-lifetime 8h"))
@click.argument("cluster")
@click.argument("count", metavar="N")
@click.option("--owner", help="Unix user the jobs run as (default: the Celery worker's DEFAULT_OWNER).")
@click.option("--email", help="Owner's e-mail, resolved to a Unix user (USER_MAP_FILE, else CI Connect).")
@click.option("--schedd", help="Schedd (queue) the cluster lives on (default: SCHEDD_NAME).")
@click.option("--scheduler", "scheduler_address", help="Dask scheduler address the workers connect to.")
@click.option("--threads", "nthreads", type=str, help="Threads per worker.")
@click.option("--memory", "memory_limit", help="Memory limit per worker with its unit, e.g. 4GiB or 512MiB.")
@click.option("--wait", is_flag=True, help="Wait until the cluster runs N jobs.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds --wait waits.")
@click.option("--force", is_flag=True, help="Scale even a cluster that a Dask Gateway or the operator manages.")
@scaleopts.options
@json_option
def scale(cluster, count, owner, email, schedd, scheduler_address, nthreads, memory_limit, wait, timeout, force,
          as_json, dry_run, **more):
    """Scale CLUSTER to N workers (HTCondor jobs).

    Options given now are merged with the ones recorded for the cluster (a later `--memory 4GiB` keeps
    its `--scheduler`)."""
    from htdask.state.managed import managers
    from tasks import api
    from tasks.config import settings
    from workers import identity
    if owner is not None and email is not None:
        raise click.UsageError("--owner and --email are mutually exclusive")
    req = api.scale_request(cluster, count, schedd=schedd)  # the request's one check (tasks.api)
    cluster, n = req.cluster, req.n
    limits = scaleopts.limits(more)  # --idle-timeout, --max-lifetime: checked before anything is done
    if email is not None:
        validation.validate_email(email, "--email")
    if memory_limit and _BARE_NUMBER.match(memory_limit):
        raise BadInput(f"--memory {memory_limit}: give a unit, e.g. {memory_limit.strip()}GiB or "
                       f"{memory_limit.strip()}MiB")
    options = scaleopts.job_options(more, scheduler_address=scheduler_address, nthreads=nthreads,
                                    memory_limit=memory_limit)
    store, unreachable = scaleopts.store_or_why(dry_run)
    record = store.get(cluster) if store else None
    manager = managers(store, [cluster])[cluster] if store else None
    if manager is None and record is not None and "api_url" in (record.options or {}):
        manager = {"kind": "Dask Gateway", "user": None}
    if manager and not force:
        who = f" for user {manager['user']}" if manager.get("user") else ""
        raise BadInput(f"cluster {cluster} is managed by the {manager['kind']}{who}: scale it there "
                       f"(or pass --force)")
    if owner is not None or email is not None:
        try:
            owner = identity.resolve_owner(email if email is not None else owner, store)
        except identity.IdentityUnavailable as e:
            raise Failure(str(e)) from None
    tls = scaleopts.tls_options(cluster, owner, more, settings(), dry_run=True)  # the paths, nothing written
    options.update(tls)
    # the flags over the cluster's recorded options (joboptions.assemble); none given: the recorded ones stay
    merged = joboptions.assemble(recorded=record.options if record else None, given=options) if options else None
    # the scheduler address this process checks the request with is the one recorded, when the cluster names
    # none: the Celery worker's environment may lack this one's DASK_SCHEDULER_ADDRESS
    merged = joboptions.with_entry_scheduler(merged, record.options if record else None,
                                             scheduler_address=settings().dask_scheduler_address)
    if dry_run:
        click.echo(scaleopts.dry_run(store, cluster, n, owner, merged if merged is not None else
                                     (record.options if record else {}), settings(), unreachable=unreachable),
                   nl=False)
        return
    if tls:  # bad input changes nothing: check the whole request before the files are staged
        from tasks.options import check_job_options
        check_job_options(merged)
        scaleopts.tls_options(cluster, owner, more, settings(), dry_run=False)
    since = store.now()  # Redis' clock, as the poll times and errors --wait compares with it
    # the owner (resolved) and the merged options are checked where the request is recorded (tasks.api)
    enqueued = api.enqueue_scale(store, req.model_copy(update={"owner": owner, "options": merged}),
                                 limits=limits)
    asked, n = n, enqueued.granted if enqueued.granted is not None else n
    if enqueued.note:  # QUOTA_MODE=grant cut the request down to the owner's quota
        click.echo(f"note: cluster {cluster}: {n} of {asked} workers granted: {enqueued.note}", err=True)
    changed = scaleopts.changed_options(record, merged)
    changed_note = (f"note: cluster {cluster}: options changed ({', '.join(changed)}): workers already submitted "
                    "keep theirs; only new jobs get the new options") if changed else ""
    if not as_json:
        click.echo(f"cluster {cluster}: scale to {n} enqueued on queue {enqueued.queue} (task {enqueued.task_id})")
        if changed_note:
            click.echo(changed_note)
    row = _wait_for(store, cluster, n, timeout, enqueued.queue, since) if wait else None
    if as_json:
        emit_json({"cluster": cluster, "n": n, "queue": enqueued.queue, "task_id": enqueued.task_id,
                   "seq": enqueued.seq, **({"asked": asked, "quota_note": enqueued.note} if enqueued.note else {}),
                   **({"options_note": changed_note} if changed_note else {}), **({"status": row} if wait else {})})


def _wait_for(store, cluster: str, n: int, timeout: float, schedd: str, since: float) -> dict:
    """Wait until the cluster runs exactly n jobs, from beat's summaries; fail fast with the cause
    (tasks/waiting.py). Progress lines go to stderr. Returns the cluster's status row."""
    from tasks import api, waiting
    try:
        waiting.wait_for(store, cluster, n, timeout, schedd, since, poll=lambda: api.enqueue_poll(schedd),
                         on_progress=lambda p: click.echo(p.line(), err=True))
    except waiting.WaitFailed as e:
        raise Failure(str(e)) from None
    rows = api.status_rows(store, cluster)
    return rows[0] if rows else {}


@click.command(cls=Command, epilog=examples("htdask delete mycluster", "htdask delete mycluster --wait --json"))
@click.argument("cluster")
@click.option("--wait", is_flag=True, help="Wait until no job of the cluster is left.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds --wait waits.")
@click.option("--force", is_flag=True, help="When no worker consumes the cluster's queue: remove its record "
                                            "now (its jobs are listed, not removed).")
@json_option
def delete(cluster, wait, timeout, force, as_json):
    """Remove every job of CLUSTER and forget its state."""
    from tasks import api, health
    from htdask.domain.request import DeleteRequest
    req = DeleteRequest.build(cluster=cluster)  # the request's one check
    cluster = req.cluster
    store = _store()
    _known(store, cluster)
    queue = api.queue_of(store, cluster)
    if not health.consumed(store, queue) and force and _answers_poll(queue):
        click.echo(f"cluster {cluster}: a worker answered a poll on queue {queue}: deleting through it, not by "
                   "force", err=True)
    elif not health.consumed(store, queue):
        if force:
            lines = health.force_delete(store, cluster, queue).lines()
            if as_json:
                emit_json({"cluster": cluster, "queue": queue, "task_id": None, "deleted": True, "forced": lines})
            else:
                for line in lines:
                    click.echo(line)
            return
        if wait:
            raise Failure(f"{health.no_consumer_message(queue)}: cluster {cluster} cannot be deleted now "
                          "(delete --force removes its record)")
    enqueued = api.enqueue_delete(store, req)
    doc = {"cluster": cluster, "queue": enqueued.queue, "task_id": enqueued.task_id, "deleted": None}
    if not as_json:
        click.echo(f"cluster {cluster}: delete enqueued on queue {enqueued.queue} (task {enqueued.task_id})")
    if not health.consumed(store, queue):
        click.echo(f"cluster {cluster}: {health.no_consumer_message(queue)}: the delete waits for one "
                   "(delete --force removes the record now)", err=True)
    if wait:
        _wait_deleted(store, cluster, enqueued.queue, timeout)
        doc["deleted"] = True
        if not as_json:
            click.echo(f"cluster {cluster}: deleted")
    if as_json:
        emit_json(doc)


#: seconds `delete --force` waits for a poll of the queue to be answered before it believes nobody consumes it
PROBE_SECONDS = 10.0


def _answers_poll(queue: str) -> bool:
    """True when a worker runs a poll of `queue` within PROBE_SECONDS: heartbeats say nobody consumes the queue,
    and this looks before a forced delete forgets a cluster whose worker may be alive."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from tasks import api
    pending = api.enqueue_poll(queue)
    try:
        pending.get(timeout=PROBE_SECONDS)
        return True
    except CeleryTimeout:
        pending.forget()
        return False


def _wait_deleted(store, cluster: str, queue: str, timeout: float) -> None:
    from tasks import api
    deadline, polled = time.monotonic() + timeout, False
    while time.monotonic() < deadline:
        if store.get(cluster) is None:
            if not polled:  # one poll request per wait; beat's polls do the rest
                api.enqueue_poll(queue)
                polled = True
            time.sleep(1.0)
            rows = api.status_rows(store, cluster)
            if not rows or not any(rows[0].get(k) for k in ("idle", "running", "held")):
                return
        else:
            time.sleep(0.3)
    raise Failure(f"timed out after {timeout:.0f}s waiting for cluster {cluster} to be deleted")


@click.command(cls=Command, epilog=examples("htdask status", "htdask status mycluster --json",
                               "htdask status --watch --interval 5"))
@click.argument("cluster", required=False)
@json_option
@click.option("--watch", is_flag=True, help="Print again every --interval seconds until Ctrl-C "
                                            "(with --json: one JSON document per line).")
@click.option("--interval", type=click.FloatRange(min=0.5), default=2.0, show_default=True,
              help="Seconds between two prints of --watch.")
def status(cluster, as_json, watch, interval):
    """Desired and actual workers of every cluster (or one), from the poller's summaries."""
    if cluster:
        validation.validate_cluster_name(cluster)
    store = _store()
    if cluster:
        _known(store, cluster, culled_ok=True)
    if not watch:
        _status_loop(store, cluster, as_json, False, interval, lambda: False)
        return
    # Ctrl-C (or SIGTERM) is how --watch ends: it only sets a flag the loop reads between prints, so no
    # KeyboardInterrupt is raised inside library code, where a __del__ or cleanup handler may swallow it.
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _status_loop(store, cluster, as_json, True, interval, stop.is_set)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _status_loop(store, cluster, as_json: bool, watch: bool, interval: float, stopped) -> None:
    import json

    from tasks import api, quota
    from tasks.config import settings
    while not stopped():
        rows = api.status_rows(store, cluster)
        quotas = quota.usage_rows(store)  # use against quota per owner
        if as_json and watch:
            click.echo(json.dumps({"time": time.time(), "clusters": rows, "quotas": quotas}, default=str))
        elif as_json:
            emit_json({"clusters": rows, "quotas": quotas})
        else:
            if watch and sys.stdout.isatty():
                click.clear()
            if watch:
                click.echo(time.strftime("%H:%M:%S") + f"  (every {interval:g}s, Ctrl-C stops)")
            click.echo(format_status(rows))
            if quotas and settings().quota.enabled:  # a site without quotas: the table alone, as before
                click.echo("\nquota use per owner (used/limit, - = unlimited):\n" + quota.format_usage(quotas))
        if not watch:
            return
        sys.stdout.flush()
        deadline = time.monotonic() + interval
        while not stopped() and time.monotonic() < deadline:
            time.sleep(min(0.05, interval))


def connected_cell(row: dict) -> str:
    """Workers connected to the cluster's scheduler at the last poll ('-': not asked or unknown)."""
    s = row.get("scheduler") or {}
    return "-" if s.get("connected") is None else str(s["connected"])


#: the JobStatus columns of the status table, in the order people read them
STATE_COLUMNS = (JobStatus.IDLE, JobStatus.RUNNING, JobStatus.HELD, JobStatus.SUSPENDED,
                 JobStatus.TRANSFERRING_OUTPUT, JobStatus.COMPLETED, JobStatus.REMOVED)


def format_status(rows: list[dict]) -> str:
    if not rows:
        return "no clusters"
    heads = ["TRANSFERRING" if s == JobStatus.TRANSFERRING_OUTPUT else s.name for s in STATE_COLUMNS]
    out = [["CLUSTER", "OWNER", "SCHEDD", "USER", "DESIRED", *heads[:2], "CONNECTED", *heads[2:], "POLLED", "NOTE"]]
    for r in rows:
        polled = "never" if r["age"] is None else f"{duration(r['age'])} ago" + (" (stale)" if r["stale"] else "")
        notes = []
        if r.get("managed_by"):
            notes.append(f"managed by the {r['managed_by']}")
        if r.get("poll_error"):
            notes.append(f"poll failing: {r['poll_error']}")
        elif r.get("stale_reason"):
            notes.append(f"stale: {r['stale_reason']}")
        if r.get("unparsed"):
            notes.append(f"{r['unparsed']} unreadable job ads on schedd {r['schedd']} skipped (worker log)")
        notes += r.get("notes") or []  # tasks.status.notes: the same words as the status page
        counts = [str(r.get(s.key, 0)) for s in STATE_COLUMNS]
        out.append([r["name"], r.get("owner") or "-", r.get("schedd") or "-", r.get("user") or "-",
                    "-" if r["desired"] is None else str(r["desired"]), *counts[:2], connected_cell(r),
                    *counts[2:], polled, "; ".join(notes)])
    return table(out)


@click.command(cls=Command, epilog=examples("htdask jobs mycluster", "htdask jobs mycluster --json"))
@click.argument("cluster")
@json_option
def jobs(cluster, as_json):
    """Each job of CLUSTER: state, time in that state, hold reason (why is my cluster not growing?)."""
    from tasks import api, status as cluster_status
    validation.validate_cluster_name(cluster)
    store = _store()
    _known(store, cluster)
    records = sorted(store.job_records(cluster).values(), key=lambda r: (r.get("index") or 0))
    # job ads' times and crash-loop backoff are the schedd's clock: Redis' now converted to it
    now = store.schedd_clock(store.poll_status(api.queue_of(store, cluster)), store.now())
    for rec in records:
        cluster_status.annotate_job(rec, now)
    note = cluster_status.crash_note(store.get(cluster), now)
    if as_json:
        emit_json({"cluster": cluster, "jobs": records, "note": note})
        return
    if not records:
        click.echo(f"cluster {cluster}: no jobs in the last poll" + (f" ({note})" if note else ""))
        return
    out = [["JOB", "NAME", "STATE", "FOR", "HOLD REASON"]]
    for rec in records:
        out.append([rec["job_id"], rec.get("name") or "", rec["state"], duration(rec["seconds_in_state"]),
                    rec.get("hold_reason") or ""])
    click.echo(table(out))
    if note:
        click.echo(f"note: {note}")


@click.command(cls=Command, epilog=examples("htdask logs mycluster", "htdask logs mycluster mycluster-3 --tail 100",
                                            "htdask logs mycluster --json"))
@click.argument("cluster")
@click.argument("worker", required=False)
@click.option("--tail", "n", type=click.IntRange(0, 100000), default=20, show_default=True,
              help="Lines of output and error per worker.")
@json_option
def logs(cluster, worker, n, as_json):
    """A worker's output and error (or every worker's of CLUSTER), from LOG_DIR on this submit node."""
    from tasks import worker_logs
    from tasks.config import settings
    validation.validate_cluster_name(cluster)
    store = _store()
    try:
        lines = worker_logs.lines(settings().log_dir, cluster, worker, list(store.job_records(cluster).values()), n)
    except FileNotFoundError as e:
        raise Failure(str(e)) from None
    if as_json:
        emit_json({"cluster": cluster, "worker": worker, "lines": lines})
    else:
        click.echo("\n".join(lines))


@click.command(cls=Command, epilog=examples("htdask poll", "htdask poll --schedd submit01 --json"))
@click.option("--schedd", help="Schedd to poll (default: every schedd in SCHEDDS).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for each answer.")
@json_option
def poll(schedd, timeout, as_json):
    """Poll the queue now and print the summaries."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from tasks import api
    from tasks.config import settings
    store = _store()
    schedds = [validation.validate_schedd_name(schedd)] if schedd else list(settings().schedds)
    results = []
    for name in schedds:
        pending = api.enqueue_poll(name)
        try:
            result = pending.get(timeout=timeout)
        except CeleryTimeout:
            pending.forget()  # drop the result subscription now, not in a destructor at exit
            raise Failure(f"no worker answered the poll on queue {name} within {timeout:.0f}s "
                          f"(is a Celery worker consuming queue {name}?)") from None
        results.append({"schedd": name, **result})
        if not as_json:
            click.echo(f"schedd {name}: {result['state']}, {result['jobs']} jobs in {result['clusters']} clusters"
                       + (f" ({result['error']})" if result.get("error") else ""))
    rows = api.status_rows(store)
    if as_json:
        emit_json({"polls": results, "clusters": rows})
    else:
        click.echo(format_status(rows))
