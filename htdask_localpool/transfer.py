"""HTCondor's file transfer between the submit host (access point) and an execute host.

As condor_submit(1) and the manual's file-transfer chapter describe it: ``should_transfer_files``
(YES; IF_NEEDED transfers because every execute host is its own FileSystemDomain; NO never
matches a separate execute host, so the job stays idle), the executable (unless
``transfer_executable = false``) as ``condor_exec.exe``, ``transfer_input_files`` (a file by its
base name; ``dir`` copies the directory, ``dir/`` its contents) and the input file, read on the
submit side as the job's Owner as the shadow does; at exit ``_condor_stdout``/``_condor_stderr``
to ``output``/``error`` (with ``stream_output``/``stream_error`` written there while the job runs) and ``transfer_output_files`` (default: every file of the sandbox's top
level the job created or changed) back to the job's Iwd, renamed by ``transfer_output_remaps``,
written as the Owner.  ``encrypt_input_files`` is accepted (the copy never leaves the machine).

Failures are HTCondor's holds: 13 TransferInputError / 12 TransferOutputError, subcode errno, with
the reason text of the side that failed.
"""
from __future__ import annotations

import errno
import os
import shutil

from htdask_localpool import userlog

EXEC_NAME = "condor_exec.exe"
STDIN, STDOUT, STDERR = "_condor_stdin", "_condor_stdout", "_condor_stderr"
OWN_FILES = {EXEC_NAME, STDIN, STDOUT, STDERR, ".job.ad", ".machine.ad", ".chirp.config",
             ".update.ad"}


class TransferFailure(Exception):
    def __init__(self, code: int, subcode: int, reason: str):
        super().__init__(reason)
        self.code, self.subcode, self.reason = code, subcode, reason


def wants_transfer(ad: dict) -> bool | None:
    """True: files move; None: NO, which no separate execute host matches (FileSystemDomain)."""
    stf = str(ad.get("ShouldTransferFiles") or "IF_NEEDED").upper()
    return None if stf == "NO" else True


def split_list(text) -> list[str]:
    if not isinstance(text, str):
        return []
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


def _submit_path(iwd: str, name: str) -> str:
    return name if os.path.isabs(name) else os.path.join(iwd, name)


def _input_error(access: str, slot: str, path: str, exc: OSError) -> TransferFailure:
    no = exc.errno or errno.EIO
    return TransferFailure(13, no, f"Transfer input files failure at access point {access} while sending "
                                   f"files to execution point {slot}. Details: reading from file {path}: "
                                   f"(errno {no}) {os.strerror(no)}")


def _copy_in(src: str, dst: str, pw) -> None:
    """Copy one file or tree: read as the Owner (userlog.as_owner), written by root, then chowned."""
    if os.path.isdir(src):
        names = userlog.as_owner(pw, lambda: os.listdir(src))
        os.makedirs(dst, exist_ok=True)
        for n in names:
            _copy_in(os.path.join(src, n), os.path.join(dst, n), pw)
    else:
        fd = userlog.as_owner(pw, lambda: os.open(src, os.O_RDONLY | os.O_CLOEXEC))
        with os.fdopen(fd, "rb") as f, open(dst, "wb") as out:
            shutil.copyfileobj(f, out)
            os.fchmod(out.fileno(), os.fstat(f.fileno()).st_mode & 0o777)
    if os.geteuid() == 0 and pw is not None:
        os.chown(dst, pw.pw_uid, pw.pw_gid)


