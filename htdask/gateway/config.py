# Dask Gateway server config: Dask clusters whose workers are HTCondor jobs of this controller.
#
#     dask-gateway-server -f htdask/gateway/config.py
#
# Clients:  Gateway("http://$GATEWAY_ADDRESS", auth=BasicAuth(user, $GATEWAY_PASSWORD)) with GATEWAY_AUTH=simple;
#           auth=JupyterHubAuth() (jupyterhub) or auth=KerberosAuth() (kerberos): htdask/gateway/auth.py
#
# Environment: the gateway section of the settings model (htdask/settings/sections.py; the README's configuration
# table lists each GATEWAY_* variable), plus REDIS_URL (and the Sentinel settings), SCHEDD_NAME and DEFAULT_OWNER (the Celery worker's:
# the Unix account jobs run as; required unless GATEWAY_RUN_AS_OWNER=1, else the gateway's own user, never
# root). The traitlets set below (and any set after this file) override the model.
#
# Every backend option is documented in htdask/gateway/backend.py (`dask-gateway-server --help-all`).
#
# An unusable setup stops the server at start with one line naming the setting: no password (unless
# GATEWAY_ALLOW_ANY_PASSWORD=1, or another GATEWAY_AUTH), a JupyterHub or Kerberos login without its URL, token or
# keytab (htdask/gateway/auth.py), no job account we may submit as (root, a system account, unknown), a Redis that
# may evict keys (maxmemory-policy other than noeviction, unless REDIS_ALLOW_EVICTION=1).
import getpass
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from htdask.gateway.auth import AuthSetupError, configure as configure_auth  # noqa: E402
from htdask.gateway.pyenv import dask_command, job_environment  # noqa: E402

c = get_config()  # noqa: F821 (provided by traitlets when the file is loaded)


def _refuse(message):
    print(f"dask-gateway-server: refusing to start: {message}", file=sys.stderr, flush=True)
    os._exit(2)  # SystemExit would be reported with a traceback by the config loader


def _settings():
    """The settings model (htdask/settings/); a bad value stops the server with one line naming it."""
    from htdask.settings import SettingsError, load
    try:
        return load()
    except SettingsError as e:
        _refuse(f"bad setting: {e}")


def _check_setup(s):
    """One line and exit 2 for a setup every request would fail with (or that lets anyone in)."""
    from htdask.state.connection import RedisSettingError, check_eviction_or_exit, parse
    from workers.runas import check_user
    from htdask.domain.validation import ValidationError
    try:
        parse(s.redis_url)  # a single Redis or Sentinel, with REDIS_SENTINEL_MASTER, ... (htdask/state/connection.py)
    except RedisSettingError as e:
        _refuse(str(e))
    if not s.gateway.run_as_owner:
        account = s.default_owner or getpass.getuser()
        try:
            check_user(account)
        except ValidationError as e:
            _refuse(f"no usable job account: DEFAULT_OWNER={s.default_owner or '(unset)'}: {e}; set "
                    f"DEFAULT_OWNER to the Celery worker's, or GATEWAY_RUN_AS_OWNER=1")
    check_eviction_or_exit("dask-gateway-server")  # a Redis that may evict our keys (REDIS_ALLOW_EVICTION)


_s = _settings()
_g = _s.gateway
_check_setup(_s)


# --- addresses and login (the settings model's gateway section; see htdask/gateway/auth.py) -------
c.Proxy.address = _g.address
c.DaskGateway.address = _g.api_address
try:
    configure_auth(c, _g)  # GATEWAY_AUTH: simple (GATEWAY_PASSWORD), jupyterhub or kerberos
except AuthSetupError as _e:
    _refuse(str(_e))

# --- backend -------------------------------------------------------------------------------------
c.DaskGateway.backend_class = "htdask.gateway.backend.HTCondorBackend"
c.HTCondorBackend.redis_url = _s.redis_url
c.HTCondorBackend.schedd = _s.schedd_name
c.HTCondorBackend.run_as_owner = _g.run_as_owner
if _s.default_owner:
    c.HTCondorBackend.job_user = _s.default_owner
c.HTCondorBackend.scheduler_mode = _g.scheduler_mode
c.HTCondorBackend.scheduler_host = _g.scheduler_host
c.HTCondorBackend.scheduler_contact_host = _g.scheduler_contact_host
c.HTCondorBackend.scheduler_port_range = _g.scheduler_ports or ""
c.HTCondorBackend.worker_port_range = _g.worker_ports or ""
c.HTCondorBackend.nanny_port_range = _g.nanny_ports or ""
if _g.clusters_dir:
    c.HTCondorBackend.clusters_directory = _g.clusters_dir
if _g.db_url:
    c.HTCondorBackend.db_url = _g.db_url
    # A file database keeps clusters across restarts: leave them running when the gateway stops.
    c.HTCondorBackend.stop_clusters_on_shutdown = False

# --- clusters ------------------------------------------------------------------------------------
# Users may choose their cluster's idle timeout and maximum lifetime (durations: 30m, 2h), within the site's
# maxima (IDLE_TIMEOUT_MAX, MAX_LIFETIME_MAX); the defaults are IDLE_TIMEOUT, MAX_LIFETIME (htdask/gateway/limits.py).
from htdask.gateway.limits import cluster_options as _limit_options  # noqa: E402

c.HTCondorBackend.cluster_options = _limit_options()
# distributed 2026 has no dask-scheduler / dask-worker programs: `dask scheduler` / `dask worker`, as lists.
c.HTCondorClusterConfig.scheduler_cmd = dask_command("scheduler")
c.HTCondorClusterConfig.worker_cmd = dask_command("worker")
c.HTCondorClusterConfig.worker_cores = 1
c.HTCondorClusterConfig.worker_memory = "2 G"
c.HTCondorClusterConfig.environment = job_environment()
