"""Starting one job of the local pool as HTCondor's starter would: checks (universe, Owner, Iwd),
a scratch directory with the job ad, the job's environment, stdin/stdout/stderr opened with the
Owner's permissions, and the process under the Owner's uid/gid in a session of its own."""
from __future__ import annotations

import errno
import os
import pwd
import shutil
import subprocess
import time

from htdask_localpool import ads, envargs, paths, procs, transfer, userlog

RUNNABLE_UNIVERSES = (5, 7, 12)  # vanilla (and docker/container), scheduler, local: see jobad.UNIVERSES
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class Running:
    """A job process started by this runner."""

    __slots__ = ("key", "popen", "pid", "pid_start", "started", "term_sent", "tag", "scratch", "remote")

    def __init__(self, key, popen, tag, scratch):
        self.key = key
        self.popen = popen
        self.pid = popen.pid
        self.pid_start = procs.start_time(popen.pid)
        self.started = time.time()
        self.term_sent: float | None = None
        self.tag = tag
        self.scratch = scratch
        self.remote = None  # execute.Remote on a pool with separate execute hosts


class StartFailure(Exception):
    def __init__(self, code: int, subcode: int, reason: str):
        super().__init__(reason)
        self.code, self.subcode, self.reason = code, subcode, reason


def start_job(ad: dict, *, slot_name: str, pool_id: str, scratch_root) -> Running:
    """Start the job of `ad` as its Owner (the runner is root) in a fresh scratch directory under
    `scratch_root`; StartFailure(HoldReasonCode, subcode, reason) when it cannot start."""
    c, p = ad["ClusterId"], ad["ProcId"]
    if ad.get("JobUniverse", 5) not in RUNNABLE_UNIVERSES:  # e.g. a released grid job
        raise StartFailure(26, 0, f"Error from {slot_name}: the local pool cannot run JobUniverse "
                                  f"{ad.get('JobUniverse')} jobs (only vanilla, docker, container, "
                                  "local and scheduler)")
    pw = owner_entry(ad, slot_name)
    as_root = os.geteuid() == 0
    cmd = ad.get("Cmd") if isinstance(ad.get("Cmd"), str) else ""
    iwd = ad.get("Iwd") if isinstance(ad.get("Iwd"), str) and ad.get("Iwd") else "/"
    if not os.path.isdir(iwd):
        raise StartFailure(14, errno.ENOENT, f"Error from {slot_name}: Failed to access "
                                             f"initial working directory '{iwd}': No such file or directory")
    tag = procs.job_tag(pool_id, c, p)
    scratch = _make_scratch(scratch_root, pool_id, c, p, pw, ad)
    cwd = iwd
    if str(ad.get("ShouldTransferFiles") or "").upper() == "YES":
        # YES: the job runs in its sandbox with its input files, as HTCondor always does then (the
        # executable and stdout/stderr stay where they are on this one host; no output files come back)
        cwd = scratch
        try:
            transfer.transfer_input({**ad, "TransferExecutable": False, "In": None}, scratch, pw,
                                    access=paths.hostname(), slot=slot_name)
        except transfer.TransferFailure as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise StartFailure(exc.code, exc.subcode, exc.reason) from None
    env = {"PATH": DEFAULT_PATH, "HOME": pw.pw_dir}
    env.update(envargs.environment_from_ad(ad))
    cpus = ad.get("RequestCpus")
    env.update({
        "_CONDOR_SCRATCH_DIR": scratch,
        "_CONDOR_JOB_AD": os.path.join(scratch, ".job.ad"),
        "_CONDOR_JOB_IWD": iwd,
        "_CONDOR_SLOT": "slot1",
        "BATCH_SYSTEM": "HTCondor",
        procs.TAG_VAR: tag,
    })
    if type(cpus) is int and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(cpus)
    fds = []
    try:
        fds = userlog.as_owner(pw, lambda: _open_std(ad, iwd, slot_name))
        kwargs = {}
        if as_root and pw.pw_uid != 0:
            kwargs = dict(user=pw.pw_uid, group=pw.pw_gid,
                          extra_groups=os.getgrouplist(pw.pw_name, pw.pw_gid))
        argv = [cmd] + envargs.argv_from_ad(ad)
        try:
            popen = subprocess.Popen(argv, executable=cmd or "/nonexistent", cwd=cwd, env=env,
                                     stdin=fds[0], stdout=fds[1], stderr=fds[2],
                                     start_new_session=True, close_fds=True, **kwargs)
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            why = exc.strerror or str(exc)
            if exc.filename == cwd and cwd != cmd:  # the child could not chdir (as the owner)
                raise StartFailure(14, exc.errno or 0,
                                   f"Error from {slot_name}: Failed to change to initial working "
                                   f"directory '{iwd}': {why}")
            raise StartFailure(6, exc.errno or 0,
                               f"Error from {slot_name}: Failed to execute '{cmd}': {why}")
    except StartFailure:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        for fd in set(fds):
            os.close(fd)
    return Running((c, p), popen, tag, scratch)

def owner_entry(ad: dict, slot_name: str):
    """The passwd entry of the job's Owner; StartFailure(6, ...) if it has none or we cannot be it."""
    owner = ad.get("Owner") or ""
    try:
        pw = pwd.getpwnam(owner)
    except KeyError:
        raise StartFailure(6, 0, f"Error from {slot_name}: Failed to find user '{owner}' "
                                 f"on the execute machine")
    if os.geteuid() != 0 and pw.pw_uid != os.geteuid():
        me = paths.current_user()
        raise StartFailure(6, errno.EPERM, f"Error from {slot_name}: Cannot run the job as "
                                           f"user '{owner}': the pool's runner runs as '{me}', not root")
    return pw


def _make_scratch(scratch_root, pool_id: str, c: int, p: int, pw, ad: dict) -> str:
    paths.ensure_dir(scratch_root)
    path = scratch_root / f"dir_{pool_id}_{c}.{p}"
    shutil.rmtree(path, ignore_errors=True)
    os.mkdir(path, 0o700)
    (path / ".job.ad").write_text(ads.format_old(ad))
    if os.geteuid() == 0:
        os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chown(path / ".job.ad", pw.pw_uid, pw.pw_gid)
    return str(path)

def _open_std(ad: dict, iwd: str, slot_name: str) -> list[int]:
    """stdin/stdout/stderr fds, opened with the owner's permissions."""
    def path_of(attr):
        v = ad.get(attr)
        if not isinstance(v, str) or not v:
            return os.devnull
        return v if os.path.isabs(v) else os.path.join(iwd, v)

    fds: list[int] = []
    try:
        src = path_of("In")
        try:
            fds.append(os.open(src, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            raise StartFailure(8, exc.errno or 0,
                               f"Error from {slot_name}: Failed to open '{src}' as standard input: "
                               f"{exc.strerror} (errno {exc.errno})")
        out, err = path_of("Out"), path_of("Err")
        for name, what in ((out, "output"), (err, "error")):
            if name == out and what == "error" and err == out:
                fds.append(fds[1])
                continue
            try:
                fds.append(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666))
            except OSError as exc:
                raise StartFailure(7, exc.errno or 0,
                                   f"Error from {slot_name}: Failed to open '{name}' as standard "
                                   f"{what}: {exc.strerror} (errno {exc.errno})")
        return fds
    except StartFailure:
        for fd in set(fds):
            os.close(fd)
        raise
