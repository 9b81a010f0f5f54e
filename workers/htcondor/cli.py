"""Schedd over the condor_* command-line tools (CONDOR_BACKEND=cli, the default).

The tools work with any HTCondor version and can run as the cluster's owner (see workers.runas),
which in-process bindings cannot.  Every command is an argv list (never a shell), bounded by
CONDOR_TIMEOUT (the whole process group is killed past it), and condor_q / condor_history output
is streamed from the pipe into the parser instead of being read whole.
"""
from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import IO, Iterator, Sequence

from htdask.domain import brief
from htdask.domain.submitdesc import CombinedDescription, SubmitDescription
from htdask.domain.submitvalues import validate_projection
from htdask.domain.validation import validate_count, validate_schedd_name
from htdask.settings import Settings, load
from workers import runas
from workers.htcondor.queue_parser import parse_ads, parse_terse_submit
from workers.htcondor.schedd import (ActResult, ParseError, Schedd, ScheddError, ScheddTimeout,
                                     check_constraint)

log = logging.getLogger(__name__)


# condor_rm/hold/release per-id lines that mean "nothing to do" rather than failure.
_BENIGN_ID_LINE = re.compile(r"^Job \S+ (not found|already marked for removal|already held|"
                             r"not held to be released)\Z")
_EMPTY_QUEUE = "There are no jobs in the queue"
_NOTHING_MATCHED = "Couldn't find/"


def command_timeout(settings: Settings | None = None) -> float:
    """CONDOR_TIMEOUT in seconds (htdask/settings/model.py; validated when the settings are loaded)."""
    return (settings or load()).condor_timeout


