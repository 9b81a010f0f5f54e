# Dask Gateway server config: Dask clusters whose workers are HTCondor jobs of this controller.
#
#     dask-gateway-server -f gateway/config.py
#
# Clients:  Gateway("http://$GATEWAY_ADDRESS", auth=BasicAuth(user, $GATEWAY_PASSWORD))
#
# Environment (all optional):
#   GATEWAY_ADDRESS          public proxy address clients use (HTTP API + scheduler TLS), default 127.0.0.1:8000
#   GATEWAY_API_ADDRESS      private API server address (only the proxy talks to it), default 127.0.0.1:0
#   GATEWAY_PASSWORD         shared password of the simple authenticator (required)
#   GATEWAY_ALLOW_ANY_PASSWORD  1: start without GATEWAY_PASSWORD, accepting any password (demos only)
#   REDIS_URL                the controller's Redis (broker + state), default redis://127.0.0.1:6379/0;
#                            Sentinel: sentinel://h1:26379;sentinel://h2:26379/0 with REDIS_SENTINEL_MASTER,
#                            REDIS_SENTINEL_PASSWORD (see the README's "Redis that fails over")
#   SCHEDD_NAME              schedd queue of new clusters, default local
#   DEFAULT_OWNER            Unix account jobs run as (must match the Celery worker's DEFAULT_OWNER);
#                            required unless GATEWAY_RUN_AS_OWNER=1 (else: the gateway's own user, never root)
#   GATEWAY_RUN_AS_OWNER     1: each gateway user's jobs run as that user's Unix account (owners issue)
#   GATEWAY_DB_URL           database of the gateway, default in-memory; with a file database
#                            (sqlite:////var/lib/dask-gateway/db.sqlite) also set DASK_GATEWAY_ENCRYPT_KEYS,
#                            and clusters survive a gateway restart
#   GATEWAY_CLUSTERS_DIR     parent of the per-cluster staging directories (TLS files, logs); must be
#                            visible from the execute hosts; default: a temporary directory per cluster
#   GATEWAY_SCHEDULER_HOST   interface the scheduler listens on, default 127.0.0.1 (0.0.0.0 on a real site)
#   GATEWAY_SCHEDULER_CONTACT_HOST  host workers use to reach the scheduler (default: as reported)
#   GATEWAY_SCHEDULER_PORTS  LOW:HIGH port range of the scheduler
#   GATEWAY_WORKER_PORTS     LOW:HIGH port range of the workers (dask worker --worker-port)
#   GATEWAY_NANNY_PORTS      LOW:HIGH port range of the nannies (dask worker --nanny-port)
#   GATEWAY_SCHEDULER_MODE   local (a process on this host, default) or job (an HTCondor job)
#
# Every backend option is documented in gateway/backend.py (`dask-gateway-server --help-all`).
#
# An unusable setup stops the server at start with one line naming the setting: no password (unless
# GATEWAY_ALLOW_ANY_PASSWORD=1), no job account we may submit as (root, a system account, unknown).
import getpass
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from gateway.pyenv import dask_command, job_environment  # noqa: E402

c = get_config()  # noqa: F821 (provided by traitlets when the file is loaded)


def _env(name, default=None):
    value = os.environ.get(name, "").strip()
    return value if value else default


def _flag(name):
    return _env(name, "0").lower() in ("1", "true", "yes", "on")


def _refuse(message):
    print(f"dask-gateway-server: refusing to start: {message}", file=sys.stderr, flush=True)
    os._exit(2)  # SystemExit would be reported with a traceback by the config loader


def _check_setup():
    """One line and exit 2 for a setup every request would fail with (or that lets anyone in)."""
    from state.connection import RedisSettingError, parse
    from workers.runas import check_user
    from workers.validation import ValidationError
    try:
        parse()  # REDIS_URL, REDIS_SENTINEL_MASTER, ...: a single Redis or Sentinel (state/connection.py)
    except RedisSettingError as e:
        _refuse(str(e))
    if not _env("GATEWAY_PASSWORD") and not _flag("GATEWAY_ALLOW_ANY_PASSWORD"):
        _refuse("GATEWAY_PASSWORD is unset (any password would be accepted); set it, or "
                "GATEWAY_ALLOW_ANY_PASSWORD=1 for a demo")
    if not _flag("GATEWAY_RUN_AS_OWNER"):
        account = _env("DEFAULT_OWNER") or getpass.getuser()
        try:
            check_user(account)
        except ValidationError as e:
            _refuse(f"no usable job account: DEFAULT_OWNER={_env('DEFAULT_OWNER') or '(unset)'}: {e}; set "
                    f"DEFAULT_OWNER to the Celery worker's, or GATEWAY_RUN_AS_OWNER=1")


_check_setup()


# --- addresses and authentication ------------------------------------------------------------
c.Proxy.address = _env("GATEWAY_ADDRESS", "127.0.0.1:8000")
c.DaskGateway.address = _env("GATEWAY_API_ADDRESS", "127.0.0.1:0")
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
if _env("GATEWAY_PASSWORD"):
    c.SimpleAuthenticator.password = _env("GATEWAY_PASSWORD")

# --- backend -------------------------------------------------------------------------------------
c.DaskGateway.backend_class = "gateway.backend.HTCondorBackend"
c.HTCondorBackend.redis_url = _env("REDIS_URL", "redis://127.0.0.1:6379/0")
c.HTCondorBackend.schedd = _env("SCHEDD_NAME", "local")
c.HTCondorBackend.run_as_owner = _flag("GATEWAY_RUN_AS_OWNER")
if _env("DEFAULT_OWNER"):
    c.HTCondorBackend.job_user = _env("DEFAULT_OWNER")
c.HTCondorBackend.scheduler_mode = _env("GATEWAY_SCHEDULER_MODE", "local")
c.HTCondorBackend.scheduler_host = _env("GATEWAY_SCHEDULER_HOST", "127.0.0.1")
c.HTCondorBackend.scheduler_contact_host = _env("GATEWAY_SCHEDULER_CONTACT_HOST", "")
c.HTCondorBackend.scheduler_port_range = _env("GATEWAY_SCHEDULER_PORTS", "")
c.HTCondorBackend.worker_port_range = _env("GATEWAY_WORKER_PORTS", "")
c.HTCondorBackend.nanny_port_range = _env("GATEWAY_NANNY_PORTS", "")
if _env("GATEWAY_CLUSTERS_DIR"):
    c.HTCondorBackend.clusters_directory = _env("GATEWAY_CLUSTERS_DIR")
if _env("GATEWAY_DB_URL"):
    c.HTCondorBackend.db_url = _env("GATEWAY_DB_URL")
    # A file database keeps clusters across restarts: leave them running when the gateway stops.
    c.HTCondorBackend.stop_clusters_on_shutdown = False

# --- clusters ------------------------------------------------------------------------------------
# distributed 2026 has no dask-scheduler / dask-worker programs: `dask scheduler` / `dask worker`, as lists.
c.HTCondorClusterConfig.scheduler_cmd = dask_command("scheduler")
c.HTCondorClusterConfig.worker_cmd = dask_command("worker")
c.HTCondorClusterConfig.worker_cores = 1
c.HTCondorClusterConfig.worker_memory = "2 G"
c.HTCondorClusterConfig.environment = job_environment()