def transfer_input(ad: dict, sandbox: str, pw, *, access: str, slot: str) -> None:
    """Copy the job's input into `sandbox`; TransferFailure(13, errno, reason) when one cannot be read."""
    iwd = ad.get("Iwd") if isinstance(ad.get("Iwd"), str) else "/"
    items: list[tuple[str, str]] = []
    cmd = ad.get("Cmd") if isinstance(ad.get("Cmd"), str) else ""
    if cmd and ad.get("TransferExecutable") is not False:
        items.append((_submit_path(iwd, cmd), EXEC_NAME))
    stdin = ad.get("In")
    if isinstance(stdin, str) and stdin and stdin != "/dev/null":
        items.append((_submit_path(iwd, stdin), STDIN))
    for name in split_list(ad.get("TransferInput")):
        if "://" in name:
            raise TransferFailure(13, 0, f"Transfer input files failure at execution point {slot} while "
                                         f"receiving files from access point {access}. Details: no plugin "
                                         f"for the URL {name} (the local pool has no transfer plugins)")
        src = _submit_path(iwd, name)
        if name.endswith("/"):
            items.append((src, ""))  # the directory's contents
        else:
            items.append((src, os.path.basename(name.rstrip("/"))))
    for src, rel in items:
        try:
            if rel == "" and os.path.isdir(src):
                for n in userlog.as_owner(pw, lambda: os.listdir(src)):
                    _copy_in(os.path.join(src, n), os.path.join(sandbox, n), pw)
            else:
                _copy_in(src, os.path.join(sandbox, rel or os.path.basename(src.rstrip("/"))), pw)
        except OSError as exc:
            raise _input_error(access, slot, exc.filename or src, exc) from None
    if cmd and ad.get("TransferExecutable") is not False:
        os.chmod(os.path.join(sandbox, EXEC_NAME), 0o755)


def snapshot(sandbox: str) -> dict[str, float]:
    """Top-level files of the sandbox and their mtimes (to tell what the job created or changed)."""
    out = {}
    for n in os.listdir(sandbox):
        p = os.path.join(sandbox, n)
        if os.path.isfile(p):
            out[n] = os.stat(p).st_mtime_ns
    return out


def remaps(text) -> dict[str, str]:
    out = {}
    if isinstance(text, str):
        for part in text.split(";"):
            src, sep, dst = part.partition("=")
            if sep and src.strip():
                out[src.strip()] = dst.strip()
    return out


def streamed(ad: dict, name: str) -> str | None:
    """The submit-side file `name` (STDOUT/STDERR) is streamed to (stream_output/stream_error), or None."""
    attr, flag = ("Out", "StreamOut") if name == STDOUT else ("Err", "StreamErr")
    dest = ad.get(attr)
    if ad.get(flag) is True and isinstance(dest, str) and dest and dest != "/dev/null":
        iwd = ad.get("Iwd") if isinstance(ad.get("Iwd"), str) else "/"
        return _submit_path(iwd, dest)
    return None


def transfer_output(ad: dict, sandbox: str, pw, before: dict, *, access: str, slot: str) -> None:
    """Copy stdout/stderr and the output files back to the submit side as the Owner;
    TransferFailure(12, errno, reason) for a listed output file the job did not make."""
    iwd = ad.get("Iwd") if isinstance(ad.get("Iwd"), str) else "/"
    items: list[tuple[str, str, bool]] = []  # (sandbox name, submit path, must exist)
    for attr, name in (("Out", STDOUT), ("Err", STDERR)):
        dest = ad.get(attr)
        if isinstance(dest, str) and dest and dest != "/dev/null" and not streamed(ad, name):
            items.append((name, _submit_path(iwd, dest), False))
    listed = split_list(ad.get("TransferOutput"))
    if not listed and "TransferOutput" not in ad:
        now = snapshot(sandbox)
        listed = sorted(n for n, m in now.items() if n not in OWN_FILES and before.get(n) != m)
    maps = remaps(ad.get("TransferOutputRemaps"))
    for name in listed:
        base = name.rstrip("/")
        dest = maps.get(base, os.path.basename(base))
        items.append((base, _submit_path(iwd, dest), True))
    for name, dest, required in items:
        src = os.path.join(sandbox, name)
        if not os.path.lexists(src):
            if required:
                raise TransferFailure(12, errno.ENOENT, f"Transfer output files failure at execution point "
                                                        f"{slot} while sending files to access point {access}. "
                                                        f"Details: reading from file {src}: (errno 2) "
                                                        f"{os.strerror(errno.ENOENT)}")
            continue
        try:
            userlog.as_owner(pw, lambda: _copy_out(src, dest))
        except OSError as exc:
            no = exc.errno or errno.EIO
            raise TransferFailure(12, no, f"Transfer output files failure at access point {access} while "
                                          f"receiving files from execution point {slot}. Details: writing to "
                                          f"file {exc.filename or dest}: (errno {no}) {os.strerror(no)}") from None


def _copy_out(src: str, dest: str) -> None:
    if os.path.isdir(src):
        shutil.copytree(src, dest, dirs_exist_ok=True)
    else:
        shutil.copyfile(src, dest)
