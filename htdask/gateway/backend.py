"""A dask-gateway-server backend whose Dask workers are HTCondor jobs submitted by our Celery tasks.

`HTCondorBackend` is a `LocalBackend`, hence a `DBBackendBase`: dask-gateway-server keeps its state
machine, timeouts and database, and this module only implements the hooks.

- Scheduler: by default a process on the gateway host, exactly as the local backend starts it (TLS,
  `dask_gateway.scheduler_preload`), plus `htdask/gateway/scheduler_hooks.py`; or, with
  `scheduler_mode = "job"`, an HTCondor job of its own (`htdask/gateway/scheduler_job.py`).
- Workers: `do_start_worker` / `do_stop_worker` never start processes. They ask for a sync of the
  cluster, and the syncs of a burst become ONE `tasks.scale_cluster` request carrying the full list
  of worker names the gateway wants (named mode): the reconciler submits every missing name in one
  `condor_submit` (`queue DaskWorkerIndex,DaskWorkerName from (...)`, the worker's `--name` is the
  gateway's name) and removes jobs whose names are no longer wanted.
- `do_check_workers` reads the job records and ended-job records the poller keeps in Redis (one read
  per cluster, no schedd call) and applies the rules of `htdask.gateway.jobcheck`: queue wait is not
  failure; a held job, a job that ended, or a job running too long without its worker connecting is
  a failed start. A False answer is final per worker (stopped workers never flip back).
- Scale-down is dask-gateway's own: the scheduler retires the workers it chose (their data moves to
  the others) and they close; only then does the gateway stop them, and the name leaves the wanted set.
- Cluster stop: one `tasks.delete_cluster` (removes every job), then the scheduler is stopped.

Jobs get the cluster's TLS files (and the gateway API token) by HTCondor's file transfer from a
per-cluster staging directory on the submit node, readable only by the Unix account the jobs run as
(`htdask/gateway/staging.py`, `htdask/domain/jobfiles.py`); the execute hosts need not see it.
"""
from __future__ import annotations

import asyncio
import getpass
import logging
import os
import pwd
import time

from dask_gateway_server.backends.db_base import JobStatus

from htdask.domain.joboptions import worker_job_options
from htdask.gateway import scheduler_launch, staging
from htdask.gateway.backend_traits import HTCondorBackendTraits
from htdask.gateway.cluster_config import HTCondorClusterConfig  # noqa: F401  (its historical import path)
from htdask.gateway.controller import Controller
from htdask.gateway.limits import GatewayLimits
from htdask.gateway.namesync import NameSync
from htdask.gateway.workerchecks import WorkerChecks
from htdask.settings import load

log = logging.getLogger(__name__)


