"""Redis state: the one place that owns our keys (see `state.keys` for the layout)."""
from state.store import ClusterRecord, Store, connect, holder_is_dead, holder_token, redis_url

__all__ = ["ClusterRecord", "Store", "connect", "holder_is_dead", "holder_token", "redis_url"]
