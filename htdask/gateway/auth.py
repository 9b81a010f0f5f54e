"""The gateway's login: which dask-gateway authenticator checks a request, configured from the settings model.

`configure(c, gateway_settings)` sets `c.DaskGateway.authenticator_class` and that authenticator's traitlets
on the config `c` of `htdask/gateway/config.py`, or raises `AuthSetupError` (one line naming the setting) for
a setup every request would fail with or that would let anyone in. GATEWAY_AUTH picks one of upstream's
(`dask_gateway_server.auth`):

- `simple`: HTTP Basic with one shared `GATEWAY_PASSWORD` (required unless GATEWAY_ALLOW_ANY_PASSWORD=1).
- `jupyterhub`: the gateway is a JupyterHub service (`JupyterHubAuthenticator`, as `HubAuthenticator` below,
  whose traitlets are set as `c.JupyterHubAuthenticator.*`). A client sends
  `Authorization: jupyterhub <token>` (`dask_gateway.JupyterHubAuth`, which reads the notebook's
  JUPYTERHUB_API_TOKEN); the gateway asks the hub's `GET <JUPYTERHUB_API_URL>/user` with that token and
  takes the hub user's name. The token must carry the scope `access:services!service=<JUPYTERHUB_SERVICE_NAME>`
  (or `access:services`): the hub's RBAC decides who may use the gateway. A token the hub does not know is
  a 401. The service's own token (JUPYTERHUB_API_TOKEN / _FILE) is required and handed to the authenticator
  in the config, never on a command line; it is not one of the variables passed to schedulers or jobs.
- `kerberos`: SPNEGO (`Authorization: Negotiate ...`, `dask_gateway.KerberosAuth`) against the key of
  `<GATEWAY_KERBEROS_SERVICE_NAME>/<host>` in GATEWAY_KERBEROS_KEYTAB (`KerberosAuthenticator`, which needs
  the `kerberos` module: `pip install pykerberos`); the user is the principal without its realm.

The user name an authenticator yields is the cluster's gateway user; with GATEWAY_RUN_AS_OWNER=1 it becomes
the jobs' Unix account through `workers.identity.resolve_owner` (an e-mail through USER_MAP_FILE / CI Connect,
else a Unix user name), as for every entry point. A hub *service* token yields `service:<name>`, which no
mapping accepts.
"""
from __future__ import annotations

import logging
import os
import re
import stat
from urllib.parse import urlsplit

from aiohttp import web
from dask_gateway_server.auth import JupyterHubAuthenticator, unauthorized

from htdask.settings import GatewaySettings

log = logging.getLogger(__name__)

AUTHENTICATORS = {
    "simple": "dask_gateway_server.auth.SimpleAuthenticator",
    "jupyterhub": "htdask.gateway.auth.HubAuthenticator",
    "kerberos": "dask_gateway_server.auth.KerberosAuthenticator",
}

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")  # no '!', '=', ':' or spaces: it goes into a scope


class HubAuthenticator(JupyterHubAuthenticator):
    """Upstream's `JupyterHubAuthenticator` (configured as `c.JupyterHubAuthenticator`), with a token the hub
    does not know refused as such: JupyterHub >= 2 answers `GET /hub/api/user` with 403 for an unknown or
    expired token (every valid token may read its own model), which upstream turns into a 500 "Permission
    failure"; here it is a 401, as for a token without the gateway's access scope."""

    async def authenticate(self, request):
        try:
            return await super().authenticate(request)
        except web.HTTPInternalServerError as e:
            if not (e.reason or "").startswith("Permission failure verifying"):
                raise
            log.info("a JupyterHub token was refused by the hub (403 from %s/user)", self.jupyterhub_api_url)
            raise unauthorized("jupyterhub") from None


class AuthSetupError(ValueError):
    """A login setup the gateway must not start with; the message is one line naming the setting."""