class HTCondorBackend(HTCondorBackendTraits):
    """Dask clusters whose workers (and optionally the scheduler) are HTCondor jobs.

    Worker jobs are submitted and removed by the controller's Celery tasks (`tasks.api`, through
    `htdask.gateway.controller.Controller`); the gateway reads their state from what the queue poller keeps
    in Redis (`htdask.gateway.workerchecks`). The traits are in `htdask.gateway.backend_traits`.
    """

    # =============================================================================================
    # setup
    async def do_setup(self):
        pkg = logging.getLogger("htdask.gateway")
        if not pkg.handlers and pkg.parent is logging.getLogger():
            pkg.parent = self.log  # our module loggers write through the gateway's handlers
            pkg.setLevel(self.log.level or logging.INFO)
        self.settings = load()  # the traitlets above override its redis_url, schedd, job_user
        self.controller = Controller.connect(self.redis_url, self.schedd, self.task_timeout, self.settings)
        self.checks = WorkerChecks(self.controller, connect_timeout=self.worker_connect_timeout,
                                   history_grace=self.history_grace, kept_hold_codes=self.settings.hold_keep_codes,
                                   event_log_path=self.event_log_path)
        self._syncs: dict[str, NameSync] = {}
        self._starting: set[str] = set()
        self._last_task: dict[str, str] = {}
        self._managed: set[str] = set()  # clusters whose manager record this process wrote
        self.limits = GatewayLimits(self)  # idle and lifetime limits (htdask/gateway/limits.py)
        self._check_accounts()
        await self._resync_after_restart()

    @property
    def store(self):
        return self.controller.store

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
    # who, where (LocalBackend's hooks for the local scheduler, and the staging directory)
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
        """The cluster's staging directory (`htdask.gateway.staging`), owned by the jobs' user."""
        return staging.create(self.clusters_directory, cluster, self.job_account(cluster)).workdir

    def job_environment(self, cfg) -> dict[str, str]:
        """Environment of a cluster's jobs (workers and scheduler): the inherited variables, then the cluster's."""
        env = {k: os.environ[k] for k in self.worker_inherited_environment if k in os.environ}
        env.update(cfg.environment or {})
        return env

    def job_credentials(self, cluster) -> dict:
        return staging.Staging.at(cluster.state["workdir"]).job_credentials(self.api_url)

    def event_log_path(self, cluster) -> str | None:
        """The cluster's job event log (htdask/domain/jobspec.py: ``$(LogDir)/<cluster>.log``), None before staging."""
        workdir = (cluster.state or {}).get("workdir")
        return staging.Staging.at(workdir).event_log(cluster.name) if workdir else None

    def get_scheduler_command(self, cluster):
        port = scheduler_launch.pick_port(self.scheduler_port_range, self.scheduler_host)
        return list(cluster.config.scheduler_cmd) + scheduler_launch.scheduler_args(
            cluster.config, self.scheduler_host, str(port), self.cluster_heartbeat_period)

    def worker_scheduler_address(self, cluster) -> str:
        """The address worker jobs connect to: through the proxy (`worker_proxy_address`), else the
        reported one, with `scheduler_contact_host` if set."""
        if self.worker_proxy_address:
            return f"gateway://{self.worker_proxy_address}/{cluster.name}"
        if self.scheduler_mode != "local":  # a job's host is not known in advance
            return cluster.scheduler_address
        return scheduler_launch.contact_address(cluster.scheduler_address, self.scheduler_contact_host)

    # =============================================================================================
    # job options and names
    def job_options(self, cluster) -> dict:
        """The `WorkerJobSpec` fields of the cluster's worker jobs (validated by tasks.api)."""
        cfg = cluster.config
        return worker_job_options(
            cfg, scheduler_address=self.worker_scheduler_address(cluster), api_url=self.api_url,
            environment=self.job_environment(cfg), credentials=self.job_credentials(cluster),
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

    async def sync(self, cluster) -> None:
        """Ask for the cluster's wanted names to be sent; the asks of one burst become one request."""
        sync = self._syncs.get(cluster.name)
        if sync is None:
            async def send(cluster=cluster):
                await self._send_names(cluster)
            sync = self._syncs[cluster.name] = NameSync(cluster.name, send, self.batch_window)
        await sync.sync()

    async def _send_names(self, cluster) -> None:
        if cluster.target > JobStatus.RUNNING:
            return  # stopping: the delete request removes every job
        names = self.wanted_names(cluster)
        enqueued = await self.controller.scale(cluster.name, len(names), owner=self.owner_arg(cluster),
                                               options=self.job_options(cluster), names=names)
        if cluster.name not in self._managed:
            await self.controller.mark_managed(cluster.name, cluster.username)
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
        name = cluster.name + scheduler_launch.SCHEDULER_SUFFIX
        cfg = cluster.config
        args = scheduler_launch.scheduler_args(cfg, scheduler_launch.HOST_PLACEHOLDER, "{port}",
                                               self.cluster_heartbeat_period, hooks=scheduler_launch.JOB_HOOKS)
        options = scheduler_launch.scheduler_job_options(
            cfg, args, self.scheduler_port_range, self.job_environment(cfg), self.job_credentials(cluster),
            cluster.name)
        enqueued = await self.controller.scale(name, 1, owner=self.owner_arg(cluster), options=options,
                                               names=["scheduler"])
        await self.controller.mark_managed(name, cluster.username)
        log.info("cluster %s: scheduler job requested as %s (task %s)", cluster.name, name, enqueued.task_id)
        return {"scheduler_job": name, "enqueued_at": time.time()}

    async def do_stop_cluster(self, cluster):
        sync = self._syncs.pop(cluster.name, None)
        if sync is not None:
            await sync.drain()
        await self.controller.wait(self._last_task.pop(cluster.name, None), cluster.name, "last scale request")
        targets = [cluster.name]
        if (cluster.state or {}).get("scheduler_job"):
            targets.append(cluster.state["scheduler_job"])
        for name in targets:
            enqueued = await self.controller.delete(name)
            log.info("cluster %s: delete of %s requested (task %s)", cluster.name, name, enqueued.task_id)
            await self.controller.wait(enqueued.task_id, cluster.name, f"delete of {name}")
        self.checks.forget_cluster(cluster)
        self.limits.forget(cluster.name)
        await super().do_stop_cluster(cluster)  # stops the local scheduler, removes the staging directory
        log.info("cluster %s: stopped", cluster.name)

    async def on_cluster_heartbeat(self, cluster_name, msg):
        """Upstream's, after the limits had their look (an idle stop's reason, the maximum lifetime)."""
        await self.limits.on_heartbeat(self.db.get_cluster(cluster_name), msg)
        await super().on_cluster_heartbeat(cluster_name, msg)

    async def do_check_clusters(self, clusters):
        out = []
        for cluster in clusters:
            if (cluster.state or {}).get("scheduler_job"):
                out.append(await self.checks.scheduler_job(cluster, self.db))
            else:
                out.append(self._check_status(cluster))
        return out

    # =============================================================================================
    # workers
    async def do_start_worker(self, worker):
        self._starting.add(worker.name)
        try:
            await self.sync(worker.cluster)
        finally:
            self._starting.discard(worker.name)
        yield {"enqueued_at": time.time()}

    async def do_stop_worker(self, worker):
        cluster = worker.cluster
        self.checks.forget(worker.name)
        if cluster.target > JobStatus.RUNNING:
            return  # the cluster is stopping: its delete request removes every job at once
        await self.sync(cluster)

    async def do_check_workers(self, workers):
        """False once a worker's job failed to start or, after it connected, is gone (final per worker);
        True while the job is on its way or alive (`htdask.gateway.workerchecks`)."""
        return await self.checks.workers(workers, self.db)
