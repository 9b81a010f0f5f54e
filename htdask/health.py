"""`htdask worker-health`: does this Celery worker still answer? The liveness check of compose and k8s.

A worker whose broker connection died in a bad moment can stay up without consuming anything (kombu's
wedge after a Redis restart or failover: the consumer stops after an error in restore_unacked); a stopped
or hung process does the same. Celery's own answer is the remote-control ping (`celery inspect ping -d
NODE`): it goes through the broker to the worker's consumer loop, the loop that also takes tasks, and
back. No answer within --timeout (or no broker) is exit 1, one line; an answer is exit 0. The container
runtime restarts a worker whose check keeps failing (k8s: `livenessProbe`; compose: the `healthcheck`
kills the worker by its pid file, and `restart: unless-stopped` starts it again).

Which worker: `--node NAME`, or by default every worker on this host that announced consuming the schedd's
queue (`SCHEDD_NAME`) in its queue heartbeat (tasks.heartbeat, the last `heartbeat.MAX_AGE` s) — whatever
its node name: `celery@HOST` as the quick start starts it, `worker@HOST` as compose and deploy/k8s do.
All of them must answer. When none announced it (a worker stopped or stuck for longer than that), the
check pings the two usual names, `celery@HOST` and `worker@HOST`, and passes if one answers.
"""
from __future__ import annotations

import signal
import socket
import sys
import time

import click

from htdask.base import Command, examples


def host() -> str:
    """This host's name as Celery's `%h` (and its default node name `celery@%h`) spells it."""
    return socket.gethostname()


def default_nodes() -> list[str]:
    """Celery's own node name and the one compose and deploy/k8s give the worker (`-n worker@%h`)."""
    return [f"celery@{host()}", f"worker@{host()}"]


def local_consumers(queue: str) -> list[str]:
    """Node names on this host whose heartbeat says they consume `queue` (tasks.heartbeat)."""
    from tasks import heartbeat
    from htdask.base import store
    nodes = store().consumers(queue, heartbeat.MAX_AGE)
    return sorted(n for n in nodes if n.rpartition("@")[2] == host())


def ping(nodes: list[str], timeout: float, enough: int) -> tuple[float, set[str]]:
    """(seconds taken, the nodes of `nodes` that answered a ping): waits for `enough` answers, at most
    `timeout` seconds."""
    from tasks.app import app
    start = time.monotonic()
    replies = app.control.ping(destination=list(nodes), timeout=timeout, limit=enough)
    answered = {name for reply in replies or [] for name in reply} & set(nodes)
    return time.monotonic() - start, answered


@click.command("worker-health", cls=Command, epilog=examples(
    "htdask worker-health                       # the workers on this host consuming SCHEDD_NAME's queue",
    "htdask worker-health --node worker@submit1 --timeout 5"))
@click.option("--node", default=None, help="The worker's node name (default: every worker on this host that "
              "consumes the schedd's queue; if none says so, celery@<host> or worker@<host>).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds to wait for the answer.")
def worker_health(node, timeout):
    """Exit 0 when the Celery worker answers a ping through the broker within --timeout, else 1."""
    what = f"worker {node}" if node else "the workers on this host"

    def _expired(*_):  # a broker that never answers must not hang the check past its deadline
        click.echo(f"error: {what}: no answer within {timeout:.0f} s (broker unreachable?)", err=True)
        sys.stdout.flush()
        sys.exit(1)

    signal.signal(signal.SIGALRM, _expired)
    signal.alarm(int(timeout) + 5)
    try:
        queue = None
        if node:
            nodes, need_all = [node], True
        else:
            from tasks.config import settings
            queue = settings().schedd_name
            nodes = local_consumers(queue)
            need_all = bool(nodes)
            nodes = nodes or default_nodes()
            what = f"worker {' '.join(nodes)}" if need_all else f"worker {' or '.join(nodes)}"
        took, answered = ping(nodes, timeout, len(nodes) if need_all else 1)
    except Exception as e:  # broker or Redis away: unhealthy, one line
        signal.alarm(0)
        click.echo(f"error: {what}: cannot reach the broker: {e}", err=True)
        sys.exit(1)
    signal.alarm(0)
    silent = [n for n in nodes if n not in answered]
    if (need_all and silent) or not answered:
        names = " ".join(silent) if need_all else " or ".join(nodes)
        where = "" if node or need_all else f" (no worker on this host announced consuming queue {queue})"
        click.echo(f"error: worker {names} did not answer a ping within {timeout:g} s{where}", err=True)
        sys.exit(1)
    click.echo(f"worker {' '.join(sorted(answered))} answered in {took * 1000:.0f} ms")
