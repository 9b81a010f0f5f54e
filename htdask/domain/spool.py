"""The submit node's spool: what worker jobs get by HTCondor's file transfer, and nothing else.

Execute hosts do not see the submit node's files (no shared filesystem, Docker-universe containers): a
job gets what it needs by file transfer (`transfer_input_files`, read on the submit side as the job's
owner, as the shadow does), never by a path that exists only here.

Layout under SPOOL_DIR (settings):

    SPOOL_DIR/                        0711, the service's: no one lists it
      worker-start-<sha8>.sh          0755, the worker start script (htdask/domain/worker_start.sh), by content
      <cluster>/                      0700, the cluster's owner's (chowned when staged as root)
        dask.crt  dask.pem  ca.crt    0600: the cluster's TLS files
        api-token                     0600: the gateway API token

Entry points stage a cluster's secrets at their boundary (`stage`) and pass on only the paths; job
options, task arguments, job ads and kept submit descriptions hold paths, never contents. Errors:
OSError from the filesystem; `SpoolError` (a ValueError) for a spool an owner could not read.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pwd
import tempfile
from pathlib import Path

START_SCRIPT = Path(__file__).resolve().parent / "worker_start.sh"
CERT, KEY, CA, TOKEN = "dask.crt", "dask.pem", "ca.crt", "api-token"


class SpoolError(ValueError):
    pass


def _root(spool_dir: str) -> str:
    if not os.path.isabs(spool_dir):
        raise SpoolError(f"SPOOL_DIR={spool_dir!r}: must be an absolute path")
    if not os.path.isdir(spool_dir):
        os.makedirs(spool_dir, 0o711, exist_ok=True)
        os.chmod(spool_dir, 0o711)
    return spool_dir


def cluster_dir(spool_dir: str, cluster: str) -> str:
    """`SPOOL_DIR/<cluster>` (cluster names are DNS labels: no '/' or '..')."""
    if not cluster or "/" in cluster or cluster.startswith("."):
        raise SpoolError(f"cluster name {cluster!r}: not a spool directory name")
    return os.path.join(spool_dir, cluster)


def stage(spool_dir: str, cluster: str, owner: str | None, files: dict[str, bytes]) -> dict[str, str]:
    """Write `files` (name -> contents) into the cluster's spool directory, mode 0600, owned by
    `owner` (a Unix user; None: this process's user); returns name -> path.

    As root the directory and files are given to `owner`; otherwise `owner` must be this process's
    user (else SpoolError: the owner's jobs could not read them)."""
    me = os.geteuid()
    pw = pwd.getpwnam(owner) if owner else pwd.getpwuid(me)
    if me != 0 and pw.pw_uid != me:
        raise SpoolError(f"cluster {cluster}: its jobs run as {pw.pw_name}, who could not read files staged "
                         f"by {pwd.getpwuid(me).pw_name}; stage them as {pw.pw_name} or as root")
    d = cluster_dir(_root(spool_dir), cluster)
    os.makedirs(d, 0o700, exist_ok=True)
    os.chmod(d, 0o700)
    if me == 0:
        os.chown(d, pw.pw_uid, pw.pw_gid)
    out = {}
    for name, data in files.items():
        if "/" in name or name.startswith("."):
            raise SpoolError(f"spool file name {name!r}")
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".staging-")  # 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            if me == 0:
                os.chown(tmp, pw.pw_uid, pw.pw_gid)
            os.replace(tmp, os.path.join(d, name))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        out[name] = os.path.join(d, name)
    return out


def remove(spool_dir: str, cluster: str) -> None:
    """Forget a cluster's staged files (after its delete)."""
    d = cluster_dir(spool_dir, cluster)
    if os.path.isdir(d):
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


@functools.lru_cache(maxsize=1)
def _digest() -> str:
    return hashlib.sha256(START_SCRIPT.read_bytes()).hexdigest()[:8]


def start_script_path(spool_dir: str) -> str:
    """Where the worker start script of this release lives in the spool (named by its content, so a job
    queued before an upgrade still finds its own)."""
    return os.path.join(spool_dir, f"worker-start-{_digest()}.sh")


def install_start_script(spool_dir: str) -> str:
    """Put the worker start script into the spool (world-readable: it holds no secret); its path."""
    path = start_script_path(spool_dir)
    if not os.path.exists(path):
        _root(spool_dir)
        fd, tmp = tempfile.mkstemp(dir=spool_dir, prefix=".start-")
        with os.fdopen(fd, "wb") as f:
            f.write(START_SCRIPT.read_bytes())
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    return path
