"""Redis state: the one place that owns our keys (see `state.keys` for the layout) and every Redis client
(`state.connection`: a single server or Sentinel, from REDIS_URL)."""
from state.connection import RedisSettingError, configure_celery, connect, redact
from state.store import ClusterRecord, Store, redis_url

__all__ = ["ClusterRecord", "RedisSettingError", "Store", "configure_celery", "connect", "redact", "redis_url"]
