"""Sections of the settings model read only by one entry point or one concern: owner look-up (identity),
the Dask Gateway server (htdask/gateway/config.py, htdask/gateway/backend.py) and the Kubernetes operator."""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import field_validator
from pydantic_settings import NoDecode

from htdask.settings.base import (Count, Flag, NonNegativeSeconds, PortRange, PositiveSeconds, Seconds, Section,
                           WholeSeconds, setting)

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class IdentitySettings(Section):
    """Owner look-up by e-mail (workers/identity/): a map file, else the CI Connect API, cached in Redis."""

    user_map_file: str | None = setting(env="USER_MAP_FILE",
                                        meaning="YAML/JSON map file e-mail → Unix user, asked first")
    ciconnect_url: str | None = setting(env="CICONNECT_URL",
                                        meaning="CI Connect API base URL, http(s)://host[:port][/prefix]")
    ciconnect_token: str | None = setting(env="CICONNECT_TOKEN", meaning="CI Connect API token (never logged)")
    ciconnect_token_file: str | None = setting(env="CICONNECT_TOKEN_FILE",
                                               meaning="file holding the token, when CICONNECT_TOKEN is unset")
    ciconnect_timeout: PositiveSeconds = setting(5.0, env="CICONNECT_TIMEOUT",
                                                 meaning="timeout of one CI Connect request")
    ciconnect_retries: Count = setting(2, env="CICONNECT_RETRIES",
                                       meaning="retries of a failed CI Connect request")
    ciconnect_backoff: NonNegativeSeconds = setting(0.25, env="CICONNECT_BACKOFF",
                                                    meaning="first delay between CI Connect retries (doubling)")
    identity_cache_ttl: WholeSeconds = setting(3600, env="IDENTITY_CACHE_TTL", ge=0,
                                               meaning="how long a look-up is cached in Redis; 0 = not cached")

    @field_validator("ciconnect_retries", "identity_cache_ttl", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:  # "2.0" was accepted before (int(float(raw)))
        if isinstance(value, str):
            try:
                return int(float(value))
            except ValueError:
                return value
        return value


class GatewaySettings(Section):
    """The Dask Gateway server (`dask-gateway-server -f htdask/gateway/config.py`); its traitlets override these."""

    address: str = setting("127.0.0.1:8000", env="GATEWAY_ADDRESS",
                           meaning="public proxy address clients use (HTTP API + scheduler TLS)")
    api_address: str = setting("127.0.0.1:0", env="GATEWAY_API_ADDRESS",
                               meaning="private API server address (only the proxy talks to it)")
    password: str | None = setting(env="GATEWAY_PASSWORD",
                                   meaning="shared password of the simple authenticator (required with "
                                           "GATEWAY_AUTH=simple)")
    allow_any_password: Flag = setting(False, env="GATEWAY_ALLOW_ANY_PASSWORD",
                                       meaning="1: start without GATEWAY_PASSWORD, accepting "
                                               "any password (demos only)")
    run_as_owner: Flag = setting(False, env="GATEWAY_RUN_AS_OWNER",
                                 meaning="1: each gateway user's jobs run as that user's "
                                         "Unix account")
    db_url: str | None = setting(env="GATEWAY_DB_URL", shown_default="in-memory",
                                 meaning="the gateway's database; a file database (with "
                                         "DASK_GATEWAY_ENCRYPT_KEYS) keeps clusters across restarts")
    clusters_dir: str | None = setting(env="GATEWAY_CLUSTERS_DIR", shown_default="a temporary directory per cluster",
                                       meaning="parent of the per-cluster staging directories (on the submit "
                                               "node; jobs get their files by file transfer)")
    scheduler_mode: Literal["local", "job"] = setting("local", env="GATEWAY_SCHEDULER_MODE",
                                                      meaning="`local` (a process on the gateway host) or `job` "
                                                              "(an HTCondor job)")
    scheduler_host: str = setting("127.0.0.1", env="GATEWAY_SCHEDULER_HOST",
                                  meaning="interface the scheduler listens on (0.0.0.0 on a real site)")
    scheduler_contact_host: str = setting("", env="GATEWAY_SCHEDULER_CONTACT_HOST", shown_default="as reported",
                                          meaning="host workers use to reach the scheduler")
    scheduler_ports: PortRange = setting(env="GATEWAY_SCHEDULER_PORTS",
                                         meaning="`LOW:HIGH` port range of the scheduler")
    worker_ports: PortRange = setting(env="GATEWAY_WORKER_PORTS",
                                      meaning="`LOW:HIGH` port range of the workers (`dask worker "
                                              "--worker-port`)")
    nanny_ports: PortRange = setting(env="GATEWAY_NANNY_PORTS",
                                     meaning="`LOW:HIGH` port range of the nannies (`dask worker --nanny-port`)")
    # login (htdask/gateway/auth.py): who the gateway user is; the owner is mapped from it (workers/identity)
    auth: Literal["simple", "jupyterhub", "kerberos"] = setting(
        "simple", env="GATEWAY_AUTH",
        meaning="how users log in: `simple` (one shared GATEWAY_PASSWORD), `jupyterhub` (the user's JupyterHub "
                "API token; the gateway is a JupyterHub service) or `kerberos` (SPNEGO, GATEWAY_KERBEROS_KEYTAB)")
    jupyterhub_api_url: str | None = setting(env="JUPYTERHUB_API_URL", shown_default="required with `jupyterhub`",
                                             meaning="the hub's API URL, `http(s)://host:port/hub/api` (set by "
                                                     "the hub for a managed service)")
    jupyterhub_api_token: str | None = setting(env="JUPYTERHUB_API_TOKEN",
                                               meaning="the gateway service's API token (the `api_token` of its "
                                                       "entry in `c.JupyterHub.services`; never logged)")
    jupyterhub_api_token_file: str | None = setting(env="JUPYTERHUB_API_TOKEN_FILE",
                                                    meaning="file holding that token, when JUPYTERHUB_API_TOKEN is "
                                                            "unset (not readable by others)")
    jupyterhub_service_name: str = setting("dask-gateway", env="JUPYTERHUB_SERVICE_NAME",
                                           meaning="the gateway's service name in the hub: a user's token must "
                                                   "carry `access:services!service=<it>` (or `access:services`)")
    kerberos_keytab: str | None = setting(env="GATEWAY_KERBEROS_KEYTAB", shown_default="required with `kerberos`",
                                          meaning="keytab holding the gateway's `<service>/<host>` key (readable "
                                                  "by the gateway, not by others)")
    kerberos_service_name: str = setting("HTTP", env="GATEWAY_KERBEROS_SERVICE_NAME",
                                         meaning="service part of the gateway's Kerberos principal")



def _default_namespace() -> str:
    try:
        with open(SA_NAMESPACE_FILE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


class OperatorSettings(Section):
    """The Kubernetes operator (`htdask operator`); its command-line options override these."""

    instance: str = setting("", env="DASK_GATEWAY_INSTANCE", shown_default="required",
                            meaning="dask-gateway instance; only DaskClusters (and pods) labelled "
                                    "`gateway.dask.org/instance=<it>` are handled")
    api_url: str = setting("", env="DASK_GATEWAY_API_URL", shown_default="required",
                           meaning="the gateway API URL the schedulers (and workers) are given (helm: "
                                   "`http://api-<release>-dask-gateway.<ns>:8000/api`)")
    namespace: str | None = setting(env="OPERATOR_NAMESPACE", shown_default="the pod's namespace, else `default`",
                                    meaning="namespace of the leader Lease")
    pod_name: str | None = setting(env="POD_NAME", shown_default="the hostname",
                                   meaning="this pod's name, the start of the operator's Lease holder identity")
    lease_name: str = setting("htdask-operator", env="OPERATOR_LEASE_NAME", meaning="name of the Lease")
    lease_seconds: Seconds = setting(15.0, env="OPERATOR_LEASE_SECONDS", ge=3,
                                     meaning="lease duration; renewed every fifth of it (at least every second)")
    status_interval: NonNegativeSeconds = setting(
        10.0, env="OPERATOR_STATUS_INTERVAL",
        meaning="least time between two status writes that only change worker counts")
    resync_seconds: PositiveSeconds = setting(
        15.0, env="OPERATOR_RESYNC_SECONDS", shown_default="`POLL_INTERVAL`",
        meaning="how often every cluster's status is compared with the Redis summaries")
    scheduler_address: str = setting("tls://{service}.{namespace}:8786", env="OPERATOR_SCHEDULER_ADDRESS",
                                     meaning="address workers connect to; `{service}`, `{namespace}`, `{name}` "
                                             "are filled in")
    credentials_dir: str | None = setting(
        env="OPERATOR_CREDENTIALS_DIR",
        meaning="directory on the submit node (the Celery worker's host) for each cluster's `dask.crt`, "
                "`dask.pem`, `api-token` (0700, the owner's); jobs get them by file transfer; unset = workers "
                "get no TLS files")
    worker_universe: Literal["vanilla", "docker"] = setting("vanilla", env="OPERATOR_WORKER_UNIVERSE",
                                                            meaning="`vanilla`, or `docker` (the cluster's "
                                                                    "`image` then runs the worker)")
    worker_port_range: PortRange = setting(env="OPERATOR_WORKER_PORT_RANGE",
                                           meaning="`LOW:HIGH` ports for `dask worker --worker-port`")
    nanny_port_range: PortRange = setting(env="OPERATOR_NANNY_PORT_RANGE",
                                          meaning="`LOW:HIGH` ports for `dask worker --nanny-port`")
    traefik_routes: Flag = setting(True, env="OPERATOR_TRAEFIK_ROUTES",
                                   meaning="create dask-gateway's "
                                           "IngressRoute/IngressRouteTCP (`1`/`0`)")
    proxy_prefix: str = setting("", env="OPERATOR_PROXY_PREFIX", meaning="as the helm chart's controller setting")
    proxy_web_entrypoint: str = setting("web", env="OPERATOR_PROXY_WEB_ENTRYPOINT",
                                        meaning="as the helm chart's controller setting")
    proxy_tcp_entrypoint: str = setting("tcp", env="OPERATOR_PROXY_TCP_ENTRYPOINT",
                                        meaning="as the helm chart's controller setting")
    proxy_web_middlewares: Annotated[list, NoDecode] = setting(
        [], env="OPERATOR_PROXY_WEB_MIDDLEWARES",
        meaning="Traefik Middlewares of each dashboard route (a JSON list); with dask-gateway's chart "
                "`[{\"name\": \"clusters-prefix-<fullname>\", \"namespace\": \"<release ns>\"}]`, else the "
                "dashboard link is a 404")
    completed_max_age: NonNegativeSeconds = setting(
        86400.0, env="OPERATOR_COMPLETED_MAX_AGE",
        meaning="how long a Stopped/Failed DaskCluster is kept before the operator deletes it; 0 = never")
    #: MAX_WORKERS_PER_CLUSTER, copied from the top level (not read twice)
    max_workers: int = 1000
    #: IDLE_TIMEOUT_MAX and MAX_LIFETIME_MAX (seconds, 0: none), copied from the top level
    limit_maxima: dict = {}


    @field_validator("proxy_prefix", mode="before")
    @classmethod
    def _prefix(cls, value: Any) -> Any:
        prefix = str(value or "").strip("/")
        return f"/{prefix}" if prefix else ""

    @field_validator("proxy_web_middlewares", mode="before")
    @classmethod
    def _middlewares(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError("must be a JSON list") from None
        if not isinstance(value, list):
            raise ValueError("must be a JSON list")
        return value

    @field_validator("credentials_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    @field_validator("scheduler_address")
    @classmethod
    def _address_fields(cls, value: str) -> str:
        try:
            value.format(service="s", namespace="n", name="x")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"has an unknown field: {e}") from None
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str:
        return value or _default_namespace()

    @property
    def label_selector(self) -> str:
        return f"gateway.dask.org/instance={self.instance}"

    def require(self) -> None:
        """Refuse to run the operator without its two required settings (ValueError naming them)."""
        if not self.instance:
            raise ValueError("DASK_GATEWAY_INSTANCE (--instance) is required: the dask-gateway instance to serve")
        if not self.api_url.startswith(("http://", "https://")):
            raise ValueError("DASK_GATEWAY_API_URL (--api-url) must be the gateway's http(s):// API URL")
