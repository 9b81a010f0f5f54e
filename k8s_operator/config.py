"""Operator settings, read from the environment (``python cli.py operator`` options override them).

| variable | meaning | default |
|---|---|---|
| `DASK_GATEWAY_INSTANCE` | dask-gateway instance; only DaskClusters (and pods) labelled `gateway.dask.org/instance=<it>` are handled | required |
| `DASK_GATEWAY_API_URL` | the gateway API URL the schedulers (and workers) are given (helm: `http://api-<release>-dask-gateway.<ns>:8000/api`) | required |
| `OPERATOR_NAMESPACE` | namespace of the leader Lease | the pod's namespace, else `default` |
| `OPERATOR_LEASE_NAME` | name of the Lease | `htdask-operator` |
| `OPERATOR_LEASE_SECONDS` | lease duration (whole seconds); renewed every fifth of it (at least every second) | `15` |
| `OPERATOR_STATUS_INTERVAL` | least seconds between two status writes that only change worker counts | `10` |
| `OPERATOR_RESYNC_SECONDS` | how often every cluster's status is compared with the Redis summaries | `POLL_INTERVAL` (15) |
| `OPERATOR_SCHEDULER_ADDRESS` | address workers connect to; `{service}`, `{namespace}`, `{name}` are filled in | `tls://{service}.{namespace}:8786` |
| `OPERATOR_CREDENTIALS_DIR` | shared directory (same path on execute nodes) where each cluster's `dask.crt`, `dask.pem` and `api-token` are written for the worker jobs; unset = workers get no TLS files | unset |
| `OPERATOR_WORKER_UNIVERSE` | `vanilla`, or `docker` (the cluster's `image` then runs the worker) | `vanilla` |
| `OPERATOR_WORKER_PORT_RANGE`, `OPERATOR_NANNY_PORT_RANGE` | `low:high` ports for `dask worker --worker-port/--nanny-port` | unset |
| `OPERATOR_TRAEFIK_ROUTES` | create dask-gateway's IngressRoute/IngressRouteTCP (`1`/`0`) | `1` |
| `OPERATOR_PROXY_PREFIX`, `OPERATOR_PROXY_WEB_ENTRYPOINT`, `OPERATOR_PROXY_TCP_ENTRYPOINT`, `OPERATOR_PROXY_WEB_MIDDLEWARES` (JSON list) | as the helm chart's controller settings | ``, `web`, `tcp`, `[]` |
| `OPERATOR_COMPLETED_MAX_AGE` | seconds a Stopped/Failed DaskCluster is kept before the operator deletes it; `0` = never | `86400` |
| `REDIS_URL`, `REDIS_SENTINEL_MASTER`, `REDIS_PASSWORD`, `REDIS_SENTINEL_PASSWORD` | the controller's Redis, one server or Sentinel (`state/connection.py`) | `redis://127.0.0.1:6379/0` |
| `KUBECONFIG` | kubeconfig when not running in a pod | in-cluster config |
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _default_namespace() -> str:
    try:
        with open(SA_NAMESPACE_FILE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


@dataclass(frozen=True)
class OperatorConfig:
    instance: str
    api_url: str
    namespace: str = "default"
    lease_name: str = "htdask-operator"
    lease_seconds: float = 15.0
    status_interval: float = 10.0
    resync_seconds: float = 15.0
    scheduler_address: str = "tls://{service}.{namespace}:8786"
    credentials_dir: str | None = None
    worker_universe: str = "vanilla"
    worker_port_range: str | None = None
    nanny_port_range: str | None = None
    traefik_routes: bool = True
    proxy_prefix: str = ""
    proxy_web_entrypoint: str = "web"
    proxy_tcp_entrypoint: str = "tcp"
    proxy_web_middlewares: list = field(default_factory=list)
    completed_max_age: float = 86400.0
    max_workers: int = 1000

    @property
    def label_selector(self) -> str:
        return f"gateway.dask.org/instance={self.instance}"


def from_env(**overrides) -> OperatorConfig:
    """Settings from the environment; keyword arguments that are not None win."""
    env = os.environ
    prefix = env.get("OPERATOR_PROXY_PREFIX", "").strip("/")
    values = dict(
        instance=env.get("DASK_GATEWAY_INSTANCE", ""),
        api_url=env.get("DASK_GATEWAY_API_URL", ""),
        namespace=env.get("OPERATOR_NAMESPACE") or _default_namespace(),
        lease_name=env.get("OPERATOR_LEASE_NAME") or "htdask-operator",
        lease_seconds=_float("OPERATOR_LEASE_SECONDS", 15.0),
        status_interval=_float("OPERATOR_STATUS_INTERVAL", 10.0),
        resync_seconds=_float("OPERATOR_RESYNC_SECONDS", _float("POLL_INTERVAL", 15.0)),
        scheduler_address=env.get("OPERATOR_SCHEDULER_ADDRESS") or "tls://{service}.{namespace}:8786",
        credentials_dir=env.get("OPERATOR_CREDENTIALS_DIR") or None,
        worker_universe=env.get("OPERATOR_WORKER_UNIVERSE") or "vanilla",
        worker_port_range=env.get("OPERATOR_WORKER_PORT_RANGE") or None,
        nanny_port_range=env.get("OPERATOR_NANNY_PORT_RANGE") or None,
        traefik_routes=env.get("OPERATOR_TRAEFIK_ROUTES", "1").strip().lower() not in ("0", "false", "no", ""),
        proxy_prefix=f"/{prefix}" if prefix else "",
        proxy_web_entrypoint=env.get("OPERATOR_PROXY_WEB_ENTRYPOINT") or "web",
        proxy_tcp_entrypoint=env.get("OPERATOR_PROXY_TCP_ENTRYPOINT") or "tcp",
        proxy_web_middlewares=json.loads(env.get("OPERATOR_PROXY_WEB_MIDDLEWARES") or "[]"),
        completed_max_age=_float("OPERATOR_COMPLETED_MAX_AGE", 86400.0),
        max_workers=int(env.get("MAX_WORKERS_PER_CLUSTER") or 1000),
    )
    values.update({k: v for k, v in overrides.items() if v is not None})
    cfg = OperatorConfig(**values)
    check(cfg)
    return cfg


def check(cfg: OperatorConfig) -> None:
    """Refuse settings the operator cannot work with (one line each, ValueError)."""
    from state.connection import parse
    from workers.validation import validate_port_range
    parse()  # REDIS_URL and the Sentinel settings (RedisSettingError is a ValueError naming the setting)
    if not cfg.instance:
        raise ValueError("DASK_GATEWAY_INSTANCE (--instance) is required: the dask-gateway instance to serve")
    if not cfg.api_url.startswith(("http://", "https://")):
        raise ValueError("DASK_GATEWAY_API_URL (--api-url) must be the gateway's http(s):// API URL")
    if cfg.worker_universe not in ("vanilla", "docker"):
        raise ValueError("OPERATOR_WORKER_UNIVERSE must be 'vanilla' or 'docker'")
    for value, what in ((cfg.worker_port_range, "OPERATOR_WORKER_PORT_RANGE"),
                        (cfg.nanny_port_range, "OPERATOR_NANNY_PORT_RANGE")):
        if value is not None:
            validate_port_range(value, what)
    if cfg.credentials_dir is not None and not cfg.credentials_dir.startswith("/"):
        raise ValueError("OPERATOR_CREDENTIALS_DIR must be an absolute path")
    try:
        cfg.scheduler_address.format(service="s", namespace="n", name="x")
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"OPERATOR_SCHEDULER_ADDRESS has an unknown field: {e}") from None
    if cfg.lease_seconds < 3:
        raise ValueError("OPERATOR_LEASE_SECONDS must be at least 3")
    if not isinstance(cfg.proxy_web_middlewares, list):
        raise ValueError("OPERATOR_PROXY_WEB_MIDDLEWARES must be a JSON list")
