"""The per-cluster configuration of the HTCondor backend: dask-gateway's `LocalClusterConfig` plus
what worker jobs need (extra submit commands, further `WorkerJobSpec` fields)."""
from __future__ import annotations

import shlex

from dask_gateway_server.backends.local import LocalClusterConfig
from dask_gateway_server.traitlets import Command
from dask_gateway_server.traitlets import MemoryLimit
from traitlets import CaselessStrEnum, Dict, Float, Integer, TraitError, Unicode, default, validate

from htdask.domain import limits
from htdask.domain.validation import ValidationError, validate_port_range
from htdask.gateway.pyenv import dask_command, job_environment


class ShellCommand(Command):
    """A command as a list of words; a string is split with shell rules (upstream wraps it whole)."""

    def validate(self, obj, value):
        if isinstance(value, str):
            value = shlex.split(value)
        return super().validate(obj, value)

    def set(self, obj, value):
        if isinstance(value, str):  # traitlets' List.set would wrap it whole
            value = shlex.split(value)
        super().set(obj, value)


def port_range(value: str, what: str) -> str:
    """A ``LOW:HIGH`` port range trait value (empty: any port); TraitError naming the trait otherwise."""
    if not value:
        return value
    try:
        return validate_port_range(value, what)
    except ValidationError as e:
        raise TraitError(str(e)) from None


class HTCondorClusterConfig(LocalClusterConfig):
    """Dask cluster configuration options when workers are HTCondor jobs."""

    scheduler_cmd = ShellCommand(
        dask_command("scheduler"),
        help="""
        Command to start a dask scheduler, as a list (distributed 2026: ``dask scheduler``).

        A string is split with shell rules. Defaults to the ``dask`` program next to the gateway's
        Python.
        """,
        config=True,
    )

    worker_cmd = ShellCommand(
        dask_command("worker"),
        help="""
        Command to start a dask worker, as a list (distributed 2026: ``dask worker``).

        The first word must be an absolute path or on the submitting Celery worker's PATH. A string
        is split with shell rules. Defaults to the ``dask`` program next to the gateway's Python.
        """,
        config=True,
    )

    environment = Dict(
        help="""
        Environment variables to set for both the worker and scheduler processes.

        Defaults to what the default commands need (PYTHONPATH when jobs run the venv's packages
        with a system interpreter, see ``htdask.gateway.pyenv``).
        """,
        config=True,
    )

    @default("environment")
    def _default_environment(self):
        return job_environment()

    worker_extra_submit = Dict(
        help="""
        Extra submit-description commands for every worker job of the cluster, e.g.
        ``{"requirements": 'OpSysMajorVer == 9', "+ProjectName": '"physics"'}``.

        Commands the controller sets itself (executable, arguments, environment, request_*, ...)
        are refused.
        """,
        config=True,
    )

    worker_job_options = Dict(
        help="""
        Further fields of the worker job (``htdask.domain.jobspec.WorkerJobSpec``), e.g.
        ``{"request_disk": "4GiB", "death_timeout": 120, "universe": "docker",
        "docker_image": "ghcr.io/dask/dask:latest", "extra_args": ["--lifetime", "4h"]}``.
        """,
        config=True,
    )

    # ---- images, networks, devices (htdask/domain/joboptions.py maps them; expose them in cluster_options) ----
    docker_network = CaselessStrEnum(
        ["bridge", "host"], "bridge",
        help="""Docker-universe workers: ``bridge`` (their own network; the worker advertises its execute
        host's address and the port HTCondor publishes) or ``host`` (the execute host's network).""",
        config=True,
    )

    apptainer_image = Unicode(
        "",
        help="""An Apptainer image the workers run in (container universe ``container_image``, or
        ``+SingularityImage`` with APPTAINER_AS_ATTRIBUTE); refused unless it starts with one of
        ALLOWED_IMAGE_PREFIXES (e.g. ``/cvmfs/unpacked.cern.ch/``). Empty: none.""",
        config=True,
    )

    worker_gpus = Integer(0, min=0, max=64, help="GPUs per worker job (``request_gpus``); 0: none.", config=True)

    worker_gpu_capability = Float(
        0.0, min=0.0, help="Least CUDA capability of those GPUs (``require_gpus``); 0: any.", config=True)

    worker_gpu_memory = MemoryLimit(
        0, help="Least memory of those GPUs (``require_gpus``, e.g. ``'16 G'``); 0: any.", config=True)

    # ---- idle and lifetime limits (htdask/gateway/limits.py; site defaults and maxima: IDLE_TIMEOUT(_MAX),
    # MAX_LIFETIME(_MAX)). `idle_timeout` is dask-gateway's own: the scheduler's gateway service reads its
    # idleness and stops the cluster; expose both in cluster_options to let users choose. ----------------
    max_lifetime = Float(
        0.0, min=0.0,
        help="""Seconds after its start at which the cluster is stopped (its workers' jobs removed) whatever it
        does; 0: never. Default MAX_LIFETIME; at most MAX_LIFETIME_MAX.""",
        config=True,
    )

    @default("idle_timeout")
    def _default_idle_timeout(self):
        from htdask.settings import load
        return load().idle_timeout

    @default("max_lifetime")
    def _default_max_lifetime(self):
        from htdask.settings import load
        return load().max_lifetime

    @validate("idle_timeout", "max_lifetime")
    def _within_site_maximum(self, proposal):
        """A limit over the site's maximum (or none, with one) is refused: one line, the cluster not started."""
        from htdask.settings import load
        kind = proposal["trait"].name
        try:
            return limits.check(kind, float(proposal["value"]), load().limit_maxima[kind])
        except ValidationError as e:
            raise TraitError(str(e)) from None
