"""Job process bookkeeping: identity (pid + kernel start time), group kills, tag scans.

Every job runs in its own session/process group and carries ``_LOCALPOOL_JOB=<pool id>/<C.P>``
in its environment (like HTCondor's _CONDOR_ANCESTOR_* tracking), so processes that left
the group (setsid, daemonised children) are still found and killed: nothing is left behind.
"""
from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

TAG_VAR = "_LOCALPOOL_JOB"


def start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (clock ticks since boot), None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def same_process(pid: int | None, pid_start: int | None) -> bool:
    return bool(pid) and pid > 0 and pid_start is not None and start_time(pid) == pid_start


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False if it no longer exists (or is not ours)."""
    if pgid <= 1:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def job_tag(pool_id: str, cluster: int, proc: int) -> str:
    return f"{pool_id}/{cluster}.{proc}"


def tagged_pids(pool_id: str, tags: set[str] | None = None) -> list[int]:
    """Pids whose environment carries this pool's job tag (any job, or one of ``tags``)."""
    prefix = f"{TAG_VAR}={pool_id}/".encode()
    wanted = {f"{TAG_VAR}={t}".encode() for t in tags} if tags is not None else None
    me = os.getpid()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if prefix not in data:
            continue
        for entry in data.split(b"\0"):
            if entry.startswith(prefix) and (wanted is None or entry in wanted):
                found.append(pid)
                break
    return found


def kill_tagged(pool_id: str, tags: set[str] | None = None, sig: int = signal.SIGKILL) -> int:
    """Kill every process of this pool's jobs (or of the given job tags); returns how many."""
    n = 0
    for pid in tagged_pids(pool_id, tags):
        try:
            os.kill(pid, sig)
            n += 1
        except (ProcessLookupError, PermissionError):
            pass
    if n:
        log.info("killed %d leftover job process(es) by tag", n)
    return n


def exited(pid: int) -> bool:
    """True when the child `pid` has exited (not reaped: WNOWAIT) or is not our child."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def drain(fd: int) -> None:
    """Read a non-blocking fd (the runner's wake-up FIFO) until it is empty."""
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        pass
