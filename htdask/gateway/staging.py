"""A cluster's staging directory: the TLS files, the gateway API token and the job logs its jobs read,
owned by the Unix account the jobs run as, on the submit node: jobs get the files by HTCondor's file
transfer (htdask/domain/jobfiles.py); execute hosts need not see the directory.

Layout as dask-gateway's local backend (``.certs/dask.crt``, ``.certs/dask.pem``, ``logs/``) plus
``api-token``; directories 0700, files 0600. As root the gateway gives them to the jobs' account;
otherwise the jobs must run as the gateway's own user.
"""
from __future__ import annotations

import getpass
import logging
import os
import pwd
import tempfile
from dataclasses import dataclass

from htdask.domain import joboptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Staging:
    workdir: str
    cert: str
    key: str
    logs: str

    @classmethod
    def at(cls, workdir: str) -> "Staging":
        certs = os.path.join(workdir, ".certs")
        return cls(workdir, os.path.join(certs, "dask.crt"), os.path.join(certs, "dask.pem"),
                   os.path.join(workdir, "logs"))

    @property
    def token(self) -> str:
        return os.path.join(self.workdir, "api-token")

    def event_log(self, cluster_name: str) -> str:
        """The job event log the cluster's jobs write (``log = $(LogDir)/<cluster>.log``)."""
        return os.path.join(self.logs, f"{cluster_name}.log")

    def job_credentials(self, api_url: str) -> dict[str, str]:
        """Job options that point a job at the gateway API and at these staged credentials."""
        return joboptions.credentials(api_url=api_url, api_token=self.token, tls_cert=self.cert, tls_key=self.key,
                                      log_dir=self.logs)


def create(parent: str | None, cluster, account: str | None) -> Staging:
    """Make (or refresh) the staging directory of `cluster` under `parent` (None: a fresh temporary
    directory) and give it to `account` when running as root (None: keep the gateway's user)."""
    if parent:
        workdir = os.path.join(parent, cluster.name)
        os.makedirs(workdir, 0o700, exist_ok=True)
    else:
        workdir = tempfile.mkdtemp(prefix="dask-gateway-", suffix="-" + cluster.name[:12])
    staging = Staging.at(workdir)
    dirs = [workdir, os.path.dirname(staging.cert), staging.logs]
    for path in dirs[1:]:
        os.makedirs(path, 0o700, exist_ok=True)
    os.chmod(workdir, 0o700)
    files = [(staging.cert, cluster.tls_cert), (staging.key, cluster.tls_key), (staging.token, cluster.token.encode())]
    for path, data in files:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    if account and os.geteuid() == 0:
        pw = pwd.getpwnam(account)
        for path in dirs + [p for p, _ in files]:
            os.chown(path, pw.pw_uid, pw.pw_gid)
    log.info("cluster %s: staging directory %s (owner %s)", cluster.name, workdir, account or getpass.getuser())
    return staging
