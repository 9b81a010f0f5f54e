"""Where worker jobs write their output, error and job event log, and reading them back (`cli.py logs`).

Every worker job of a cluster writes `<LOG_DIR>/<cluster>/<cluster>-<index>.<ClusterId>.<ProcId>.out` and
`.err` (one pair per job: a replacement that reuses a worker's name keeps the crashed job's error), and the
cluster's job event log `<cluster>.log` (htdask.domain.jobspec, `log_dir`). The directory belongs to the
jobs' Unix user (created by the Celery worker before the first submission, as root chowned to that
user); LOG_DIR itself is created world-writable with the sticky bit, like /tmp.
"""
from __future__ import annotations

import logging
import os
import pwd
import re
from pathlib import Path

from htdask.domain import validation

log = logging.getLogger(__name__)


def cluster_dir(log_dir: str, cluster: str) -> str:
    """The cluster's directory under LOG_DIR; `cluster` was checked where it entered (a DNS label)."""
    return os.path.join(log_dir, cluster)


def ensure_dir(path: str, user: str) -> None:
    """Create a cluster's log directory owned by `user` (mode 0755) if missing; its parent with 01777."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, exist_ok=True)
        os.chmod(parent, 0o1777)  # every job user makes its own cluster directories here
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    log.info("log directory %s created for %s", path, user)


def worker_files(path: str, cluster: str) -> dict[int, list[dict[str, Path]]]:
    """{worker index: [{"out": path, "err": path}, ...] oldest job first} of the log files in a cluster's
    log directory: `<cluster>-<index>.<ClusterId>.<ProcId>.out|err`, one pair per job (a worker's name is
    reused by its replacement); files of the older `<cluster>-<index>.out|err` form count as oldest."""
    pattern = re.compile(rf"^{re.escape(cluster)}-(\d+)(?:\.(\d+)\.(\d+))?\.(out|err)$")
    jobs: dict[int, dict[tuple[int, int], dict[str, Path]]] = {}
    if not os.path.isdir(path):
        return {}
    for entry in os.scandir(path):
        m = pattern.match(entry.name)
        if m:
            job = (int(m.group(2) or -1), int(m.group(3) or -1))
            jobs.setdefault(int(m.group(1)), {}).setdefault(job, {})[m.group(4)] = Path(entry.path)
    return {index: [by_job[job] for job in sorted(by_job)] for index, by_job in jobs.items()}


def tail(path: Path, n: int) -> list[str]:
    """The last n lines of a file (read from its end, so a big log costs little)."""
    if n <= 0:
        return []
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size, block, data = f.tell(), 1 << 16, b""
        while size > 0 and data.count(b"\n") <= n:
            step = min(block, size)
            size -= step
            f.seek(size)
            data = f.read(step) + data
    return data.decode(errors="replace").splitlines()[-n:]


def worker_index(cluster: str, worker: str, records: list[dict]) -> int:
    """The index of a worker given by name (from the job records) or as `<cluster>-<index>` or `<index>`."""
    for rec in records:
        if rec.get("name") == worker and isinstance(rec.get("index"), int):
            return rec["index"]
    m = re.fullmatch(rf"(?:{re.escape(cluster)}-)?(\d+)", worker)
    if not m:
        raise validation.ValidationError("worker", worker, f"is not a worker of cluster {cluster}")
    return int(m.group(1))


def lines(log_dir: str, cluster: str, worker: str | None, records: list[dict], n: int) -> list[str]:
    """The lines `cli.py logs` prints: for one worker (or each worker with logs), the last n lines of the
    output and error of its newest job and of the error of the job before it (if any), each block headed
    by its file. Raises FileNotFoundError when there are none."""
    path = cluster_dir(log_dir, cluster)
    files = worker_files(path, cluster)
    if worker is not None:
        index = worker_index(cluster, worker, records)
        files = {index: files[index]} if index in files else {}
    if not files:
        raise FileNotFoundError(f"no worker logs of cluster {cluster}"
                                + (f" worker {worker}" if worker else "") + f" in {path}")
    out = []
    for index in sorted(files):
        newest, *earlier = reversed(files[index])
        shown = [(newest, kind, "") for kind in ("out", "err")]
        if earlier:  # the job it replaced (e.g. one that crashed): its error says why
            shown.append((earlier[0], "err", " (the job before)"))
        for job, kind, note in shown:
            if kind in job:
                out.append(f"==> {job[kind]}{note} <==")
                out.extend(tail(job[kind], n))
    return out
