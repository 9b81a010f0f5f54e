"""A dask-gateway-server backend whose Dask workers are HTCondor jobs submitted by our Celery tasks.

`HTCondorBackend` is a `LocalBackend`, hence a `DBBackendBase`: dask-gateway-server keeps its state
machine, timeouts and database, and this module only implements the hooks.

- Scheduler: by default a process on the gateway host, exactly as the local backend starts it (TLS,
  `dask_gateway.scheduler_preload`), plus `gateway/scheduler_hooks.py`; or, with
  `scheduler_mode = "job"`, an HTCondor job of its own (`gateway/scheduler_job.py`).
- Workers: `do_start_worker` / `do_stop_worker` never start processes. They ask for a sync of the
  cluster, and the syncs of a burst become ONE `tasks.scale_cluster` request carrying the full list
  of worker names the gateway wants (named mode): the reconciler submits every missing name in one
  `condor_submit` (`queue DaskWorkerIndex,DaskWorkerName from (...)`, the worker's `--name` is the
  gateway's name) and removes jobs whose names are no longer wanted.
- `do_check_workers` reads the job records and ended-job records the poller keeps in Redis (one read
  per cluster, no schedd call) and applies the rules of `gateway.jobcheck`: queue wait is not
  failure; a held job, a job that ended, or a job running too long without its worker connecting is
  a failed start. A False answer is final per worker (stopped workers never flip back).
- Scale-down is dask-gateway's own: the scheduler retires the workers it chose (their data moves to
  the others) and they close; only then does the gateway stop them, and the name leaves the wanted set.
- Cluster stop: one `tasks.delete_cluster` (removes every job), then the scheduler is stopped.

Jobs read the cluster's TLS files (and the gateway API token) from a per-cluster staging directory
owned by the Unix account the jobs run as; it must be visible from the execute hosts.
"""
from __future__ import annotations

import asyncio
import getpass
import logging
import os
import pwd
import random
import shlex
import socket
import tempfile
import time
from pathlib import Path

from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.backends.local import LocalBackend, LocalClusterConfig
from dask_gateway_server.traitlets import Callable, Command, Type
from traitlets import Bool, CaselessStrEnum, Dict, Float, List, TraitError, Unicode, default, validate

from domain.joboptions import worker_job_options
from gateway import jobcheck
from gateway.eventlog import EventLogs
from gateway.namesync import NameSync
from gateway.pyenv import dask_command, job_environment, job_python, shared_copy
from settings import load
from state.managed import set_manager

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
HOOKS = str(HERE / "scheduler_hooks.py")
SCHEDULER_JOB = str(HERE / "scheduler_job.py")
SCHEDULER_SUFFIX = "-scheduler"
#: most unseen workers of one cluster looked up in the history per check
HISTORY_BATCH = 20
#: a poll older than this (seconds) while workers wait is reported (is beat running?)
STALE_POLL = 300.0


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


