"""`htdask worker-health`: does this Celery worker still answer? The liveness check of compose and k8s.

A worker whose broker connection died in a bad moment can stay up without consuming anything (kombu's
wedge after a Redis restart or failover: the consumer stops after an error in restore_unacked); a stopped
or hung process does the same. Celery's own answer is the remote-control ping (`celery inspect ping -d
NODE`): it goes through the broker to the worker's consumer loop, the loop that also takes tasks, and
back. No answer within --timeout (or no broker) is exit 1, one line; an answer is exit 0. The container
runtime restarts a worker whose check keeps failing (k8s: `livenessProbe`; compose: the `healthcheck`
kills the worker by its pid file, and `restart: unless-stopped` starts it again).
"""
from __future__ import annotations

import signal
import socket
import sys
import time

import click

from htdask.base import Command, examples


def default_node() -> str:
    """The node name compose and the k8s manifests give the worker: `-n worker@%h`."""
    return f"worker@{socket.gethostname()}"


def ping(node: str, timeout: float) -> float | None:
    """Seconds the worker `node` took to answer a ping, or None when it did not within `timeout`."""
    from tasks.app import app
    start = time.monotonic()
    replies = app.control.ping(destination=[node], timeout=timeout)
    if any(node in reply for reply in replies or []):
        return time.monotonic() - start
    return None


@click.command("worker-health", cls=Command, epilog=examples(
    "htdask worker-health                       # the worker started with -n worker@%h on this host",
    "htdask worker-health --node worker@submit1 --timeout 5"))
@click.option("--node", default=None, help="The worker's node name (default: worker@<this host name>).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds to wait for the answer.")
def worker_health(node, timeout):
    """Exit 0 when the Celery worker answers a ping through the broker within --timeout, else 1."""
    node = node or default_node()

    def _expired(*_):  # a broker that never answers must not hang the check past its deadline
        click.echo(f"error: worker {node}: no answer within {timeout:.0f} s (broker unreachable?)", err=True)
        sys.stdout.flush()
        sys.exit(1)

    signal.signal(signal.SIGALRM, _expired)
    signal.alarm(int(timeout) + 5)
    try:
        took = ping(node, timeout)
    except Exception as e:  # broker or Redis away: unhealthy, one line
        signal.alarm(0)
        click.echo(f"error: worker {node}: cannot reach the broker: {e}", err=True)
        sys.exit(1)
    signal.alarm(0)
    if took is None:
        click.echo(f"error: worker {node} did not answer a ping within {timeout:g} s", err=True)
        sys.exit(1)
    click.echo(f"worker {node} answered in {took * 1000:.0f} ms")
