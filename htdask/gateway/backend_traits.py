"""The configurable traits of `htdask.gateway.backend.HTCondorBackend` (set in the gateway's config file as
``c.HTCondorBackend.<name>``), apart from its hooks."""
from __future__ import annotations

import getpass

from dask_gateway_server.backends.local import LocalBackend
from dask_gateway_server.traitlets import Callable, Type
from traitlets import Bool, CaselessStrEnum, Float, List, Unicode, default, validate

from htdask.gateway.cluster_config import port_range
from htdask.settings import load


class HTCondorBackendTraits(LocalBackend):
    """What a site configures on the HTCondor backend; the hooks are in `HTCondorBackend`."""

    cluster_config_class = Type(
        "htdask.gateway.cluster_config.HTCondorClusterConfig",
        klass="dask_gateway_server.backends.base.ClusterConfig",
        help="The cluster config class to use",
        config=True,
    )

    # ---- timeouts: queue wait is not failure -----------------------------------------------------
    worker_start_timeout = Float(
        86400.0,
        help="""
        Last-resort bound (in seconds) from a worker's creation to its connection, queue wait included.

        dask-gateway fails a worker that has not connected within this time. Raised from upstream's
        60 s to one day because a worker job may wait in a busy pool's queue for hours: an idle job
        is never a failure here. Real start failures are caught much sooner by the job checks (held
        job, job ended, job running longer than ``worker_connect_timeout``).
        """,
        config=True,
    )

    worker_connect_timeout = Float(
        600.0,
        help="""
        Seconds a worker job may be *running* without its worker connecting to the scheduler.

        Past this, the start is reported as failed (wrong scheduler address, blocked ports, a
        hanging environment...) and the job is removed and replaced. Time spent idle in the queue
        does not count. 0 disables the check.
        """,
        config=True,
    )

    worker_status_period = Float(
        10.0,
        help="""
        Time (in seconds) between checks of pending workers against the poller's job records.

        Each check reads Redis only (one read per cluster), so it is cheap; the records are as
        fresh as the poller's POLL_INTERVAL.
        """,
        config=True,
    )

    cluster_start_timeout = Float(
        help="""
        Timeout (in seconds) before giving up on a starting dask cluster.

        Defaults to 60 s for a local scheduler and to one day for ``scheduler_mode = "job"``, whose
        job may wait in the queue (its start failures are caught by the job checks).
        """,
        config=True,
    )

    @default("cluster_start_timeout")
    def _default_cluster_start_timeout(self):
        return 86400.0 if self.scheduler_mode == "job" else 60.0

    # ---- scheduler -------------------------------------------------------------------------------
    scheduler_mode = CaselessStrEnum(
        ["local", "job"],
        default_value="local",
        help="""
        Where the Dask scheduler runs.

        - ``local``: a process on the gateway host, started as the local backend does (TLS and the
          gateway preload).
        - ``job``: an HTCondor job of its own (controller cluster ``<cluster>-scheduler``), submitted
          through the same Celery tasks; it gets the TLS files and the token by file transfer and
          listens on its execute host's address.
        """,
        config=True,
    )

    scheduler_host = Unicode(
        "127.0.0.1",
        help="""
        Interface the local scheduler listens on (``scheduler_mode = "local"``).

        ``127.0.0.1`` suits the local pool; on a real site use ``0.0.0.0`` (or the submit host's
        address) so that execute hosts can reach it.
        """,
        config=True,
    )

    scheduler_port_range = Unicode(
        "",
        help="""
        Port range ``LOW:HIGH`` the scheduler listens in (many sites open only a range between
        execute and submit hosts). Empty: any free port.
        """,
        config=True,
    )

    scheduler_contact_host = Unicode(
        "",
        help="""
        Host name or address workers use to reach the local scheduler, in place of the host of the
        address the scheduler reports (e.g. the submit host's public name when it listens on
        ``0.0.0.0`` or sits behind NAT). Empty: use the reported address as is. Not used with
        ``scheduler_mode = "job"`` (the scheduler job reports the address of its execute host).
        """,
        config=True,
    )

    worker_proxy_address = Unicode(
        "",
        help="""
        ``host:port`` of dask-gateway's proxy as the execute hosts reach it. When set, workers reach
        their scheduler through it, ``gateway://<this>/<cluster>`` (TLS, routed by SNI: one proxied port
        serves every cluster, as htcdaskgateway does); the proxy must listen there (GATEWAY_ADDRESS).
        Empty: workers connect to the scheduler's own address.
        """,
        config=True,
    )

    # ---- worker jobs -----------------------------------------------------------------------------
    worker_port_range = Unicode(
        "",
        help="Port range ``LOW:HIGH`` for the workers (``dask worker --worker-port``). Empty: any.",
        config=True,
    )

    nanny_port_range = Unicode(
        "",
        help="Port range ``LOW:HIGH`` for the nannies (``dask worker --nanny-port``). Empty: any.",
        config=True,
    )

    @validate("scheduler_port_range", "worker_port_range", "nanny_port_range")
    def _validate_ranges(self, proposal):
        return port_range(proposal.value, proposal.trait.name.replace("_", " "))

    worker_inherited_environment = List(
        [],
        help="""
        Names of environment variables of the gateway process to pass to worker jobs (HTCondor
        jobs do not inherit the submitter's environment). The cluster config's ``environment`` is
        always passed.
        """,
        config=True,
    )

    batch_window = Float(
        0.2,
        help="""
        Seconds the first worker start (or stop) of a burst waits for the others, so that a
        ``scale(n)`` becomes one request and one ``condor_submit``.
        """,
        config=True,
    )

    # ---- users -----------------------------------------------------------------------------------
    run_as_owner = Bool(
        False,
        help="""
        Run each gateway user's jobs (and local scheduler) as that user's Unix account.

        The gateway user name is mapped with ``workers.identity.resolve_owner`` (a Unix user name,
        or an e-mail looked up through USER_MAP_FILE / CI Connect), or with ``owner_for_user``.
        Needs the gateway to run as root. When False (as shipped), every job runs as the
        controller's service account whatever the gateway user is called.
        """,
        config=True,
    )

    owner_for_user = Callable(
        None,
        allow_none=True,
        help="""
        Optional ``f(username) -> unix_user`` used with ``run_as_owner`` instead of
        ``workers.identity.resolve_owner``.
        """,
        config=True,
    )

    job_user = Unicode(
        help="""
        Unix account the jobs run as when ``run_as_owner`` is False: the Celery worker's
        DEFAULT_OWNER. The staging directory is given to this account. Defaults to the setting
        DEFAULT_OWNER (htdask/settings/model.py), else the gateway's own user.
        """,
        config=True,
    )

    @default("job_user")
    def _default_job_user(self):
        return load().default_owner or getpass.getuser()

    # ---- controller ------------------------------------------------------------------------------
    redis_url = Unicode(
        help="""
        Redis of the controller (broker and state): redis://... or Sentinel's
        sentinel://h1:26379;sentinel://h2:26379/0 (with REDIS_SENTINEL_MASTER, REDIS_SENTINEL_PASSWORD).
        Defaults to the setting REDIS_URL (htdask/settings/model.py).
        """,
        config=True,
    )

    @default("redis_url")
    def _default_redis_url(self):
        return load().redis_url

    schedd = Unicode(
        help="""
        Schedd (Celery queue) new clusters' jobs go to. Defaults to the setting SCHEDD_NAME
        (``local``).
        """,
        config=True,
    )

    @default("schedd")
    def _default_schedd(self):
        return load().schedd_name

    task_timeout = Float(
        60.0,
        help="""
        Seconds to wait for a controller task the gateway needs the answer of: the removal of a
        stopping cluster's jobs, and the history of a job that ended before its worker connected.
        """,
        config=True,
    )

    history_grace = Float(
        10.0,
        help="""
        Seconds after a worker's request before a job the poller has not seen, and has no ended-job
        record of, is looked up in the schedd's history (a fallback: the poller records jobs that
        started and ended between two polls, and those are failed starts at the next check).
        """,
        config=True,
    )
