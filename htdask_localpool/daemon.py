"""Starting, finding, waking and stopping a pool's runner.

The runner holds an exclusive flock on runner.lock for its whole life: that, not the
pidfile, says whether it is running (no pid-reuse mistakes).  Commands take start.lock
around "is it running? else start it", so two commands never start two runners and a
runner that decides to exit when idle cannot race a command that just queued a job.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import sys
import time

from htdask_localpool import hosts, paths, procs, store, userlog

log = logging.getLogger(__name__)

START_WAIT_S = 5.0


def runner_running(files: paths.PoolFiles) -> bool:
    try:
        fd = os.open(files.runner_lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)  # also drops our shared lock
    return False


def runner_pid(files: paths.PoolFiles) -> int | None:
    try:
        text = files.pidfile.read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


class _StartLock:
    def __init__(self, files: paths.PoolFiles):
        self.files = files

    def __enter__(self):
        self.fd = paths.open_shared(self.files.start_lock, os.O_RDWR)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def start_lock(files: paths.PoolFiles) -> _StartLock:
    return _StartLock(files)


def ensure_runner(files: paths.PoolFiles | None = None) -> bool:
    """Start the pool's runner in the background unless it runs; True if one was started.
    hosts.SettingError (one line) when LOCALPOOL_EXECUTE_HOSTS cannot be honoured."""
    files = files or paths.PoolFiles(paths.ensure_pool_dir())
    with start_lock(files):
        if runner_running(files):
            return False
        hosts.wanted()  # refused here, where the caller can print it, not only in the runner's log
        try:  # the new runner writes its pid here once it holds the runner lock
            os.close(paths.open_shared(files.pidfile, os.O_WRONLY | os.O_TRUNC))
        except OSError:
            pass
        _spawn(files)
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            if runner_pid(files) and runner_running(files):
                return True
            time.sleep(0.005)
        log.warning("runner did not take its lock within %.0fs (see %s)", START_WAIT_S, files.runner_log)
        return True


def _spawn(files: paths.PoolFiles) -> None:
    """Double-fork + new session + exec of ``python -m htdask_localpool _runner``."""
    env = dict(os.environ)
    env["LOCALPOOL_DIR"] = str(files.root)
    env.pop("_LOCALPOOL_REEXEC", None)
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(paths.REPO_ROOT) + (os.pathsep + pp if pp else "")
    argv = [sys.executable, "-m", "htdask_localpool", "_runner"]
    logfd = paths.open_shared(files.runner_log, os.O_WRONLY | os.O_APPEND)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.chdir("/")
            os.umask(0o022)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(logfd, 1)
            os.dup2(logfd, 2)
            os.closerange(3, 65536)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(logfd)
    os.waitpid(pid, 0)


def wake(files: paths.PoolFiles) -> None:
    """Tell the runner the queue changed (best effort, never blocks)."""
    try:
        fd = os.open(files.wake, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, b"w")
    except OSError:
        pass
    finally:
        os.close(fd)


def stop(files: paths.PoolFiles, timeout: float = 15.0) -> str:
    """Stop the runner and kill every job process of the pool; idempotent."""
    if not files.root.is_dir():
        return "not running"
    with start_lock(files):
        said = "not running"
        pid = runner_pid(files)
        if runner_running(files):
            said = f"stopped runner pid {pid}"
            if pid:
                _signal(pid, signal.SIGTERM)
            if not _wait_unlocked(files, timeout) and pid:
                _signal(pid, signal.SIGKILL)
                _wait_unlocked(files, 5.0)
        _kill_leftovers(files)
        hosts.teardown(files.root)  # the execute hosts' namespaces and veths, if the runner left them
        try:
            with open(files.pidfile, "w"):
                pass
        except OSError:
            pass
        return said


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_unlocked(files: paths.PoolFiles, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not runner_running(files):
            return True
        time.sleep(0.02)
    return not runner_running(files)


def _kill_leftovers(files: paths.PoolFiles) -> None:
    """Kill job processes recorded in the queue or tagged with this pool; requeue their jobs."""
    if not files.db.exists():
        return
    con = store.connect(files)
    try:
        pool = store.pool_id(con)
        rows = con.execute("SELECT cluster, proc, pid, pid_start FROM jobs WHERE pid IS NOT NULL").fetchall()
        for _c, _p, pid, pid_start in rows:
            if procs.same_process(pid, pid_start):
                procs.kill_group(pid, signal.SIGKILL)
        procs.kill_tagged(pool)
        if rows:
            release_processes(con, [(c, p) for c, p, _pid, _ps in rows])
    finally:
        con.close()


def release_processes(con, keys) -> None:
    """Jobs whose process is gone without a result: Running -> Idle (event 004, evicted, in the job's
    event log), Removed -> history."""
    now = int(time.time())
    events = userlog.Pending(paths.hostname())
    with store.transaction(con):
        for c, p in keys:
            row = store.load_job(con, c, p)
            if row is None:
                continue
            status, _pid, ad = row
            if status == 3:
                store.move_to_history(con, ad)
                continue
            if status == 2:
                store.set_status(ad, 1, now)
                ad.pop("RemoteHost", None)
                ad.pop("JobPid", None)
                events.add(userlog.EVICTED, {k: v for k, v in ad.items()
                                             if k not in ("ExitCode", "ExitBySignal")}, now)
            store.save_job(con, ad, pid=None, pid_start=None)
    events.write()
