"""Which entry point manages a cluster (`htdask:manager:<name>`): a Dask Gateway or the operator.

The CLI reads it to refuse scaling such a cluster by mistake (the gateway would undo it, or worse, its
workers would be removed under the scientist's feet); `status` shows the gateway user.
"""
from __future__ import annotations

from htdask.state import keys
from htdask.state.store import Store

KINDS = ("gateway", "operator")


def set_manager(store: Store, name: str, kind: str, user: str | None = None) -> None:
    """Record that `kind` (one of KINDS) manages cluster `name`, on behalf of `user` (may be None)."""
    if kind not in KINDS:
        raise ValueError(f"manager kind {kind!r} is not one of {KINDS}")
    store.r.hset(keys.manager(name), mapping={"kind": kind, "user": user or ""})


def managers(store: Store, names: list[str]) -> dict[str, dict | None]:
    """{name: {"kind", "user"} or None} for each cluster, in one round trip."""
    pipe = store.r.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.manager(name))
    out = {}
    for name, raw in zip(names, pipe.execute()):
        if raw:
            d = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                 for k, v in raw.items()}
            out[name] = {"kind": d.get("kind"), "user": d.get("user") or None}
        else:
            out[name] = None
    return out
