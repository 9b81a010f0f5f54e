#!/usr/bin/env python3
"""Command line of the HTCondor-backed Dask cluster controller.

    python cli.py scale CLUSTER N [--owner USER | --email ADDRESS] [--schedd NAME] [--wait [--timeout S]]
    python cli.py delete CLUSTER [--wait] [--force]
    python cli.py status [CLUSTER] [--json]
    python cli.py jobs CLUSTER [--json]
    python cli.py logs CLUSTER [WORKER] [--tail N]
    python cli.py poll
    python cli.py demo

Bad input: one line on stderr, exit 2, nothing enqueued. Runtime failure (Redis down, timeout): one
line on stderr, exit 1.
"""
from __future__ import annotations

import json
import logging
import sys
import time

import click
import redis

from workers import validation
from workers.runas import UserRefused

log = logging.getLogger("cli")

BAD_INPUT = (validation.ValidationError, UserRefused)
STATE_NAMES = {1: "Idle", 2: "Running", 3: "Removed", 4: "Completed", 5: "Held", 6: "Transferring", 7: "Suspended"}


class Failure(Exception):
    """A runtime failure the user should see as one line (exit 1)."""


class OneLineErrors(click.Group):
    """Turn every error into one line on stderr: exit 2 for bad input, 1 for runtime failures."""

    def main(self, args=None, prog_name=None, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.UsageError as e:
            _fail(e.format_message().splitlines()[-1] if e.format_message() else str(e), 2)
        except BAD_INPUT as e:
            _fail(str(e), 2)
        except click.Abort:
            _fail("aborted", 1)
        except redis.exceptions.RedisError as e:
            _fail(f"cannot reach Redis ({_redacted_url()}): {e}", 1)
        except (Failure, TimeoutError) as e:
            _fail(str(e), 1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _redacted_url() -> str:
    from tasks.config import settings
    url = settings().redis_url
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _known(store, cluster: str) -> None:
    """An unknown cluster is one line and exit 1 (status, jobs, delete alike)."""
    from tasks import health
    try:
        health.require_known(store, cluster)
    except health.UnknownCluster as e:
        raise Failure(str(e)) from None


def _store():
    from state import Store, connect
    from tasks.config import settings
    store = Store(connect(settings().redis_url))
    store.r.ping()
    return store


@click.group(cls=OneLineErrors)
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO on stderr.")
def main(verbose: bool):
    """Dask clusters whose workers are HTCondor jobs, scaled by Celery tasks."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command(context_settings={"ignore_unknown_options": True})  # so that N may be "-1" (refused below)
@click.argument("cluster")
@click.argument("count", metavar="N")
@click.option("--owner", help="Unix user the jobs run as (default: the Celery worker's user).")
@click.option("--email", help="Owner's e-mail, resolved to a Unix user (USER_MAP_FILE, else CI Connect).")
@click.option("--schedd", help="Schedd (queue) the cluster lives on (default: SCHEDD_NAME).")
@click.option("--scheduler", "scheduler_address", help="Dask scheduler address the workers connect to.")
@click.option("--threads", "nthreads", type=str, help="Threads per worker.")
@click.option("--memory", "memory_limit", help="Memory limit per worker, e.g. 4GiB.")
@click.option("--wait", is_flag=True, help="Wait until the cluster runs N jobs.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds --wait waits.")
def scale(cluster, count, owner, email, schedd, scheduler_address, nthreads, memory_limit, wait, timeout):
    """Scale CLUSTER to N workers (HTCondor jobs)."""
    from tasks import api
    from tasks.config import settings
    from workers import identity
    if owner is not None and email is not None:
        raise click.UsageError("--owner and --email are mutually exclusive")
    validation.validate_cluster_name(cluster)
    n = validation.validate_count(count, settings().max_workers_per_cluster)
    if email is not None:
        validation.validate_email(email, "--email")
    options = {}
    if scheduler_address:
        options["scheduler_address"] = validation.validate_address(scheduler_address)
    if nthreads:
        options["nthreads"] = validation.validate_count(nthreads, 1024, field="--threads")
    if memory_limit:
        options["memory_limit"] = validation.validate_memory(memory_limit)
    store = _store()
    if owner is not None or email is not None:
        try:
            owner = identity.resolve_owner(email if email is not None else owner, store)
        except identity.IdentityUnavailable as e:
            raise Failure(str(e)) from None
    since = time.time()
    enqueued = api.enqueue_scale(store, cluster, n, owner=owner, options=options or None, schedd=schedd)
    click.echo(f"cluster {cluster}: scale to {n} enqueued on queue {enqueued.queue} (task {enqueued.task_id})")
    if wait:
        _wait_for(store, cluster, n, timeout, schedd=enqueued.queue, since=since)


def _wait_for(store, cluster: str, n: int, timeout: float, schedd: str, since: float) -> None:
    """Wait until the cluster runs exactly n jobs, from beat's summaries; fail fast with the cause
    (tasks/waiting.py). Progress lines go to stderr."""
    from tasks import api, waiting
    try:
        waiting.wait_for(store, cluster, n, timeout, schedd, since, poll=lambda: api.enqueue_poll(schedd),
                         on_progress=lambda p: click.echo(p.line(), err=True))
    except waiting.WaitFailed as e:
        raise Failure(str(e)) from None


@main.command()
@click.argument("cluster")
@click.option("--wait", is_flag=True, help="Wait until no job of the cluster is left.")
@click.option("--timeout", type=float, default=120.0, show_default=True)
@click.option("--force", is_flag=True, help="When no worker consumes the cluster's queue: remove its record "
                                            "now (its jobs are listed, not removed).")
def delete(cluster, wait, timeout, force):
    """Remove every job of CLUSTER and forget its state."""
    from tasks import api, health
    validation.validate_cluster_name(cluster)
    store = _store()
    _known(store, cluster)
    queue = api.queue_of(store, cluster)
    if not health.consumed(store, queue):
        if force:
            for line in health.force_delete(store, cluster, queue).lines():
                click.echo(line)
            return
        if wait:
            raise Failure(f"{health.no_consumer_message(queue)}: cluster {cluster} cannot be deleted now "
                          "(delete --force removes its record)")
    enqueued = api.enqueue_delete(store, cluster)
    click.echo(f"cluster {cluster}: delete enqueued on queue {enqueued.queue} (task {enqueued.task_id})")
    if not health.consumed(store, queue):
        click.echo(f"cluster {cluster}: {health.no_consumer_message(queue)}: the delete waits for one "
                   "(delete --force removes the record now)", err=True)
    if wait:
        deadline, polled = time.monotonic() + timeout, False
        while time.monotonic() < deadline:
            if store.get(cluster) is None:
                if not polled:  # one poll request per wait; beat's polls do the rest
                    api.enqueue_poll(enqueued.queue)
                    polled = True
                time.sleep(1.0)
                rows = api.status_rows(store, cluster)
                if not rows or not any(rows[0].get(k) for k in ("idle", "running", "held")):
                    click.echo(f"cluster {cluster}: deleted")
                    return
            else:
                time.sleep(0.3)
        raise Failure(f"timed out after {timeout:.0f}s waiting for cluster {cluster} to be deleted")


@main.command()
@click.argument("cluster", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(cluster, as_json):
    """Desired and actual workers of every cluster (or one), from the poller's summaries."""
    from tasks import api
    if cluster:
        validation.validate_cluster_name(cluster)
    store = _store()
    if cluster:
        _known(store, cluster)
    rows = api.status_rows(store, cluster)
    if as_json:
        click.echo(json.dumps({"clusters": rows}, indent=2))
        return
    click.echo(format_status(rows))


def format_status(rows: list[dict]) -> str:
    header = ["CLUSTER", "DESIRED", "IDLE", "RUNNING", "HELD", "COMPLETED", "REMOVED", "POLLED", "NOTE"]
    table = [header]
    for r in rows:
        polled = "never" if r["age"] is None else f"{r['age']:.0f}s ago" + (" (stale)" if r["stale"] else "")
        notes = []
        if r.get("error"):
            notes.append(f"error: {r['error']}")
        if r.get("note"):
            notes.append(r["note"])
        if r.get("poll_error"):
            notes.append(f"poll failing: {r['poll_error']}")
        elif r.get("stale_reason"):
            notes.append(f"stale: {r['stale_reason']}")
        if r.get("unparsed"):
            notes.append(f"{r['unparsed']} unreadable job ads on schedd {r['schedd']} skipped (worker log)")
        kept = r.get("held_kept") or {}
        for reason, count in (r.get("held_reasons") or {}).items():
            notes.append(f"held x{count}{' by a user/admin, left alone' if reason in kept else ''}: {reason}")
        table.append([r["name"], "-" if r["desired"] is None else str(r["desired"]), str(r["idle"]),
                      str(r["running"]), str(r["held"]), str(r["completed"]), str(r["removed"]), polled,
                      "; ".join(notes)])
    if len(table) == 1:
        return "no clusters"
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


@main.command()
@click.argument("cluster")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs(cluster, as_json):
    """Each job of CLUSTER: state, time in that state, hold reason (why is my cluster not growing?)."""
    from tasks import api
    validation.validate_cluster_name(cluster)
    store = _store()
    _known(store, cluster)
    records = sorted(store.job_records(cluster).values(), key=lambda r: (r.get("index") or 0))
    now = time.time()
    for rec in records:
        rec["state"] = STATE_NAMES.get(rec.get("status"), str(rec.get("status")))
        if api.annotate_job(rec)["kept_hold"]:
            rec["state"] += " (user/admin hold, left alone)"
        rec["seconds_in_state"] = round(now - rec["since"], 1) if rec.get("since") else None
    note = api.crash_note(store.get(cluster), now)
    if as_json:
        click.echo(json.dumps({"cluster": cluster, "jobs": records, "note": note}, indent=2))
        return
    if not records:
        click.echo(f"cluster {cluster}: no jobs in the last poll" + (f" ({note})" if note else ""))
        return
    table = [["JOB", "NAME", "STATE", "FOR", "HOLD REASON"]]
    for rec in records:
        secs = rec["seconds_in_state"]
        table.append([rec["job_id"], rec.get("name") or "", rec["state"], "-" if secs is None else f"{secs:.0f}s",
                      rec.get("hold_reason") or ""])
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    click.echo("\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table))
    if note:
        click.echo(f"note: {note}")


@main.command()
@click.argument("cluster")
@click.argument("worker", required=False)
@click.option("--tail", "n", type=click.IntRange(0, 100000), default=20, show_default=True,
              help="Lines of output and error per worker.")
def logs(cluster, worker, n):
    """A worker's output and error (or every worker's of CLUSTER), from LOG_DIR on this submit node."""
    from tasks import worker_logs
    from tasks.config import settings
    validation.validate_cluster_name(cluster)
    store = _store()
    try:
        lines = worker_logs.lines(settings().log_dir, cluster, worker, list(store.job_records(cluster).values()), n)
    except FileNotFoundError as e:
        raise Failure(str(e)) from None
    click.echo("\n".join(lines))


@main.command()
@click.option("--schedd", help="Schedd to poll (default: every schedd in SCHEDDS).")
@click.option("--timeout", type=float, default=60.0, show_default=True)
def poll(schedd, timeout):
    """Poll the queue now and print the summaries."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from tasks import api
    from tasks.config import settings
    store = _store()
    schedds = [validation.validate_schedd_name(schedd)] if schedd else list(settings().schedds)
    for name in schedds:
        try:
            result = api.enqueue_poll(name).get(timeout=timeout)
        except CeleryTimeout:
            raise Failure(f"no worker answered the poll on queue {name} within {timeout:.0f}s")
        click.echo(f"schedd {name}: {result['state']}, {result['jobs']} jobs in {result['clusters']} clusters"
                   + (f" ({result['error']})" if result.get("error") else ""))
    click.echo(format_status(api.status_rows(store)))


@main.command()
@click.option("--keep", is_flag=True, help="Leave everything running until Ctrl-C at the end.")
def demo(keep):
    """Start Redis, the local pool, a Celery worker, beat and Flower; scale a cluster; stop everything."""
    from harness.demo import run_demo
    sys.exit(run_demo(keep=keep))


@main.command()
@click.option("--kubeconfig", type=click.Path(dir_okay=False),
              help="Kubeconfig (default: in-cluster, else ~/.kube/config).")
@click.option("--context", help="Kubeconfig context.")
@click.option("--instance", help="dask-gateway instance to serve (DASK_GATEWAY_INSTANCE).")
@click.option("--api-url", help="Gateway API URL given to schedulers and workers (DASK_GATEWAY_API_URL).")
@click.option("--namespace", help="Namespace of the leader Lease (OPERATOR_NAMESPACE).")
@click.option("--no-leader-election", is_flag=True, help="Skip the Lease (only when exactly one operator runs).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def operator(kubeconfig, context, instance, api_url, namespace, no_leader_election, log_level):
    """Run the DaskCluster operator (Kubernetes): dask-gateway's DaskClusters get their scheduler
    pod in Kubernetes and their workers as HTCondor jobs through the Celery tasks.  Settings: see
    k8s_operator/README.md."""
    from k8s_operator import config
    from k8s_operator.main import StartError, run
    logging.getLogger().setLevel(log_level.upper())
    try:
        cfg = config.from_env(instance=instance, api_url=api_url, namespace=namespace)
    except ValueError as e:
        raise click.UsageError(str(e))
    try:
        code = run(cfg, kubeconfig=kubeconfig, context=context, leader_election=not no_leader_election)
    except StartError as e:
        raise Failure(str(e))
    sys.exit(code)


if __name__ == "__main__":
    main()
