"""The `htdask` command: the click group and the commands that start long-running things.

    htdask scale CLUSTER N [--owner USER | --email ADDRESS] [--schedd NAME] [--wait] [--json]
    htdask delete CLUSTER [--wait] [--force] [--json]
    htdask status [CLUSTER] [--json] [--watch [--interval S]]
    htdask jobs CLUSTER [--json]
    htdask logs CLUSTER [WORKER] [--tail N] [--json]
    htdask poll [--schedd NAME] [--json]
    htdask demo [--keep]
    htdask exporter [--address 127.0.0.1] [--port 9808]
    htdask operator
    htdask worker-health [--node worker@HOST] [--timeout S]

Shell completion (click): `eval "$(_HTDASK_COMPLETE=bash_source htdask)"` in ~/.bashrc
(zsh: `zsh_source`, fish: `fish_source`).
"""
from __future__ import annotations

import logging
import sys

import click

from htdask import __version__, commands
from htdask.health import worker_health
from htdask.base import Failure, Group, examples
from htdask.settings import load


@click.group(cls=Group, epilog=examples(
    "htdask scale mycluster 4 --scheduler tcp://10.0.0.5:8786 --owner alice --wait",
    "htdask status --watch",
    "htdask jobs mycluster",
    "htdask delete mycluster --wait",
    'eval "$(_HTDASK_COMPLETE=bash_source htdask)"   # shell completion (bash)'))
@click.version_option(__version__, "-V", "--version", prog_name="htdask")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO on stderr.")
def main(verbose: bool):
    """Dask clusters whose workers are HTCondor jobs, scaled by Celery tasks."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Every setting validated before any command runs, the Redis URL parsed (one server or Sentinel):
    # a bad one is one line, exit 2 (Group.main).
    from htdask.state.connection import parse
    parse(load().redis_url)


for _command in (commands.scale, commands.delete, commands.status, commands.jobs, commands.logs, commands.poll,
                 worker_health):
    main.add_command(_command)


@main.command(epilog=examples("htdask demo", "htdask demo --keep   # as make demo KEEP=1"))
@click.option("--keep", is_flag=True, help="Leave everything running, print its URLs and passwords, until Ctrl-C.")
def demo(keep):
    """Start Redis, the local pool, a Celery worker, beat and Flower; scale a cluster; stop everything."""
    from htdask.demo.run import run_demo
    sys.exit(run_demo(keep=keep))


@main.command(epilog=examples("htdask exporter", "htdask exporter --address 0.0.0.0 --port 9808",
                              "curl -s http://127.0.0.1:9808/metrics | grep htdask_cluster_jobs"))
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=9808, show_default=True, help="Port to listen on.")
def exporter(address, port):
    """Serve Prometheus metrics (/metrics), a status page (/) and /healthz, read from Redis only."""
    try:
        from htdask.exporter.server import serve  # reads the settings: a bad one is named below
        serve(address, port, on_ready=lambda url: click.echo(f"exporter: serving {url} (metrics at {url}metrics)",
                                                             err=True))
    except ValueError as e:  # a bad setting, named
        raise click.UsageError(str(e))
    except OSError as e:
        raise Failure(f"cannot listen on {address}:{port}: {e.strerror or e}")


@main.command(epilog=examples("htdask operator --kubeconfig ~/.kube/config --instance dask-gateway",
                              "htdask operator --no-leader-election --log-level DEBUG"))
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
    htdask/k8s_operator/README.md."""
    from htdask.k8s_operator import config
    from htdask.k8s_operator.main import StartError, run
    from htdask.state.connection import check_eviction_or_exit
    check_eviction_or_exit("htdask operator")  # a Redis that may evict our keys: one line, exit 2
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
