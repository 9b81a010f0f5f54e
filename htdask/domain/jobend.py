"""How a job ended, described once: the ended-job record and its words.

An ended-job record is a JSON-ready dict: `job_id` ("C.P"), `name` (DaskWorkerName), `index`,
`status` (JobStatus 3 removed / 4 completed), `exit_code`, `exit_signal` (set only when ExitBySignal),
`remove_reason`, `ended_at` (epoch s). The poller and the reconciler make them from condor_history ads
(`record_of`), the gateway from job event log events (005 terminated, 009 aborted).

How it ended (`end_kind`), from HTCondor's ExitBySignal / ExitSignal / ExitCode / JobStatus:
- `exit_code_<N>`: the job's program exited with code N (0 is the only success);
- `signal_<N>`: it was killed by signal N;
- `removed`: condor_rm, a periodic_remove, the controller scaling down;
- `unknown`: a completed job whose ad has neither (an odd ad).
The kinds are bounded (exit codes 0..255, signals 1..64): they are the `reason` label of
`htdask_jobs_ended_total` and the keys of a summary's `ended` counts; `end_words` says them to people
(`status`, `jobs`, the status page, the gateway's logs).
"""
from __future__ import annotations

from htdask.domain.jobstatus import JobStatus

#: the attributes of a history ad `record_of` reads
HISTORY_ATTRIBUTES = ("ClusterId", "ProcId", "JobStatus", "DaskWorkerName", "DaskWorkerIndex", "ExitCode",
                      "ExitBySignal", "ExitSignal", "RemoveReason", "CompletionDate", "EnteredCurrentStatus")


def _int(v):
    return v if type(v) is int else None


def record_of(ad: dict) -> dict:
    """The ended-job record of one history ad (see the module docstring)."""
    ended_at = _int(ad.get("CompletionDate")) or _int(ad.get("EnteredCurrentStatus"))
    return {"job_id": f"{ad.get('ClusterId')}.{ad.get('ProcId')}", "name": ad.get("DaskWorkerName"),
            "index": _int(ad.get("DaskWorkerIndex")), "status": _int(ad.get("JobStatus")),
            "exit_code": _int(ad.get("ExitCode")),
            "exit_signal": _int(ad.get("ExitSignal")) if ad.get("ExitBySignal") is True else None,
            "remove_reason": ad.get("RemoveReason") if type(ad.get("RemoveReason")) is str else None,
            "ended_at": ended_at}


def end_kind(record: dict) -> str:
    """'exit_code_1', 'signal_9', 'removed' or 'unknown' (see the module docstring)."""
    if record.get("status") == JobStatus.REMOVED:
        return "removed"
    if record.get("exit_signal") is not None:
        return f"signal_{record['exit_signal']}"
    if record.get("exit_code") is not None:
        return f"exit_code_{record['exit_code']}"
    return "unknown"


def end_words(kind: str) -> str:
    """'exit code 1', 'killed by signal 9', 'removed', 'unknown end' for a kind of `end_kind`."""
    if kind.startswith("exit_code_"):
        return f"exit code {kind[10:]}"
    if kind.startswith("signal_"):
        return f"killed by signal {kind[7:]}"
    return "unknown end" if kind == "unknown" else kind


def how(record: dict) -> str:
    """How one job ended, in words: 'exit code 1', 'killed by signal 9', 'removed: <reason>'."""
    kind = end_kind(record)
    if kind == "removed":
        return f"removed: {record.get('remove_reason') or 'no reason given'}"
    if kind == "unknown":
        return f"JobStatus {record.get('status')}, no exit code"
    return end_words(kind)


def failed(kind: str) -> bool:
    """True for an end that is not a success: a non-zero exit code or a signal (not a removal)."""
    return kind.startswith("signal_") or (kind.startswith("exit_code_") and kind != "exit_code_0")


def ended_text(counts: dict[str, int]) -> str:
    """'5 exit code 1, 2 exit code 0, 1 removed' from end-kind counts: failures first, most first."""
    items = [(k, n) for k, n in counts.items() if n]
    items.sort(key=lambda kn: (not failed(kn[0]), kn[0] == "removed", -kn[1], kn[0]))
    return ", ".join(f"{n} {end_words(k)}" for k, n in items)


def describe(record: dict, before_connect: bool = True) -> str:
    """One line about an ended job for the gateway's checks: 'job 7.1 ended before its worker connected:
    exit code 3' (or 'was removed ...: <reason>')."""
    job = record.get("job_id")
    when = " before its worker connected" if before_connect else ""
    if end_kind(record) == "removed":
        return f"job {job} was removed{when}: {record.get('remove_reason') or 'no reason given'}"
    return f"job {job} ended{when}: {how(record)}"
