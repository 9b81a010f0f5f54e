"""What one reconcile of one cluster did: `Outcome`, also the task's JSON result (visible in Flower)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Outcome:
    """What one reconcile did (also the task's JSON result, visible in Flower)."""
    cluster: str
    state: str = "ok"  # ok | busy | gone | lost (our lease expired while we were stalled: not ours to act on)
    desired: int | None = None
    live: int | None = None
    submitted: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # job ids
    released: list[str] = field(default_factory=list)
    retiring: list[str] = field(default_factory=list)  # job ids handed to a retirement (tasks/removal.py)
    error: str | None = None
    exc: Exception | None = field(default=None, repr=False)
    started: float | None = field(default=None, repr=False)  # time of this reconcile's first submission
    #: busy: seconds until the cluster's lock expires unless its holder renews it (then ask again)
    retry_in: float | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("exc", "started", "retry_in")}

    def brief(self) -> dict:
        """What the round did to the cluster, compactly (counts, not job ids), for a task's result:
        `did` names `submitted`, `removed`, `released`, `retiring`, `error` — or `nothing`, or `busy` (another
        round held the cluster's lock), `gone` (the cluster was deleted meanwhile) or `lost` (the round's
        lease expired under it: the new holder acts), joined by `+`.
        Flat on purpose: Celery's result repr, which Flower shows, cuts nesting below three levels."""
        if self.state != "ok":
            return {"did": self.state}
        did = [k for k in ("submitted", "removed", "released", "retiring") if getattr(self, k)]
        out: dict = {k: len(getattr(self, k)) for k in did}
        if self.error:
            did.append("error")
            out["error"] = self.error
        return {"did": "+".join(did) or "nothing", **out, "desired": self.desired, "live": self.live}
