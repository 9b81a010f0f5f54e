"""The pool's runner: starts idle jobs up to the slot count, reaps them, kills removed
and held ones, and moves finished jobs to history.

Single-threaded loop woken by SIGCHLD (via signal.set_wakeup_fd), by commands writing to
the wake FIFO, or every POLL_S.  State transitions are written in short BEGIN IMMEDIATE
transactions; process spawning happens outside them.  The runner is normally root and
starts each job under its Owner's uid/gid; a non-root runner holds jobs of other users.
"""
from __future__ import annotations

import fcntl
import logging
import os
import select
import shutil
import signal
import stat
import subprocess
import time

from htdask_localpool import daemon, execute, hosts, machine, paths, policy, procs, reaping, spawn, store, userlog

log = logging.getLogger(__name__)

POLL_S = 0.1


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class Runner:
    def __init__(self, files: paths.PoolFiles):
        self.files = files
        self.slots = max(0, int(_env_float("LOCALPOOL_SLOTS", 64)))
        self.grace = _env_float("LOCALPOOL_KILL_GRACE", 1.0)
        self.idle_exit = _env_float("LOCALPOOL_IDLE_EXIT", 900.0)
        self.host = paths.hostname()
        self.slot_name = f"slot1@{self.host}"
        self.jobs: dict[tuple[int, int], spawn.Running] = {}
        self.stopping = False
        self.last_activity = time.monotonic()
        self.con = None
        self.pool_id = ""
        self.periodic_every = _env_float("LOCALPOOL_PERIODIC_INTERVAL", 1.0)
        self.next_periodic = 0.0
        self.expr_cache: dict = {}
        self.execute: execute.ExecuteSide | None = None  # LOCALPOOL_EXECUTE_HOSTS
        self.unmatched: set = set()  # idle jobs no execute host matches

    # ------------------------------------------------------------ lifecycle

    def main(self) -> int:
        self.lock_fd = lock_fd = paths.open_shared(self.files.runner_lock, os.O_RDWR)
        deadline = time.monotonic() + 2.0
        while True:  # commands take brief shared locks to test it; a real runner never lets go
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    log.info("another runner holds %s; exiting", self.files.runner_lock)
                    return 0
                time.sleep(0.01)
        fd = paths.open_shared(self.files.pidfile, os.O_WRONLY | os.O_TRUNC)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        fifo = self._open_fifo()
        self.con = store.connect(self.files)
        self.pool_id = store.pool_id(self.con)
        try:
            self.execute = execute.open_side(self.files)
        except (hosts.SettingError, RuntimeError, OSError) as exc:
            log.error("cannot make the execute hosts: %s", exc)
            hosts.teardown(self.files.root)
            return 1
        with store.transaction(self.con):
            store.set_meta(self.con, "runner_pid", os.getpid())
            store.set_meta(self.con, "runner_slots", self.slots)
            store.set_meta(self.con, "execute_hosts", len(self.execute.plan.hosts) if self.execute else 0)
            slot = machine.slot_ad(self.host, str(self.files.root))  # what a startd advertises (machine.py)
            store.set_meta(self.con, "machine_ad", machine.dumps(slot))
        self.matcher = machine.Matcher(slot)
        log.info("runner pid %d started: pool %s, %d slots, uid %d", os.getpid(), self.files.root,
                 self.slots, os.geteuid())
        self.recover()
        try:
            while not self.stopping:
                try:
                    self.tick()
                except Exception:  # keep serving: a bad job ad must not take the pool down
                    log.exception("runner step failed; retrying")
                    time.sleep(0.5)
                if self.stopping or self._idle_exit():
                    break
                if not os.path.isdir(self.files.root):  # the pool was deleted under us: nothing to serve
                    log.warning("pool directory %s is gone; stopping", self.files.root)
                    break
                timeout = POLL_S
                try:
                    ready, _, _ = select.select([fifo, wake_r], [], [], timeout)
                except InterruptedError:
                    ready = []
                for fd_ in ready:
                    procs.drain(fd_)
        finally:
            self.shutdown()
            exit_fd = getattr(self, "_exit_lock_fd", None)
            if exit_fd is not None:  # idle exit: drop the runner lock *before* start.lock
                os.close(self.lock_fd)
                os.close(exit_fd)
        return 0

    def _on_term(self, *_):
        self.stopping = True

    def _open_fifo(self) -> int:
        path = self.files.wake
        try:
            st = os.stat(path)
            if not stat.S_ISFIFO(st.st_mode):
                os.unlink(path)
                raise FileNotFoundError
        except FileNotFoundError:
            with paths.open_umask(0):
                try:
                    os.mkfifo(path, 0o666)
                except FileExistsError:
                    pass
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    def _idle_exit(self) -> bool:
        """Exit after LOCALPOOL_IDLE_EXIT seconds with nothing to run (next command restarts us)."""
        if self.jobs or self.idle_exit <= 0:
            self.last_activity = time.monotonic()
            return False
        if time.monotonic() - self.last_activity < self.idle_exit:
            return False
        try:
            fd = paths.open_shared(self.files.start_lock, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        busy = self.con.execute(
            "SELECT 1 FROM jobs WHERE (seeded=0 AND status=1) OR pid IS NOT NULL LIMIT 1").fetchone()
        if busy:
            os.close(fd)
            self.last_activity = time.monotonic()
            return False
        log.info("idle for %.0fs; exiting", self.idle_exit)
        self._exit_lock_fd = fd  # released when the process exits, after the runner lock
        return True

    # ------------------------------------------------------------ main step

    def tick(self) -> None:
        finished = self._reap()
        if self.jobs:
            self._enforce()
        if finished:
            self._record_finished(finished)
        if time.monotonic() >= self.next_periodic:
            self.next_periodic = time.monotonic() + self.periodic_every
            self._periodic()
        if len(self.jobs) < self.slots and not self.stopping:
            self._start_idle()

    def _periodic(self) -> None:
        self.unmatched.clear()  # released or edited jobs are matched again
        events = userlog.Pending(self.host)
        policy.apply_periodic(self.con, self.expr_cache, events)
        events.write()

    def _reap(self) -> list:
        finished = []
        for key, job in list(self.jobs.items()):
            try:
                info = os.waitid(os.P_PID, job.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = True
            if info is None:
                continue
            procs.kill_group(job.pid, signal.SIGKILL)  # what the job left in its group
            rc = job.popen.wait()
            del self.jobs[key]
            finished.append((job, rc))
        if finished:
            procs.kill_tagged(self.pool_id, {j.tag for j, _ in finished})
            for job, _ in finished:  # output comes back from a job that exited, not a removed or held one
                row = self.con.execute("SELECT status FROM jobs WHERE cluster=? AND proc=?", job.key).fetchone()
                self._cleanup(job, exited=bool(row) and row[0] == 2)
        return finished

    def _cleanup(self, job, exited: bool) -> None:
        """After a job's processes are gone: its output transfer (execute hosts), its scratch."""
        if job.remote is not None:
            self.execute.finish(job, exited)
        elif job.scratch:
            shutil.rmtree(job.scratch, ignore_errors=True)

    def _enforce(self) -> None:
        """Kill jobs whose queue status is no longer Running or Suspended (removed, held, released...)."""
        rows = self.con.execute("SELECT cluster, proc, status FROM jobs WHERE pid IS NOT NULL").fetchall()
        status = {(c, p): s for c, p, s in rows}
        now = time.time()
        for key, job in self.jobs.items():
            if status.get(key) in (2, 6, 7):  # running, transferring output, suspended (condor_suspend)
                continue
            if job.term_sent is None:
                log.info("job %d.%d: stopping process group %d (status %s)", *key, job.pid, status.get(key))
                procs.kill_group(job.pid, signal.SIGTERM)
                job.term_sent = now
            elif now - job.term_sent >= self.grace:
                procs.kill_group(job.pid, signal.SIGKILL)
                procs.kill_tagged(self.pool_id, {job.tag})

    def _record_finished(self, finished) -> None:
        reaping.record_finished(self.con, finished, self.host, self.slot_name, self.expr_cache)

    def _start_idle(self) -> None:
        free = self.slots - len(self.jobs)
        keys = self.con.execute(  # jobs no slot matched (their Requirements never change here) are passed over
            "SELECT cluster, proc FROM jobs WHERE seeded=0 AND status=1 AND pid IS NULL AND ad NOT LIKE "
            "'%\"LastRejMatchReason\"%' ORDER BY cluster, proc LIMIT ?", (free + len(self.unmatched),)).fetchall()
        keys = [k for k in keys if k not in self.unmatched][:free]
        if not keys:
            return
        self.last_activity = time.monotonic()
        now = int(time.time())
        to_start = []
        events = userlog.Pending(self.host)
        with store.transaction(self.con):
            for c, p in keys:
                row = store.load_job(self.con, c, p)
                if row is None or row[0] != 1 or row[1] is not None:
                    continue
                ad = row[2]
                if self.execute and ad.get("JobUniverse", 5) == 5 and not self.execute.matches(ad):
                    self.unmatched.add((c, p))  # stays Idle, as an unmatched job does
                    continue
                if not self.matcher.matches(ad):  # negotiation: no slot ad satisfies its Requirements
                    machine.reject(ad, now)
                    store.save_job(self.con, ad, pid=None, pid_start=None)
                    continue
                ad["NumJobStarts"] = int(ad.get("NumJobStarts") or 0) + 1
                ad["JobRunCount"] = int(ad.get("JobRunCount") or 0) + 1
                if not ad.get("JobStartDate"):
                    ad["JobStartDate"] = now
                ad["JobCurrentStartDate"] = now
                if self._take_hold_fault():
                    mem = ad.get("RequestMemory")
                    mem = mem if type(mem) is int else 128
                    store.set_status(ad, 2, now)
                    self._hold(ad, 34, 0, f"Error from {self.slot_name}: Job has gone over memory limit of "
                               f"{mem} megabytes. Peak usage: {mem + 1} megabytes.", now)
                    store.save_job(self.con, ad, pid=None, pid_start=None)
                    events.add(userlog.EXECUTE, ad, now)
                    events.add(userlog.HELD, ad, now)
                    continue
                store.set_status(ad, 2, now)
                ad["RemoteHost"] = self.slot_name
                store.save_job(self.con, ad, pid=0, pid_start=None)
                to_start.append(ad)
        results = []
        for ad in to_start:
            try:
                if self.execute and ad.get("JobUniverse", 5) == 5:
                    job = self.execute.start(ad, self.pool_id)
                else:  # local and scheduler universe jobs run on the submit host, as in HTCondor
                    job = spawn.start_job(ad, slot_name=self.slot_name, pool_id=self.pool_id,
                                          scratch_root=self.files.scratch)
                    ad["JobPid"] = job.pid
                self.jobs[job.key] = job  # tracked at once, whatever happens to the transaction below
                results.append((ad, job, None))
            except spawn.StartFailure as exc:
                results.append((ad, None, exc))
            except Exception as exc:  # holds this job alone: never a Running job without a process
                log.exception("job %d.%d: starting it failed", ad["ClusterId"], ad["ProcId"])
                where = ad.get("RemoteHost") or self.slot_name
                failure = spawn.StartFailure(6, 0, f"Error from {where}: Failed to start the job: {exc}")
                results.append((ad, None, failure))
        now = int(time.time())
        with store.transaction(self.con):
            for ad, job, failure in results:
                key = (ad["ClusterId"], ad["ProcId"])
                row = store.load_job(self.con, *key)
                if job is not None:
                    if row is not None:  # what the starter and shadow publish about the running job
                        cur = row[2]
                        cur.update({k: v for k, v in ad.items() if k in execute.PUBLISHED
                                    or k.endswith("_HostPort")})
                        store.save_job(self.con, cur, pid=job.pid, pid_start=job.pid_start)
                    events.add(userlog.EXECUTE, ad, now)
                    log.info("job %d.%d started: pid %d", *key, job.pid)
                    continue
                log.info("job %d.%d failed to start: %s", *key, failure.reason)
                if row is None:
                    continue
                status, _pid, cur = row
                if status == 3:
                    store.move_to_history(self.con, cur)
                    continue
                if status == 2:
                    self._hold(cur, failure.code, failure.subcode, failure.reason, now)
                    events.add(userlog.HELD, cur, now)  # the shadow never started it: no 001
                store.save_job(self.con, cur, pid=None, pid_start=None)
        events.write()

    def _take_hold_fault(self) -> bool:
        left = store.get_meta(self.con, "fault_hold_next", 0) or 0
        if left <= 0:
            return False
        store.set_meta(self.con, "fault_hold_next", left - 1)
        return True

    _hold = staticmethod(policy.hold)

    # ------------------------------------------------------------ recovery / shutdown

    def recover(self) -> None:
        """Processes recorded by a previous runner can't be reaped by us: kill them, requeue."""
        rows = self.con.execute("SELECT cluster, proc, pid, pid_start FROM jobs WHERE pid IS NOT NULL").fetchall()
        for _c, _p, pid, pid_start in rows:
            if procs.same_process(pid, pid_start):
                procs.kill_group(pid, signal.SIGKILL)
        procs.kill_tagged(self.pool_id)
        if rows:
            log.info("recovering %d job(s) left by a previous runner", len(rows))
            daemon.release_processes(self.con, [(c, p) for c, p, _a, _b in rows])

    def shutdown(self) -> None:
        if self.jobs:
            log.info("stopping %d job(s)", len(self.jobs))
            for job in self.jobs.values():
                procs.kill_group(job.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.grace
            while time.monotonic() < deadline and any(
                    procs.exited(j.pid) is False for j in self.jobs.values()):
                time.sleep(0.02)
            for job in self.jobs.values():
                procs.kill_group(job.pid, signal.SIGKILL)
            procs.kill_tagged(self.pool_id)
            for job in self.jobs.values():
                try:
                    job.popen.wait(5)
                except subprocess.TimeoutExpired:
                    pass
                self._cleanup(job, exited=False)
            try:
                daemon.release_processes(self.con, list(self.jobs))
            except Exception:  # pragma: no cover - keep shutting down
                log.exception("could not requeue running jobs")
            self.jobs.clear()
        try:
            with store.transaction(self.con):
                store.set_meta(self.con, "runner_pid", None)
        except Exception:  # pragma: no cover
            pass
        if self.execute is not None:
            self.execute.close()
        try:
            with open(self.files.pidfile, "w"):
                pass
        except OSError:
            pass
        log.info("runner pid %d exiting", os.getpid())


def run() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    files = paths.PoolFiles(paths.ensure_pool_dir())
    return Runner(files).main()