def find_program(name: str, settings: Settings | None = None) -> str:
    """Absolute path of condor_<x>: in CONDOR_BIN_DIR if set, else on PATH."""
    bin_dir = (settings or load()).condor_bin_dir
    if bin_dir:
        path = os.path.join(bin_dir, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise ScheddError(f"{name} not found in CONDOR_BIN_DIR={bin_dir}")
    path = shutil.which(name)
    if not path:
        raise ScheddError(f"{name} not found on PATH (install HTCondor or set CONDOR_BIN_DIR)")
    return os.path.abspath(path)


@dataclass
class Completed:
    """A finished short command: what interpret_act and the submit parser read."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int):
    """preexec_fn: SIGKILL the command if the process that started it dies.

    A Celery worker killed during `condor_submit` must not leave the submit running: killed before
    it commits, the schedd aborts the transaction, so the re-run reconcile never races a late commit.
    Set after the uid switch (a credential change clears the parent-death signal).
    """
    def preexec():
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


def _popen(argv: list[str], user: runas.RunAs | None, **kw) -> subprocess.Popen:
    """Start argv in its own process group, as `user` if given (env with their HOME/USER/LOGNAME)."""
    if _libc is not None:
        kw["preexec_fn"] = _die_with_parent(os.getpid())
    if user is not None:
        kw.update(user.popen_kwargs())
        kw.setdefault("env", user.env())
        if user.cwd() is not None:
            kw.setdefault("cwd", user.cwd())
    try:
        return subprocess.Popen(argv, start_new_session=True, **kw)
    except OSError as e:
        raise ScheddError(f"cannot run {os.path.basename(argv[0])}: {e}", argv) from None


def _widen_pipe(pipe) -> None:
    """A 1 MiB pipe lets condor_q write ahead while we parse (Linux; best effort)."""
    try:
        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except OSError:
        pass


def _shown(argv: list[str]) -> list[str]:
    """argv for a log line: each word cut to a few hundred characters (a constraint may be 16 KB)."""
    return [brief.text(a, 200) for a in argv]


def run(argv: list[str], user: runas.RunAs | None = None, timeout: float | None = None,
        stdin: str | None = None) -> Completed:
    """Run a short command to completion; ScheddTimeout (group killed) past the timeout."""
    timeout = command_timeout() if timeout is None else timeout
    prog = os.path.basename(argv[0])
    log.debug("run %s%s", _shown(argv), f" as {user.name}" if user else "")
    proc = _popen(argv, user, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(stdin.encode() if stdin is not None else None, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a grandchild escaped the group and holds the pipes
            out, err = b"", b""
        proc.kill()
        proc.wait()
        raise ScheddTimeout(f"{prog} did not finish within {timeout:g}s and was killed", argv, None,
                            err.decode(errors="replace")) from None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    return Completed(argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def stream(argv: list[str], user: runas.RunAs | None = None, timeout: float | None = None) -> Iterator[dict]:
    """Run a -json query command and yield its ads as the pipe delivers them.

    The timeout covers the whole command including the caller's consumption of the ads; past it
    the process group is killed and ScheddTimeout raised.  Closing the iterator early kills it too.
    """
    timeout = command_timeout() if timeout is None else timeout
    prog = os.path.basename(argv[0])
    log.debug("stream %s", _shown(argv))
    errfile: IO[bytes] = tempfile.TemporaryFile()
    proc = None
    timer = None
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        _kill_group(proc)

    def stderr_text() -> str:
        errfile.seek(0)
        return errfile.read(1 << 20).decode(errors="replace")

    try:
        proc = _popen(argv, user, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errfile)
        _widen_pipe(proc.stdout)
        timer = threading.Timer(timeout, on_timeout)
        timer.daemon = True
        timer.start()
        count = 0
        try:
            for ad in parse_ads(proc.stdout):
                count += 1
                yield ad
        except ParseError as e:
            rc = proc.wait()
            if timed_out.is_set():
                raise ScheddTimeout(f"{prog} did not finish within {timeout:g}s and was killed",
                                    argv, None, stderr_text()) from None
            if rc != 0:
                raise ScheddError(f"{prog} exited with status {rc}", argv, rc, stderr_text()) from None
            raise ParseError(f"{prog}: {e.message}", argv, rc, stderr_text()) from None
        rc = proc.wait()
        if timed_out.is_set():
            raise ScheddTimeout(f"{prog} did not finish within {timeout:g}s and was killed",
                                argv, None, stderr_text())
        if rc != 0:
            raise ScheddError(f"{prog} exited with status {rc}", argv, rc, stderr_text())
        log.debug("%s: %d ads", prog, count)
    finally:
        if timer is not None:
            timer.cancel()
        if proc is not None:
            if proc.poll() is None:
                _kill_group(proc)
            proc.stdout.close()
            proc.wait()
        errfile.close()


class CliSchedd(Schedd):
    """The condor_* tools against the local schedd, or the one named `name` (-name)."""

    def __init__(self, name: str | None = None, timeout: float | None = None, submit_via_stdin: bool = True,
                 settings: Settings | None = None):
        """`name` None or "local" = the local schedd; `timeout` overrides CONDOR_TIMEOUT;
        `submit_via_stdin` (default) pipes the description to `condor_submit -terse -` (condor_submit(1):
        "-" reads the submit description from standard input), so no file holds it (it may carry the
        gateway's API token) and none is left behind by a worker killed mid-submit; False writes a
        0600 temp file owned by the submitting user instead;
        `settings` (CONDOR_TIMEOUT, CONDOR_BIN_DIR) default to this process's (settings.load())."""
        self.name = None if name in (None, "", "local") else validate_schedd_name(name)
        self.settings = settings
        self.timeout = timeout if timeout is not None or settings is None else settings.condor_timeout
        self.submit_via_stdin = submit_via_stdin

    # --- helpers --------------------------------------------------------------------------------
    def _argv(self, prog: str, *args: str) -> list[str]:
        argv = [find_program(prog, self.settings)]
        if self.name:
            argv += ["-name", self.name]
        argv += list(args)
        return argv

    def _failed(self, res: Completed) -> ScheddError:
        return ScheddError(f"{os.path.basename(res.argv[0])} exited with status {res.returncode}",
                           res.argv, res.returncode, res.stderr)

    # --- submit ---------------------------------------------------------------------------------
    def submit(self, desc: SubmitDescription | CombinedDescription, user: str | None = None) -> list[str]:
        who = runas.resolve(user)  # refuses before anything runs
        text = desc.render()
        if self.submit_via_stdin:
            argv = self._argv("condor_submit", "-terse", "-")
            res = run(argv, who, self.timeout, stdin=text)
            return self._submitted(desc, argv, res, user)
        fd, path = tempfile.mkstemp(prefix="htdask-", suffix=".sub")
        try:
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o600)  # it may hold the gateway API token
                if who is not None and who.switch:
                    os.fchown(f.fileno(), who.uid, who.gid)
                f.write(text)
            argv = self._argv("condor_submit", "-terse", path)
            res = run(argv, who, self.timeout)
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        return self._submitted(desc, argv, res, user)

    def _submitted(self, desc: SubmitDescription | CombinedDescription, argv: list[str], res: Completed,
                   user: str | None) -> list[str]:
        if res.returncode != 0:
            raise self._failed(res)
        try:
            ids = parse_terse_submit(res.stdout)
        except ParseError as e:
            raise ParseError(e.message, argv, res.returncode, res.stderr) from None
        if len(ids) != desc.num_jobs:
            log.warning("condor_submit queued %d jobs, the description asked for %d", len(ids), desc.num_jobs)
        log.info("submitted %d jobs (%s..%s)%s", len(ids), ids[0], ids[-1], f" as {user}" if user else "")
        return ids

    # --- queries --------------------------------------------------------------------------------
    def query(self, constraint: str = "true", projection: Sequence[str] | None = None) -> Iterator[dict]:
        args = ["-allusers", "-json", "-constraint", check_constraint(constraint)]
        if projection:
            args += ["-attributes", ",".join(validate_projection(projection))]
        return stream(self._argv("condor_q", *args), None, self.timeout)

    def history(self, constraint: str | None = None, projection: Sequence[str] | None = None,
                limit: int | None = None) -> Iterator[dict]:
        args = ["-json"]
        if constraint is not None:
            args += ["-constraint", check_constraint(constraint)]
        if projection:
            args += ["-attributes", ",".join(validate_projection(projection))]
        if limit is not None:
            args += ["-limit", str(validate_count(limit, maximum=10**9, field="history limit"))]
        return stream(self._argv("condor_history", *args), None, self.timeout)

    # --- actions --------------------------------------------------------------------------------
    _PROGRAMS = {"remove": "condor_rm", "hold": "condor_hold", "release": "condor_release"}

    def _act(self, action, ids, constraint, user, reason) -> ActResult:
        prog = self._PROGRAMS[action]
        args: list[str] = ["-reason", reason] if reason is not None else []
        args += ids if ids is not None else ["-constraint", constraint]
        who = runas.resolve(user)
        res = run(self._argv(prog, *args), who, self.timeout)
        result = interpret_act(res)
        log.info("%s %s: %s", prog, brief.jobs(ids) if ids else brief.text(constraint), result.message)
        return result


def interpret_act(res: Completed) -> ActResult:
    """ActResult from condor_rm/hold/release's exit status and text (formats of src/condor_tools)."""
    out_lines = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
    err_lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
    if res.returncode == 0:
        if any(_EMPTY_QUEUE in ln for ln in err_lines):
            return ActResult(True, "no jobs matched (the queue is empty)", matched=False)
        return ActResult(True, brief.lines(out_lines) or "done")
    if any(_NOTHING_MATCHED in ln for ln in err_lines):
        # Nothing matched comes with an empty error-stack line; any other text (e.g.
        # "DCSchedd::actOnJobs:1:Can't insert constraint into ClassAd" for a bad constraint, or a
        # permission error) means the action failed.
        others = [ln for ln in err_lines if _NOTHING_MATCHED not in ln and not ln.startswith("Warning")]
        if not others:
            return ActResult(True, "no jobs matched", matched=False)
    if err_lines and all(_BENIGN_ID_LINE.match(ln) or ln.startswith("Warning") for ln in err_lines):
        message = brief.lines(out_lines + err_lines)
        return ActResult(True, message, matched=bool(out_lines))
    raise ScheddError(f"{os.path.basename(res.argv[0])} exited with status {res.returncode}",
                      res.argv, res.returncode, res.stderr)