def _port_range(value: str, what: str) -> str:
    if not value:
        return value
    from domain.validation import ValidationError, validate_port_range
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
        with a system interpreter, see ``gateway.pyenv``).
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
        Further fields of the worker job (``domain.jobspec.WorkerJobSpec``), e.g.
        ``{"request_disk": "4GiB", "death_timeout": 120, "universe": "docker",
        "docker_image": "ghcr.io/dask/dask:latest", "extra_args": ["--lifetime", "4h"]}``.
        """,
        config=True,
    )


class HTCondorBackend(LocalBackend):
    """Dask clusters whose workers (and optionally the scheduler) are HTCondor jobs.

    Worker jobs are submitted and removed by the controller's Celery tasks (`tasks.api`); the
    gateway reads their state from what the queue poller keeps in Redis.
    """

    cluster_config_class = Type(
        "gateway.backend.HTCondorClusterConfig",
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
          through the same Celery tasks; it needs the staging directory on a shared filesystem.
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
        return _port_range(proposal.value, proposal.trait.name.replace("_", " "))

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
        DEFAULT_OWNER (settings/model.py), else the gateway's own user.
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
        Defaults to the setting REDIS_URL (settings/model.py).
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

    # =============================================================================================
    # setup
    async def do_setup(self):
        pkg = logging.getLogger("gateway")
        if not pkg.handlers and pkg.parent is logging.getLogger():
            pkg.parent = self.log  # our module loggers write through the gateway's handlers
            pkg.setLevel(self.log.level or logging.INFO)
        from state import Store, connect
        from tasks.app import client_app
        self.settings = load()  # the traitlets above override its redis_url, schedd, job_user
        self.celery = client_app(self.redis_url)  # an app of its own: tasks.app's is left as configured
        self.store = Store(connect(self.redis_url), self.settings)
        self._syncs: dict[str, NameSync] = {}
        self._starting: set[str] = set()
        self._last_task: dict[str, str] = {}
        self._managed: set[str] = set()  # clusters whose manager record this process wrote
        self._history_asked: dict[str, float] = {}
        self._ended: dict[str, jobcheck.Verdict] = {}  # worker name -> the final False verdict
        self._connected_at: dict[str, float] = {}  # worker name -> a time by which it had connected
        self._stale_warned: dict[str, float] = {}
        self._event_logs = EventLogs()  # the clusters' job event logs, followed between checks
        self._check_accounts()
        await self._resync_after_restart()

    def _check_accounts(self):
        me = getpass.getuser()
        if os.geteuid() != 0 and (self.run_as_owner or self.job_user != me):
            log.warning("gateway runs as %s without root: it cannot give staging files to %s; jobs must "
                        "run as %s", me, "each owner" if self.run_as_owner else self.job_user, me)

    async def _resync_after_restart(self):
        """After a restart, send wanted names that differ from the recorded ones (lost requests)."""
        for cluster in list(self.db.active_clusters()):
            if cluster.status != JobStatus.RUNNING:
                continue
            record = await asyncio.to_thread(self.store.get, cluster.name)
            names = set(self.wanted_names(cluster))
            recorded = (record.names or set()) if record else set()
            if names != recorded:
                log.info("cluster %s: wanted workers differ from the recorded ones after a restart; resyncing",
                         cluster.name)
                asyncio.ensure_future(self._sync_quietly(cluster))
            else:
                log.info("cluster %s: %d wanted workers still recorded; nothing to resync", cluster.name,
                         len(names))

    async def _sync_quietly(self, cluster):
        try:
            await self.sync(cluster)
        except Exception as exc:
            log.warning("cluster %s: resync failed: %s", cluster.name, exc)

    # =============================================================================================
    # who, where
    def job_account(self, cluster) -> str | None:
        """The Unix account the cluster's jobs run as (None: the Celery worker's own user)."""
        if self.run_as_owner:
            return (cluster.state or {}).get("owner")
        return self.job_user

    def resolve_owner(self, username: str) -> str:
        if self.owner_for_user is not None:
            return self.owner_for_user(username)
        from workers.identity import resolve_owner
        return resolve_owner(username, self.store)

    def make_preexec_fn(self, cluster):
        """Become the owner (with ``run_as_owner``) and enter the staging directory."""
        workdir = cluster.state["workdir"]
        if not self.run_as_owner:
            def preexec():  # pragma: nocover
                os.chdir(workdir)
            return preexec
        pw = pwd.getpwnam(cluster.state["owner"])
        uid, gid = pw.pw_uid, pw.pw_gid
        groups = os.getgrouplist(pw.pw_name, gid)

        def preexec():  # pragma: nocover
            os.setgid(gid)
            os.setgroups(groups)
            os.setuid(uid)
            os.chdir(workdir)
        return preexec

    def get_env(self, cluster):
        env = super().get_env(cluster)
        own = (cluster.config.environment or {}).get("PYTHONPATH")
        if own and env.get("PYTHONPATH") != own:  # the inherited one would hide the config's
            env["PYTHONPATH"] = os.pathsep.join(p for p in (own, env.get("PYTHONPATH")) if p)
        env["USER"] = (cluster.state or {}).get("owner") if self.run_as_owner else getpass.getuser()
        return env

    def setup_working_directory(self, cluster):
        """The cluster's staging directory: TLS files, the API token and job logs, owned by the jobs' user.

        Layout as the local backend's (``.certs/dask.crt``, ``.certs/dask.pem``, ``logs/``) plus
        ``api-token``; directories 0700, files 0600. As root the gateway gives them to that user;
        otherwise the jobs must run as the gateway's own user.
        """
        if self.clusters_directory:
            workdir = os.path.join(self.clusters_directory, cluster.name)
            os.makedirs(workdir, 0o700, exist_ok=True)
        else:
            workdir = tempfile.mkdtemp(prefix="dask-gateway-", suffix="-" + cluster.name[:12])
        certs, logs = self.get_certs_directory(workdir), self.get_logs_directory(workdir)
        for path in (certs, logs):
            os.makedirs(path, 0o700, exist_ok=True)
        os.chmod(workdir, 0o700)
        cert_path, key_path = self._get_tls_paths(workdir)
        files = [(cert_path, cluster.tls_cert), (key_path, cluster.tls_key),
                 (os.path.join(workdir, "api-token"), cluster.token.encode())]
        for path, data in files:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        account = self.job_account(cluster)
        if account and os.geteuid() == 0:
            pw = pwd.getpwnam(account)
            for path in [workdir, certs, logs] + [p for p, _ in files]:
                os.chown(path, pw.pw_uid, pw.pw_gid)
        log.info("cluster %s: staging directory %s (owner %s)", cluster.name, workdir, account or getpass.getuser())
        return workdir

    def job_environment(self, cfg) -> dict[str, str]:
        """Environment of a cluster's jobs (workers and scheduler): the inherited variables, then the cluster's."""
        env = {k: os.environ[k] for k in self.worker_inherited_environment if k in os.environ}
        env.update(cfg.environment or {})
        return env

    def job_credentials(self, paths: dict[str, str]) -> dict:
        """Job options that point a job at the gateway API and at the cluster's staged credentials."""
        return {"api_url": self.api_url, "api_token": paths["token"], "tls_cert": paths["cert"],
                "tls_key": paths["key"], "log_dir": paths["logs"]}

    def staging(self, cluster) -> dict[str, str]:
        workdir = cluster.state["workdir"]
        cert, key = self._get_tls_paths(workdir)
        return {"workdir": workdir, "cert": cert, "key": key, "token": os.path.join(workdir, "api-token"),
                "logs": self.get_logs_directory(workdir)}

    def _pick_port(self) -> int:
        if not self.scheduler_port_range:
            return 0
        low, _, high = self.scheduler_port_range.partition(":")
        ports = list(range(int(low), int(high or low) + 1))
        random.shuffle(ports)
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((self.scheduler_host, port))
                except OSError:
                    continue
                return port
        raise RuntimeError(f"no free scheduler port in {self.scheduler_port_range}")

    def scheduler_args(self, cluster, host: str, port: str) -> list[str]:
        return [
            "--protocol", "tls", "--port", port, "--host", host,
            "--dashboard-address", f"{host}:0",
            "--preload", "dask_gateway.scheduler_preload", "--preload", shared_copy(HOOKS),
            "--dg-api-address", f"{host}:0",
            "--dg-heartbeat-period", str(self.cluster_heartbeat_period),
            "--dg-adaptive-period", str(cluster.config.adaptive_period),
            "--dg-idle-timeout", str(cluster.config.idle_timeout),
        ]

    def get_scheduler_command(self, cluster):
        return list(cluster.config.scheduler_cmd) + self.scheduler_args(
            cluster, self.scheduler_host, str(self._pick_port()))

    def worker_scheduler_address(self, cluster) -> str:
        """The address worker jobs connect to: the reported one, with `scheduler_contact_host` if set."""
        address = cluster.scheduler_address
        if self.scheduler_contact_host and self.scheduler_mode == "local":  # a job's host is not known
            scheme, _, rest = address.partition("://")
            port = rest.rsplit(":", 1)[-1]
            host = self.scheduler_contact_host
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            address = f"{scheme}://{host}:{port}"
        return address

    # =============================================================================================
    # job options and names
    def job_options(self, cluster) -> dict:
        """The `WorkerJobSpec` fields of the cluster's worker jobs (validated by tasks.api)."""
        cfg = cluster.config
        return worker_job_options(
            cfg, scheduler_address=self.worker_scheduler_address(cluster), api_url=self.api_url,
            environment=self.job_environment(cfg), credentials=self.job_credentials(self.staging(cluster)),
            worker_command=cfg.worker_cmd, worker_port_range=self.worker_port_range,
            nanny_port_range=self.nanny_port_range)

    def wanted_names(self, cluster) -> list[str]:
        """Names of the workers the gateway wants alive: submitted, running, or being started now."""
        return sorted(
            w.name for w in cluster.workers.values()
            if w.target <= JobStatus.RUNNING and w.status < JobStatus.STOPPED
            and (w.status >= JobStatus.SUBMITTED or w.name in self._starting))

    def owner_arg(self, cluster) -> str | None:
        return (cluster.state or {}).get("owner") if self.run_as_owner else None

    def _sync_for(self, cluster) -> NameSync:
        sync = self._syncs.get(cluster.name)
        if sync is None:
            async def send(cluster=cluster):
                await self._send_names(cluster)
            sync = self._syncs[cluster.name] = NameSync(cluster.name, send, self.batch_window)
        return sync

    async def sync(self, cluster) -> None:
        await self._sync_for(cluster).sync()

    async def _send_names(self, cluster) -> None:
        if cluster.target > JobStatus.RUNNING:
            return  # stopping: the delete request removes every job
        names = self.wanted_names(cluster)
        options = self.job_options(cluster)
        from tasks.api import enqueue_scale
        enqueued = await asyncio.to_thread(
            enqueue_scale, self.store, cluster.name, len(names), owner=self.owner_arg(cluster),
            options=options, schedd=self.schedd, names=names, celery=self.celery)
        if cluster.name not in self._managed:  # the CLI refuses to scale it; status shows the user
            await asyncio.to_thread(set_manager, self.store, cluster.name, "gateway", cluster.username)
            self._managed.add(cluster.name)
        self._last_task[cluster.name] = enqueued.task_id
        log.info("cluster %s: %d workers wanted, request %s (task %s)", cluster.name, len(names), enqueued.seq,
                 enqueued.task_id)

    # =============================================================================================
    # clusters
    async def do_start_cluster(self, cluster):
        state = {}
        if self.run_as_owner:
            state["owner"] = await asyncio.to_thread(self.resolve_owner, cluster.username)
            log.info("cluster %s: gateway user %s runs as Unix user %s", cluster.name, cluster.username,
                     state["owner"])
            yield dict(state)  # checkpointed: setup_working_directory reads the owner
        workdir = self.setup_working_directory(cluster)
        state["workdir"] = workdir
        yield dict(state)
        if self.scheduler_mode == "job":
            state.update(await self._submit_scheduler_job(cluster))
            yield dict(state)
            return
        pid = await self.start_process(cluster, self.get_scheduler_command(cluster),
                                       self.get_scheduler_env(cluster), "scheduler")
        state["pid"] = pid
        log.info("cluster %s: scheduler process %d started", cluster.name, pid)
        yield dict(state)

    async def _submit_scheduler_job(self, cluster) -> dict:
        name = cluster.name + SCHEDULER_SUFFIX
        paths = self.staging(cluster)
        cfg = cluster.config
        extra = []
        if self.scheduler_port_range:
            extra += ["--dg-port-range", self.scheduler_port_range]
        extra += ["--dg-exec", *cfg.scheduler_cmd, *self.scheduler_args(cluster, "0.0.0.0", "{port}")]
        env = {**self.job_environment(cfg), "DG_GATEWAY_CLUSTER": cluster.name}
        options = {
            "scheduler_address": "tcp://127.0.0.1:1",  # unused: the wrapper drops the worker arguments
            "worker_command": [job_python()[0], shared_copy(SCHEDULER_JOB)],
            "extra_args": extra,
            "nthreads": int(cfg.scheduler_cores),
            "memory_limit": int(cfg.scheduler_memory),
            "environment": env,
            **self.job_credentials(paths),
            "death_timeout": None,
        }
        if cfg.get("worker_extra_submit"):
            options["extra_submit"] = dict(cfg.worker_extra_submit)
        from tasks.api import enqueue_scale
        enqueued = await asyncio.to_thread(enqueue_scale, self.store, name, 1, owner=self.owner_arg(cluster),
                                           options=options, schedd=self.schedd, names=["scheduler"],
                                           celery=self.celery)
        await asyncio.to_thread(set_manager, self.store, name, "gateway", cluster.username)
        log.info("cluster %s: scheduler job requested as %s (task %s)", cluster.name, name, enqueued.task_id)
        return {"scheduler_job": name, "enqueued_at": time.time()}

    async def do_stop_cluster(self, cluster):
        from tasks.api import enqueue_delete
        sync = self._syncs.pop(cluster.name, None)
        if sync is not None:
            await sync.drain()
        await self._wait_task(self._last_task.pop(cluster.name, None), cluster.name, "last scale request")
        targets = [cluster.name]
        if (cluster.state or {}).get("scheduler_job"):
            targets.append(cluster.state["scheduler_job"])
        for name in targets:
            enqueued = await asyncio.to_thread(enqueue_delete, self.store, name, self.celery)
            log.info("cluster %s: delete of %s requested (task %s)", cluster.name, name, enqueued.task_id)
            await self._wait_task(enqueued.task_id, cluster.name, f"delete of {name}")
        for w in cluster.workers.values():
            for memo in (self._history_asked, self._ended, self._connected_at):
                memo.pop(w.name, None)
        self._event_logs.forget(cluster.name)
        await super().do_stop_cluster(cluster)  # stops the local scheduler, removes the staging directory
        log.info("cluster %s: stopped", cluster.name)

    async def _wait_task(self, task_id: str | None, cluster: str, what: str) -> None:
        if not task_id:
            return
        result = self.celery.AsyncResult(task_id)
        try:
            await asyncio.to_thread(result.get, timeout=self.task_timeout, propagate=False)
        except Exception as exc:  # timeout: go on; the controller finishes the job later
            log.warning("cluster %s: %s not confirmed after %.0fs (%s)", cluster, what, self.task_timeout,
                        type(exc).__name__)

    async def do_check_clusters(self, clusters):
        out = []
        for cluster in clusters:
            name = (cluster.state or {}).get("scheduler_job")
            if not name:
                out.append(self._check_status(cluster))
                continue
            verdicts = await self._classify(name, {"scheduler": (cluster.state.get("seen_job"),
                                                                  cluster.state.get("enqueued_at", 0))})
            v = verdicts["scheduler"]
            if v.job_id and v.ok and v.job_id != cluster.state.get("seen_job"):
                self.db.update_cluster(cluster, state={**cluster.state, "seen_job": v.job_id})
            if not v.ok:
                log.warning("cluster %s: scheduler job failed to start: %s", cluster.name, v.reason)
            out.append(v.ok)
        return out

    # =============================================================================================
    # workers
    async def do_start_worker(self, worker):
        cluster = worker.cluster
        self._starting.add(worker.name)
        try:
            await self.sync(cluster)
        finally:
            self._starting.discard(worker.name)
        yield {"enqueued_at": time.time()}

    async def do_stop_worker(self, worker):
        cluster = worker.cluster
        self._history_asked.pop(worker.name, None)
        if cluster.target > JobStatus.RUNNING:
            return  # the cluster is stopping: its delete request removes every job at once
        await self.sync(cluster)

    async def do_check_workers(self, workers):
        """One answer per worker: False once its job failed to start or, for a worker that connected,
        once its job is gone; True while the job is on its way or alive.

        A False answer is final (kept per worker name: the gateway never reuses one), so repeated
        checks of a stopped worker never flip back (issue 19).
        """
        now = time.time()
        by_cluster: dict[str, list] = {}
        log_paths: dict[str, str | None] = {}
        result: dict[int, bool] = {}
        for w in workers:
            if w.name in self._ended:
                result[id(w)] = False
                continue
            if w.status >= JobStatus.RUNNING:  # connected by now (a bound, kept across checks)
                self._connected_at.setdefault(w.name, now)
            by_cluster.setdefault(w.cluster.name, []).append(w)
            log_paths.setdefault(w.cluster.name, self._event_log_path(w.cluster))
        for name, ws in by_cluster.items():
            ask = {w.name: ((w.state or {}).get("job_id"), (w.state or {}).get("enqueued_at", 0),
                            self._connected_at.get(w.name)) for w in ws}
            try:
                verdicts = await self._classify(name, ask, log_paths.get(name))
            except Exception as exc:  # Redis unreachable: no news is not failure
                log.warning("cluster %s: cannot read job records (%s); workers stay pending", name, exc)
                verdicts = {}
            for w in ws:
                v = verdicts.get(w.name)
                if v is None:
                    result[id(w)] = True
                    continue
                if v.ok and v.job_id and v.job_id != (w.state or {}).get("job_id"):
                    self.db.update_worker(w, state={**(w.state or {}), "job_id": v.job_id})
                    log.info("cluster %s: worker %s is job %s (%s)", name, w.name, v.job_id, v.state)
                if not v.ok:
                    self._ended[w.name] = v
                    if w.name in self._connected_at:
                        log.info("cluster %s: worker %s is gone: %s", name, w.name, v.reason)
                    else:
                        log.warning("cluster %s: worker %s failed to start: %s", name, w.name, v.reason)
                result[id(w)] = v.ok
        return [result[id(w)] for w in workers]

    def _event_log_path(self, cluster) -> str | None:
        """The cluster's job event log (workers/jobspec.py: ``$(LogDir)/<cluster>.log``), None before staging."""
        workdir = (cluster.state or {}).get("workdir")
        return os.path.join(self.get_logs_directory(workdir), f"{cluster.name}.log") if workdir else None

    async def _classify(self, cluster_name: str, ask: dict[str, tuple[str | None, float, float | None]],
                        log_path: str | None = None):
        """Verdicts for workers {name: (seen job id, enqueued_at, connected since)} of one controller cluster;
        the job event log at `log_path` (gateway/eventlog.py) adds what happened since the last poll."""
        records, summary, record, poll, ended = await asyncio.to_thread(self._read_jobs, cluster_name)
        log_ended, log_held = await asyncio.to_thread(self._event_logs.read, cluster_name, log_path)
        known = {e.get("job_id") for e in ended}  # the controller's record (from the history) comes first
        ended = list(ended) + [e for e in log_ended if e.get("job_id") not in known]
        by_name = jobcheck.index_by_name(records)
        ended_by_name = jobcheck.index_by_name({e.get("job_id"): e for e in ended})
        held_by_name = jobcheck.index_by_name({h.get("job_id"): h for h in log_held})
        now = time.time()
        polled_at = summary.get("polled_at")
        ok_at = float(poll.get("ok_at") or 0)
        if now - ok_at > STALE_POLL and now - self._stale_warned.get(cluster_name, 0) > STALE_POLL:
            self._stale_warned[cluster_name] = now
            log.warning("cluster %s: no successful poll of schedd %s for %s (%s); pending workers stay pending "
                        "until one (is `celery beat` running?)", cluster_name, self.schedd,
                        f"{now - ok_at:.0f}s" if ok_at else "ever", poll.get("error") or "no error recorded")
        verdicts = {}
        for name, (seen, enqueued_at, connected_since) in ask.items():
            verdicts[name] = jobcheck.classify(
                records=by_name.get(name, []), seen_job=seen, enqueued_at=enqueued_at, polled_at=polled_at,
                now=now, connect_timeout=self.worker_connect_timeout,
                submit_error=record.error if record else None,
                submit_error_at=record.error_at if record else None, kept_hold_codes=self._kept_hold_codes(),
                ended=ended_by_name.get(name, []), connected_since=connected_since,
                held=held_by_name.get(name, []))
        await self._add_history(cluster_name, ask, verdicts, now)
        return verdicts

    def _kept_hold_codes(self) -> tuple[int, ...]:
        return self.settings.hold_keep_codes

    def _read_jobs(self, cluster_name: str):
        return (self.store.job_records(cluster_name), self.store.summary(cluster_name),
                self.store.get(cluster_name), self.store.poll_status(self.schedd),
                self.store.ended_records(cluster_name))

    async def _add_history(self, cluster_name, ask, verdicts, now) -> None:
        """Look up ended jobs in the history: exit codes of ended ones, and unseen ones that came and went."""
        names = [n for n, v in verdicts.items() if v.need_history and v.state == "ended"]
        unseen = sorted((ask[n][1], n) for n, v in verdicts.items() if v.need_history and v.state == "unseen"
                        and now - ask[n][1] >= self.history_grace and now - self._history_asked.get(n, 0) >= 30)
        for _, name in unseen[:HISTORY_BATCH]:  # oldest requests first; the rest on later checks
            self._history_asked[name] = now
            names.append(name)
        if not names:
            return
        ads = await self._ended_jobs(cluster_name, names)
        for name in names:
            v, ad = verdicts[name], ads.get(name)
            if v.state == "ended":
                if ad is not None:
                    v.reason = jobcheck.describe_ended(ad)
            elif ad is not None and (ad.get("EnteredCurrentStatus") or now) >= ask[name][1] - 5:
                verdicts[name] = jobcheck.Verdict(False, "ended", f"{ad.get('ClusterId')}.{ad.get('ProcId')}",
                                                  jobcheck.describe_ended(ad))

    async def _ended_jobs(self, cluster_name: str, names: list[str]) -> dict[str, dict]:
        def ask():
            res = self.celery.send_task("tasks.ended_jobs", kwargs={"cluster": cluster_name, "names": names},
                                        queue=self.schedd)
            return res.get(timeout=self.task_timeout)
        try:
            return await asyncio.to_thread(ask) or {}
        except Exception as exc:
            log.warning("cluster %s: history of %d workers unavailable: %s", cluster_name, len(names), exc)
            return {}
