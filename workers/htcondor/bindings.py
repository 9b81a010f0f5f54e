"""Schedd over the htcondor2 Python bindings (CONDOR_BACKEND=bindings).

Saves a process per call on a busy submit node.  Limitation: the bindings act with the identity of
this process, and a process cannot become another Unix user for one call and back, so `user` must
be None or the current user; anything else raises UserRefused (use the cli backend for that).
Ads are converted through ClassAd.printJson(), the same unparser condor_q -json uses, so callers
see identical values ("/Expr(...)/" strings included) from both backends.
"""
from __future__ import annotations

import json
import logging
import os
import pwd
from typing import Any, Iterator, Sequence

from workers import runas
from htdask.domain.submitdesc import SubmitDescription
from htdask.domain.submitvalues import validate_projection
from htdask.domain.validation import ValidationError, validate_count, validate_schedd_name
from workers.htcondor.queue_parser import DEGRADED
from workers.htcondor.schedd import ActResult, Schedd, ScheddError

log = logging.getLogger(__name__)


def to_submit(desc: SubmitDescription):
    """The htcondor2.Submit equal to `desc` (commands in order, same queue statement and items)."""
    import htcondor2
    sub = htcondor2.Submit(desc.commands())
    qargs = desc.queue_args()
    if qargs:
        sub.setQArgs(qargs)
    return sub


def ad_to_dict(ad) -> dict:
    """A classad2.ClassAd as the dict condor_q -json would have produced for it.

    One odd ad never fails a whole query: when the ad cannot be printed at once (a string value
    holding bytes that are not UTF-8 makes the bindings raise UnicodeDecodeError), it is converted
    attribute by attribute; an attribute that still fails becomes U+FFFD and is listed under
    `queue_parser.DEGRADED`, like the condor_q path does, with one log line naming the job.
    """
    try:
        return json.loads(ad.printJson())
    except (UnicodeError, ValueError):
        pass
    out, bad = {}, []
    for key in ad.keys():
        try:
            out.update(json.loads(_one_attribute(ad, key).printJson()))
        except (UnicodeError, ValueError):
            out[key] = "\ufffd"
            bad.append(key)
    if bad:
        out[DEGRADED] = bad
        log.warning("job %s.%s (cluster %s): attributes not printable as UTF-8 JSON replaced by U+FFFD: %s",
                    out.get("ClusterId"), out.get("ProcId"), out.get("DaskGatewayCluster"), ", ".join(bad))
    return out


def _one_attribute(ad, key: str):
    import classad2
    one = classad2.ClassAd()
    one[key] = ad.lookup(key)
    return one


def act_result(kind: str, result) -> ActResult:
    """ActResult from the ClassAd Schedd.act returns (TotalSuccess, TotalNotFound, ...)."""
    def total(name: str) -> int:
        try:
            return int(result.get(name, 0) or 0)
        except (TypeError, ValueError):
            return 0
    if result is None:
        return ActResult(True, "no jobs matched", matched=False)
    ok_n, nf, bad, done = (total("TotalSuccess"), total("TotalNotFound"), total("TotalBadStatus"),
                           total("TotalAlreadyDone"))
    err, denied = total("TotalError"), total("TotalPermissionDenied")
    message = (f"{kind}: {ok_n} succeeded, {nf} not found, {bad} bad status, {done} already done, "
               f"{denied} permission denied, {err} errors")
    if err or denied:
        raise ScheddError(message)
    return ActResult(True, message, matched=bool(ok_n or done))


class BindingsSchedd(Schedd):
    """htcondor2.Schedd behind the Schedd interface; the daemon is located on first use."""

    #: htcondor2.Submit holds one queue statement, so a CombinedDescription is not taken
    combines_descriptions = False

    def __init__(self, name: str | None = None):
        self.name = None if name in (None, "", "local") else validate_schedd_name(name)
        self._schedd = None

    def _get(self):
        if self._schedd is None:
            try:
                import htcondor2
                if self.name:
                    ad = htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, self.name)
                    self._schedd = htcondor2.Schedd(ad)
                else:
                    self._schedd = htcondor2.Schedd()
            except Exception as e:  # htcondor2.HTCondorException and friends
                where = f"schedd {self.name!r}" if self.name else "the local schedd"
                raise ScheddError(f"cannot reach {where} through htcondor2: {e}") from None
        return self._schedd

    def _call(self, what: str, fn, *args, **kwargs) -> Any:
        try:
            return fn(*args, **kwargs)
        except ScheddError:
            raise
        except Exception as e:
            raise ScheddError(f"htcondor2 {what} failed: {e}") from None

    @staticmethod
    def _check_user(user: str | None) -> None:
        if user is None:
            return
        entry = runas.check_user(user)
        if entry.pw_uid != os.geteuid():
            me = pwd.getpwuid(os.geteuid()).pw_name
            raise runas.UserRefused(user, f"the bindings backend runs as {me} and cannot act as another "
                                          "user in-process (use CONDOR_BACKEND=cli)")

    def submit(self, desc: SubmitDescription, user: str | None = None) -> list[str]:
        self._check_user(user)
        if not isinstance(desc, SubmitDescription):
            raise ValidationError("submit description", repr(desc), "the bindings backend takes one queue statement")
        sub = to_submit(desc)
        schedd = self._get()
        result = self._call("submit", schedd.submit, sub)
        cluster, first, n = result.cluster(), result.first_proc(), result.num_procs()
        ids = [f"{cluster}.{p}" for p in range(first, first + n)]
        log.info("submitted %d jobs to cluster %d", n, cluster)
        return ids

    def query(self, constraint: str = "true", projection: Sequence[str] | None = None) -> Iterator[dict]:
        proj = validate_projection(projection or [])
        schedd = self._get()
        ads = self._call("query", schedd.query, constraint, proj)
        return (ad_to_dict(ad) for ad in ads)

    def history(self, constraint: str | None = None, projection: Sequence[str] | None = None,
                limit: int | None = None) -> Iterator[dict]:
        proj = validate_projection(projection or [])
        match = -1 if limit is None else validate_count(limit, maximum=10**9, field="history limit")
        schedd = self._get()
        ads = self._call("history", schedd.history, constraint, proj, match)
        return (ad_to_dict(ad) for ad in ads)

    def _act(self, action, ids, constraint, user, reason) -> ActResult:
        spec: Any = ids if ids is not None else constraint
        # htcondor2 drops a bare str reason silently; it only honours a (text, code) tuple.
        why = None if reason is None else (reason, 0)
        self._check_user(user)
        import htcondor2
        schedd = self._get()
        res = self._call(action, schedd.act, getattr(htcondor2.JobAction, action.capitalize()), spec, why)
        return act_result(action, res)