def configure(c, g: GatewaySettings) -> str:
    """Set the authenticator of config `c` from the gateway section `g`; returns a short description for the
    start-up log line (never a secret). AuthSetupError for a missing or unusable setting."""
    c.DaskGateway.authenticator_class = AUTHENTICATORS[g.auth]
    if g.auth == "jupyterhub":
        return _jupyterhub(c, g)
    if g.auth == "kerberos":
        return _kerberos(c, g)
    if not g.password and not g.allow_any_password:
        raise AuthSetupError("GATEWAY_PASSWORD is unset (any password would be accepted); set it, or "
                             "GATEWAY_ALLOW_ANY_PASSWORD=1 for a demo, or another GATEWAY_AUTH")
    if g.password:
        c.SimpleAuthenticator.password = g.password
    return "simple (shared password)" if g.password else "simple (ANY password: demo only)"


def _jupyterhub(c, g: GatewaySettings) -> str:
    url = (g.jupyterhub_api_url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.username:
        shown = "(with user info)" if parts.username or parts.password else (url or "(unset)")
        raise AuthSetupError(f"JUPYTERHUB_API_URL={shown} must be the hub's http(s)://host:port/hub/api URL "
                             "(GATEWAY_AUTH=jupyterhub)")
    name = g.jupyterhub_service_name.strip()
    if not _SERVICE_NAME.match(name):
        raise AuthSetupError(f"JUPYTERHUB_SERVICE_NAME={name!r} must be the gateway's service name in the hub "
                             "(letters, digits, '.', '_', '-')")
    token = g.jupyterhub_api_token or _secret_file(g.jupyterhub_api_token_file, "JUPYTERHUB_API_TOKEN_FILE")
    if not token:
        raise AuthSetupError("GATEWAY_AUTH=jupyterhub needs the gateway service's token: JUPYTERHUB_API_TOKEN or "
                             "JUPYTERHUB_API_TOKEN_FILE")
    c.JupyterHubAuthenticator.jupyterhub_api_url = url
    c.JupyterHubAuthenticator.jupyterhub_api_token = token
    c.JupyterHubAuthenticator.jupyterhub_service_name = name
    c.JupyterHubAuthenticator.use_service_access_scopes = True
    return f"jupyterhub ({parts.scheme}://{parts.netloc}{parts.path}, service {name})"


def _kerberos(c, g: GatewaySettings) -> str:
    path = (g.kerberos_keytab or "").strip()
    if not path:
        raise AuthSetupError("GATEWAY_AUTH=kerberos needs GATEWAY_KERBEROS_KEYTAB (the gateway's keytab)")
    _check_secret_file(path, "GATEWAY_KERBEROS_KEYTAB")
    service = g.kerberos_service_name.strip()
    if not _SERVICE_NAME.match(service):
        raise AuthSetupError(f"GATEWAY_KERBEROS_SERVICE_NAME={service!r} must be a principal's service part "
                             "(e.g. HTTP)")
    try:
        import kerberos  # noqa: F401  (upstream's authenticator imports it at the first request)
    except ImportError:
        raise AuthSetupError("GATEWAY_AUTH=kerberos needs the `kerberos` module (pip install pykerberos)") from None
    c.KerberosAuthenticator.keytab = os.path.abspath(path)
    c.KerberosAuthenticator.service_name = service
    return f"kerberos ({service}, keytab {os.path.abspath(path)})"


def _check_secret_file(path: str, variable: str) -> os.stat_result:
    """A regular file this process can read and others cannot (AuthSetupError naming `variable` else)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise AuthSetupError(f"{variable}={path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AuthSetupError(f"{variable}={path}: not a regular file")
    if st.st_mode & stat.S_IROTH:
        raise AuthSetupError(f"{variable}={path}: readable by every user (mode {stat.S_IMODE(st.st_mode):04o}); "
                             f"chmod o-r it")
    if not os.access(path, os.R_OK):
        raise AuthSetupError(f"{variable}={path}: not readable by this process")
    return st


def _secret_file(path: str | None, variable: str) -> str | None:
    """The stripped content of a secret file (None when `path` is unset)."""
    if not (path or "").strip():
        return None
    path = path.strip()
    _check_secret_file(path, variable)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except (OSError, UnicodeDecodeError) as e:
        raise AuthSetupError(f"{variable}={path}: cannot read it: {getattr(e, 'strerror', None) or e}") from None
