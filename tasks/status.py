"""A cluster's status as every reader shows it: `status` (table and --json), `jobs`, the exporter's
status page and metrics. One row per cluster, built from the cluster's record and the poller's summary
(state keys `cluster:<name>`, `summary:<name>`), and one list of notes that says why a cluster is not
where it should be, in the same words everywhere.

A row holds
- a count per JobStatus (`htdask.domain.jobstatus.KEYS`: idle, running, removed, completed, held,
  transferring_output, suspended); completed/removed include the jobs that left the queue;
- `ended`: the jobs that left the queue by how they ended (`htdask.domain.jobend.end_kind`: `exit_code_N`,
  `signal_N`, `removed`);
- `owner`: the Unix user the jobs run as (the jobs' Owner, else the requested owner, else DEFAULT_OWNER);
- `unmatched`: idle jobs whose last negotiation found no slot, by LastRejMatchReason;
- `scheduler`: what the cluster's Dask scheduler said at the last poll (tasks/poll.py): its address,
  running jobs, how many of their workers are connected, those that are not, or why it could not be asked;
- `crash_loop` and `note`: a crash loop while it lasts (tasks/ended.py);
- `held_reasons`, `held_kept` (holds a person made, left alone).
"""
from __future__ import annotations

import time

from htdask.domain.jobend import ended_text
from htdask.domain.jobstatus import KEYS, JobStatus, kept_hold, title
from tasks import ended
from tasks.config import settings


def crash_note(record, now: float) -> str | None:
    """'4 workers exited within 2 min (exit code 1), next try in 80 s' while a crash loop lasts, else None."""
    if record is None:
        return None
    return ended.note(record.backoff_until, record.backoff_reason, record.crash_loop_until, now)


def owner_of(record, summary: dict) -> str | None:
    """The Unix user the cluster's jobs run as: their Owner (from the poll), else the requested owner,
    else DEFAULT_OWNER (None when the worker's own user, unknown here, is used)."""
    return summary.get("owner") or (record.owner if record else None) or settings().default_owner


def annotate_job(rec: dict, now: float | None = None) -> dict:
    """Add to a job record (`htdask jobs`): `kept_hold` (held by a person: HoldReasonCode 1 or
    HOLD_KEEP_CODES), `state` (its JobStatus in words, with why it waits) and `seconds_in_state`."""
    now = time.time() if now is None else now
    rec["kept_hold"] = kept_hold(rec.get("status"), rec.get("hold_code"), settings().hold_keep_codes)
    rec["state"] = title(rec.get("status"))
    if rec["kept_hold"]:
        rec["state"] += " (user/admin hold, left alone)"
    elif rec.get("status") == JobStatus.IDLE and rec.get("match_reason"):
        rec["state"] += f" (no slot matches: {rec['match_reason']})"
    rec["seconds_in_state"] = round(now - rec["since"], 1) if rec.get("since") else None
    return rec


def _counts(value) -> dict[str, int]:
    return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}


def cluster_row(name: str, record, summary: dict, now: float) -> dict:
    """A cluster's row (see the module docstring; staleness is the caller's)."""
    row = {"name": name, "desired": record.desired if record else None,
           **{key: int(summary.get(key) or 0) for key in KEYS},
           "ended": _counts(summary.get("ended")),
           "unmatched": _counts(summary.get("unmatched")),
           "scheduler": summary.get("scheduler") if isinstance(summary.get("scheduler"), dict) else None,
           "held_reasons": summary.get("held_reasons") or {},
           # holds a person made (condor_hold, HOLD_KEEP_CODES): never released or replaced
           "held_kept": summary.get("held_kept") or {},
           "owner": owner_of(record, summary),
           "error": record.error if record else None,
           "note": crash_note(record, now),
           "quota_note": record.quota_note if record else None}
    row["crash_loop"] = row["note"] is not None
    row["notes"] = notes(row, now)
    return row


def _ago(since, now: float) -> str:
    return f", running {now - since:.0f} s" if isinstance(since, (int, float)) else ""


