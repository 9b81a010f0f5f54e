"""`htdask scale`'s job options beyond counts: TLS (files staged into the spool at this boundary, only
their paths go on), the worker's environment (image, interpreter, packed environment), GPUs, and
`--dry-run` (the submit description the controller would send, secrets masked, nothing recorded), and the
cluster's idle and lifetime limits (`--idle-timeout`, `--max-lifetime`)."""
from __future__ import annotations

import getpass
import os
import re

import click

from htdask.base import BadInput, store as _store
from htdask.domain import joboptions, spool

#: environment variable names whose values --dry-run masks (a site may pass secrets in a cluster's environment)
_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|PASSWD|CREDENTIAL|(^|_)KEY($|_)", re.I)


def options(f):
    """The click options of this module, on `scale`."""
    opts = [
        click.option("--tls", "tls_generate", is_flag=True,
                     help="Workers speak TLS with a keypair generated now (its files are printed: give them "
                          "to the scheduler)."),
        click.option("--tls-cert", type=click.Path(dir_okay=False), help="Workers' TLS certificate (PEM)."),
        click.option("--tls-key", type=click.Path(dir_okay=False), help="Workers' TLS key (PEM)."),
        click.option("--tls-ca", type=click.Path(dir_okay=False),
                     help="CA certificate the workers trust (default: --tls-cert, self-signed)."),
        click.option("--universe", type=click.Choice(["vanilla", "docker", "container"]),
                     help="HTCondor universe of the workers."),
        click.option("--image", help="Docker image (docker universe) or Apptainer image (container universe; "
                                     "must match ALLOWED_IMAGE_PREFIXES)."),
        click.option("--network", "docker_network", type=click.Choice(["bridge", "host"]),
                     help="Docker universe: a bridge network with a published port (default) or the host's."),
        click.option("--python", "worker_python", help="Interpreter the execute hosts have (e.g. on CVMFS)."),
        click.option("--packed-env", type=click.Path(dir_okay=False),
                     help="A packed environment (.tar.gz, conda-pack/venv-pack) shipped to every worker."),
        click.option("--gpus", "request_gpus", type=click.IntRange(1, 64), help="GPUs per worker."),
        click.option("--gpu-capability", type=float, help="Least CUDA capability of those GPUs, e.g. 7.5."),
        click.option("--gpu-memory", help="Least memory of those GPUs with its unit, e.g. 16GiB."),
        click.option("--idle-timeout", metavar="DURATION",
                     help="Delete the cluster once its Dask scheduler had no task for this long, e.g. 30m, 2h "
                          "(0: never; default IDLE_TIMEOUT, at most IDLE_TIMEOUT_MAX)."),
        click.option("--max-lifetime", metavar="DURATION",
                     help="Delete the cluster this long after its first request, e.g. 8h, 2d (0: never; "
                          "default MAX_LIFETIME, at most MAX_LIFETIME_MAX)."),
        click.option("--dry-run", is_flag=True, help="Print the submit description the controller would send "
                                                     "(secrets masked) and record nothing."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def limits(kw: dict) -> dict[str, float]:
    """--idle-timeout and --max-lifetime in seconds (only those given), checked against the site's maxima
    (tasks.api.check_limits: one line naming the flag)."""
    from tasks import api
    return api.check_limits({"idle_timeout": kw.get("idle_timeout"), "max_lifetime": kw.get("max_lifetime")},
                            {"idle_timeout": "--idle-timeout", "max_lifetime": "--max-lifetime"})


def job_options(kw: dict, **flags) -> dict:
    """The options `scale`'s flags give (`flags`: scheduler_address, nthreads, memory_limit; `kw`: this
    module's, TLS apart), by `htdask.domain.joboptions.flag_job_options`; raises ValidationError naming
    the flag, BadInput for a --packed-env that is not a readable file."""
    return joboptions.flag_job_options(
        **flags, universe=kw.get("universe"), image=kw.get("image"), docker_network=kw.get("docker_network"),
        worker_python=kw.get("worker_python"), request_gpus=kw.get("request_gpus"),
        gpu_capability=kw.get("gpu_capability"), gpu_memory=kw.get("gpu_memory"),
        packed_env=_readable(kw["packed_env"], "--packed-env") if kw.get("packed_env") else None)


def _readable(path: str, flag: str) -> str:
    path = os.path.abspath(path)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise BadInput(f"{flag} {path}: not a readable file")
    return path


def tls_options(cluster: str, owner: str | None, kw: dict, site, *, dry_run: bool) -> dict:
    """Stage the TLS files into the cluster's spool directory (owner-only); the options naming them.

    --tls-cert/--tls-key (and --tls-ca) are read here; --tls generates a self-signed keypair
    (dask-gateway's). With `dry_run` nothing is written: the options name where they would be."""
    cert, key, ca, generate = kw.get("tls_cert"), kw.get("tls_key"), kw.get("tls_ca"), kw.get("tls_generate")
    if not (cert or key or ca or generate):
        return {}
    if generate and (cert or key):
        raise BadInput("--tls generates a keypair: give it alone, or --tls-cert and --tls-key")
    if not generate and not (cert and key):
        raise BadInput("--tls-cert and --tls-key go together (or --tls to generate a keypair)")
    d = spool.cluster_dir(site.spool_dir, cluster)
    out = joboptions.credentials(tls_cert=os.path.join(d, spool.CERT), tls_key=os.path.join(d, spool.KEY),
                                 tls_ca=os.path.join(d, spool.CA) if ca else None)
    if dry_run:
        return out
    if generate:
        from dask_gateway_server.tls import new_keypair
        cert_pem, key_pem = new_keypair(cluster)
        files = {spool.CERT: cert_pem, spool.KEY: key_pem}
    else:
        files = {spool.CERT: _read(cert, "--tls-cert"), spool.KEY: _read(key, "--tls-key")}
        if ca:
            files[spool.CA] = _read(ca, "--tls-ca")
    try:
        spool.stage(site.spool_dir, cluster, owner or site.default_owner, files)
    except (spool.SpoolError, KeyError) as e:
        raise BadInput(str(e)) from None
    if generate:
        click.echo(f"cluster {cluster}: generated a TLS keypair for its workers: {out['tls_cert']} and "
                   f"{out['tls_key']} (readable by {owner or site.default_owner or getpass.getuser()} and root); "
                   f"start the scheduler with --tls-ca-file/--tls-cert {out['tls_cert']} --tls-key {out['tls_key']}",
                   err=True)
    return out


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise BadInput(f"{flag} {path}: {e.strerror}") from None
    if b"-----BEGIN " not in data:
        raise BadInput(f"{flag} {path}: not a PEM file")
    return data


def dry_run(store, cluster: str, n: int, owner: str | None, options: dict, site, *,
            unreachable: str | None = None) -> str:
    """What the controller would do to bring `cluster` to `n` workers, from its record and last summary in
    Redis (`store`; None when Redis is not reachable, `unreachable` saying why: then a new cluster's): `#`
    lines saying how many jobs it would submit or remove and why, then the submit description of the jobs
    it would submit with the names the counter would give (the reconciler's own rendering,
    tasks.options.describe), secret-looking environment values masked. Nothing is created or recorded."""
    from tasks.options import check_job_options, describe
    check_job_options(options)
    first = 0
    if store is None:
        lines = [f"# Redis is not reachable ({unreachable}): what a NEW cluster {cluster} of {n} workers would "
                 f"submit; an existing cluster's jobs and worker names are not known"]
        submit = n
    else:
        lines, submit, first = _plan(store, cluster, n)
    if submit <= 0:
        return "\n".join(lines) + "\n"
    items = [(first + i, f"{cluster}-{first + i}") for i in range(submit)]
    masked = dict(options)
    env = masked.get("environment") or {}
    masked["environment"] = {k: ("***" if _SECRET_NAME.search(k) else v) for k, v in env.items()}
    who = owner or site.default_owner or getpass.getuser()
    return "\n".join(lines) + "\n" + describe(cluster, who, masked, items, site, create=False).render()



def _plan(store, cluster: str, n: int) -> tuple[list[str], int, int]:
    """(`#` lines, jobs to submit, first worker index) as a reconcile of `cluster` to `n` would see it from
    its record and its last summary: live jobs (htdask.domain.jobstatus.QUEUED) short of `n` are submitted
    under the next indexes of its counter (from 0 for a cluster with no job in the queue), a surplus removed."""
    from htdask.base import duration
    from htdask.domain.jobstatus import KEYS, QUEUED
    record = store.get(cluster)
    summary = store.summaries([cluster]).get(cluster) or {}
    if record is None and not summary:
        return [f"# cluster {cluster} is new: {n} jobs to submit" if n else
                f"# cluster {cluster} is new and N is 0: nothing to submit"], n, 0
    live = sum(int(summary.get(s.key) or 0) for s in QUEUED)
    if summary.get("polled_at"):
        seen = f"{live} live jobs at the last poll ({duration(store.now() - float(summary['polled_at']))} ago)"
    else:
        seen = "not polled yet (counted as 0 live jobs)"
    diff = n - live
    if diff <= 0:
        what = f"nothing to submit; would remove {-diff} jobs" if diff else "nothing to submit or remove"
        return [f"# cluster {cluster}: {seen}: {what} to reach {n}"], 0, 0
    if summary.get("polled_at") and not any(int(summary.get(k) or 0) for k in KEYS):
        first = 0  # no job of it in the queue: its counter starts again
    else:
        top = summary.get("max_index")  # the highest index in the queue (-1: none)
        first = max(store.counter(cluster), (-1 if top in (None, "") else int(top)) + 1)
    return [f"# cluster {cluster}: {seen}: {diff} new jobs to submit to reach {n}"], diff, first


def store_or_why(dry_run: bool):
    """(the Redis store, None); for --dry-run also (None, why) when Redis is not reachable (it then shows a new
    cluster's description)."""
    import redis
    try:
        return _store(), None
    except redis.RedisError as e:
        if not dry_run:
            raise
        return None, str(e)


def changed_options(record, merged: dict | None) -> list[str]:
    """The job options a request changes on a recorded cluster (None given: none), sorted."""
    if record is None or merged is None:
        return []
    old = record.options or {}
    return sorted(k for k in set(old) | set(merged) if old.get(k) != merged.get(k))

