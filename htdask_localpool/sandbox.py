"""A job's view of its execute host: its own mount namespace, its host's network namespace.

Run in the forked child before exec (subprocess preexec_fn; the runner is single-threaded and
root): join the network namespace (setns, as ``ip netns exec`` does), unshare the mount and UTS
namespaces, mount fresh tmpfs over the submit host's directories (every top-level directory but
the system's own, so /tmp, /root, /home and the checkout; /var/tmp, the pool directory and
LOCALPOOL_SUBMIT_DIRS), put back the execute host's
software (the runner's interpreter prefix and LOCALPOOL_EXECUTE_SOFTWARE) where it was hidden,
bind the job's scratch directory at EXECUTE/dir_<C>_<P>, set the host name, drop to the job's
Owner and change into the sandbox.  An error is written to `err_fd` (one line) and raised.
"""
from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWNET = 0x00020000, 0x04000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
EXECUTE = "/var/tmp/condor/execute"  # the execute host's EXECUTE directory, on its own /var/tmp
# the execute host's own system: everything else at the top (/tmp, /root, /home, /work, /srv...) is hidden
ALLOWED_TOP = frozenset({"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "opt", "proc", "dev",
                         "sys", "run", "var", "boot"})

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _mount(src, target: str, fstype, flags: int, data=None) -> None:
    enc = (lambda s: s.encode() if isinstance(s, str) else s)
    _check(_libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def _paths(var: str) -> list[str]:
    return [p for p in os.environ.get(var, "").split(":") if p.startswith("/")]


def hidden_dirs(repo_root: str, pool_root: str) -> list[str]:
    """The submit host's directories a job must not see (existing ones, outermost first): every
    top-level directory but the system's own (ALLOWED_TOP: /usr, /etc, /opt, /var...), /var/tmp,
    the checkout, the pool directory and LOCALPOOL_SUBMIT_DIRS (e.g. LOG_DIR or a spool under /var)."""
    tops = []
    for name in os.listdir("/"):
        p = "/" + name
        if name not in ALLOWED_TOP and os.path.isdir(p) and not os.path.islink(p):
            tops.append(p)
    cands = tops + ["/var/tmp", repo_root, pool_root] + _paths("LOCALPOOL_SUBMIT_DIRS")
    out: list[str] = []
    for p in sorted({os.path.realpath(c) for c in cands}, key=len):
        if p != "/" and os.path.isdir(p) and not any(p == o or p.startswith(o + "/") for o in out):
            out.append(p)
    return out


def software_dirs() -> list[tuple[str, str]]:
    """(path seen by jobs, real path) of the execute host's software that stays visible."""
    cands = [sys.prefix, sys.base_prefix] + _paths("LOCALPOOL_EXECUTE_SOFTWARE")
    out = []
    for p in cands:
        real = os.path.realpath(p)
        if os.path.isdir(real):
            for seen in {os.path.abspath(p), real}:
                if (seen, real) not in out:
                    out.append((seen, real))
    return out


class Setup:
    """What the child does before exec; built in the runner, called in the child."""

    def __init__(self, *, netns: str, hostname: str, scratch: str, inner: str, hide: list[str],
                 software: list[tuple[str, str]], uid: int, gid: int, groups: list[int], err_fd: int):
        self.netns, self.hostname, self.scratch, self.inner = netns, hostname, scratch, inner
        self.hide, self.software = hide, software
        self.uid, self.gid, self.groups, self.err_fd = uid, gid, groups, err_fd

    def __call__(self) -> None:
        try:
            self._enter()
        except BaseException as exc:
            try:
                os.write(self.err_fd, f"{exc}\n".encode())
            except OSError:
                pass
            raise

    def _enter(self) -> None:
        fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY | os.O_CLOEXEC)
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {self.netns}")
        os.close(fd)
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        keep = {}  # opened in the new namespace (a bind source must be one of its mounts), before hiding
        for _seen, real in self.software + [(self.inner, self.scratch)]:
            if real not in keep:
                keep[real] = os.open(real, os.O_PATH | os.O_CLOEXEC)
        for d in self.hide:
            mode = "1777" if d in ("/tmp", "/var/tmp") else "0755"
            _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode},size=1g")
        for seen, real in self.software:
            if any(seen == d or seen.startswith(d + "/") for d in self.hide):
                os.makedirs(seen, exist_ok=True)
                _mount(f"/proc/self/fd/{keep[real]}", seen, None, MS_BIND | MS_REC)
        os.makedirs(self.inner, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{keep[self.scratch]}", self.inner, None, MS_BIND)
        for fd in keep.values():
            os.close(fd)
        name = self.hostname.encode()
        _check(_libc.sethostname(name, len(name)), "sethostname")
        if self.uid != 0:
            os.setgroups(self.groups)
            os.setgid(self.gid)
            os.setuid(self.uid)
        os.chdir(self.inner)