def scheduler_note(s: dict, now: float) -> str | None:
    """'1 of 2 running workers connected to tcp://h:8786; not connected: c-1 (job 5.0, running 40 s)'."""
    if s.get("error"):
        return f"scheduler {s.get('address')} {s['error']} ({s.get('running', 0)} jobs running)"
    if s.get("connected") is None or s["connected"] == s.get("running"):
        return None
    missing = ", ".join(f"{n or '?'} (job {j}{_ago(since, now)})" for j, n, since in s.get("not_connected") or [])
    return (f"{s['connected']} of {s.get('running')} running workers connected to {s.get('address')}"
            + (f"; not connected: {missing}" if missing else ""))


def notes(row: dict, now: float) -> list[str]:
    """Why the cluster is not where it should be, one phrase each (CLI NOTE column, status page)."""
    out = []
    if row.get("error"):
        out.append(f"error: {row['error']}")
    if row.get("note"):
        out.append(f"crash loop: {row['note']}")
    if row.get("quota_note"):
        out.append(f"cut down by quota: {row['quota_note']}")
    if row.get("scheduler"):
        line = scheduler_note(row["scheduler"], now)
        if line:
            out.append(line)
    for reason, n in sorted((row.get("unmatched") or {}).items()):
        out.append(f"{n} idle job{'s' if n != 1 else ''} no slot matches ({reason})")
    kept = row.get("held_kept") or {}
    for reason, n in (row.get("held_reasons") or {}).items():
        out.append(f"held x{n}{' by a user/admin, left alone' if reason in kept else ''}: {reason}")
    text = ended_text(row.get("ended") or {})
    if text:
        out.append(f"ended: {text}")
    return out


def add_limits(row: dict, fields: dict, defaults: dict, culled: dict | None = None) -> None:
    """Add a cluster's idle and lifetime limits to its row: `limits` (effective seconds, 0: none; its own
    values over the site's defaults), `idle_state` (what the last limits pass read from its scheduler:
    `idle`, `busy`, or why it was not asked: not counted as idle), `culled` ({reason, detail} once a limit
    deleted it), and the note saying so."""
    from htdask.domain import limits as lim
    own = {k: float(fields[k]) for k in lim.KINDS if fields.get(k) not in (None, "")}
    row["limits"] = dict(vars(lim.effective(own, defaults)))
    row["deleted"] = False
    row["idle_state"] = fields.get("idle_state") or None
    if fields.get("culled"):
        row["culled"] = {"reason": fields["culled"], "detail": fields.get("culled_detail") or ""}
        row["notes"].insert(0, f"deleting: {row['culled']['detail']} ({row['culled']['reason']} limit)")
    elif culled:
        row["culled"] = {"reason": culled.get("reason"), "detail": culled.get("detail") or ""}
        row["notes"].insert(0, f"deleted: {row['culled']['detail']} ({row['culled']['reason']} limit)")
    else:
        row["culled"] = None
        state = row["idle_state"]
        if state and state not in ("idle", "busy") and row["limits"]["idle_timeout"]:
            row["notes"].append(f"idle check: {state}")


def culled_row(name: str, doc: dict, now: float) -> dict:
    """The row of a cluster a limit deleted (its record is gone): who, where, why and when."""
    at = float(doc.get("at") or now)
    row = {"name": name, "desired": None, **{key: 0 for key in KEYS}, "ended": {}, "unmatched": {},
           "scheduler": None, "held_reasons": {}, "held_kept": {}, "owner": doc.get("owner") or None,
           "error": None, "note": None, "crash_loop": False, "polled_at": None, "age": None, "stale": False,
           "stale_reason": None, "poll_error": None, "unparsed": 0, "degraded": 0,
           "schedd": doc.get("schedd") or None, "managed_by": None, "user": None, "limits": None,
           "idle_state": None, "deleted": True,
           "culled": {"reason": doc.get("reason"), "detail": doc.get("detail") or "", "ago": round(now - at, 1)}}
    row["notes"] = [f"deleted {now - at:.0f} s ago: {row['culled']['detail']} ({row['culled']['reason']} limit)"]
    return row
