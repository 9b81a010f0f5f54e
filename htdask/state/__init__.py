"""Redis state: the one place that owns our keys (see `htdask.state.keys` for the layout) and every Redis client
(`htdask.state.connection`: a single server or Sentinel, from REDIS_URL)."""
from htdask.state.connection import RedisSettingError, configure_celery, connect, redact
from htdask.state.store import ClusterRecord, Store, redis_url

__all__ = ["ClusterRecord", "RedisSettingError", "Store", "configure_celery", "connect", "redact", "redis_url"]
