"""The product on a pool as pools really are (issue 25): two execute hosts in their own network
namespaces that cannot see the submit host's files, HTCondor's file transfer, a scheduler on the
address the execute hosts reach (the pool's bridge), real `dask worker` jobs.

Each test computes a rechunked array sum that moves data between workers (hosts_stack.compute_across_workers).
Root only (ip netns, jobs as another Unix user); the namespaces are removed by name at teardown.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from htdask.demo.procs import free_port
from htdask.demo.services import REPO, have_redis
from tests import hosts_stack as hs
from tests.conftest import needs

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="requires root: network namespaces"),
              pytest.mark.skipif(not have_redis(), reason="redis-server is not installed"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


@pytest.fixture(scope="module")
@needs("stack", "root")
def stack(service_user):
    with hs.running(service_user, exporter=True) as s:
        yield s


def _cli(stack, *args, timeout=240):
    res = stack.cli(*args, timeout=timeout)
    assert res.returncode == 0, f"htdask {' '.join(args)}: {res.stdout}{res.stderr}\n{stack.logs()}"
    return res


def _queue(stack, cluster: str) -> list[dict]:
    out = stack.condor("condor_q", "-allusers", "-json", "-constraint", f'DaskGatewayCluster == "{cluster}"')
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout or "[]")


def test_cli_cluster_tcp_on_execute_hosts(stack):
    bridge = hs.bridge_address(stack)
    sched = hs.Scheduler(stack, bridge)
    try:
        _cli(stack, "scale", "xh-tcp", "2", "--scheduler", sched.address, "--wait", "--timeout", "200")
        with sched.client() as client:
            hs.compute_across_workers(client)
            hosts = hs.worker_hosts(client)
            assert hosts == hs.host_addresses(stack), "one worker on each execute host, at the host's address"
            # the submit side's directories are not there: LOG_DIR, SPOOL_DIR, the checkout, the stack's files
            # (the checkout by one of its files: a virtualenv inside it stays, as software the hosts have)
            paths = [stack.env["LOG_DIR"], stack.env["SPOOL_DIR"], str(REPO / "README.md"), str(stack.workdir), "/root"]
            seen = hs.seen_by_workers(client, paths)
            assert all(not any(v.values()) for v in seen.values()), seen
        _cli(stack, "scale", "xh-tcp", "0", "--wait", "--timeout", "120")
        # stdout/stderr came back to LOG_DIR by output transfer when the jobs ended: `htdask logs` reads them
        logs = hs.wait(lambda: (r := stack.cli("logs", "xh-tcp")).returncode == 0 and "Starting Worker" in r.stdout
                       and r.stdout, timeout=60, what="the workers' logs")
        assert "xh-tcp-0" in logs and "xh-tcp-1" in logs
    finally:
        sched.stop()


def _secret_marker(pem: bytes) -> str:
    """A line of the key's base64 body (what any copy of it would contain)."""
    lines = [ln for ln in pem.decode().splitlines() if ln and not ln.startswith("-----")]
    return lines[len(lines) // 2]


def test_cli_cluster_tls_with_a_generated_keypair(stack, service_user):
    bridge = hs.bridge_address(stack)
    port = free_port(bridge)
    address = f"tls://{bridge}:{port}"
    res = _cli(stack, "scale", "xh-tls", "2", "--scheduler", address, "--tls")
    spool = Path(stack.env["SPOOL_DIR"]) / "xh-tls"
    assert str(spool / "dask.crt") in res.stderr, res.stderr
    # the spool directory: the owner's alone (the Celery worker submits as the owner, who reads it for the transfer)
    import pwd
    uid = pwd.getpwnam(service_user).pw_uid
    st = spool.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, 0o700)
    for name in ("dask.crt", "dask.pem"):
        st = (spool / name).stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, 0o600)
    tls = {"ca": str(spool / "dask.crt"), "cert": str(spool / "dask.crt"), "key": str(spool / "dask.pem")}
    sched = hs.Scheduler(stack, bridge, tls=tls, port=port)
    try:
        with sched.client() as client:
            hs.compute_across_workers(client)
            assert all(a.startswith("tls://") for a in client.scheduler_info()["workers"])
            assert hs.worker_hosts(client) == hs.host_addresses(stack)
        marker = _secret_marker((spool / "dask.pem").read_bytes())
        _cli(stack, "scale", "xh-tls", "0", "--wait", "--timeout", "120")
        found = hs.scan_for(stack, [marker], skip=(Path(stack.env["SPOOL_DIR"]),))
        assert found == [], f"the key is kept outside the spool: {found}"
        assert str(spool / "dask.pem") in hs.scan_for(stack, [marker], skip=()), "the scan reads the files"
    finally:
        sched.stop()


def test_missing_input_file_and_missing_interpreter_hold_with_their_reasons(stack):
    bridge = hs.bridge_address(stack)
    address = f"tls://{bridge}:1"
    from dask_gateway_server.tls import new_keypair
    cert, key = new_keypair("xh-miss")
    tmp = Path(stack.workdir) / "user-tls"
    tmp.mkdir(exist_ok=True)
    (tmp / "w.crt").write_bytes(cert)
    (tmp / "w.pem").write_bytes(key)
    _cli(stack, "scale", "xh-miss", "0", "--scheduler", address, "--tls-cert", str(tmp / "w.crt"),
         "--tls-key", str(tmp / "w.pem"))
    os.unlink(Path(stack.env["SPOOL_DIR"]) / "xh-miss" / "dask.pem")  # lost before the job starts
    _cli(stack, "scale", "xh-miss", "1")
    _cli(stack, "scale", "xh-nopy", "1", "--scheduler", f"tcp://{bridge}:1", "--python", "/opt/nowhere/bin/python3")
    held = hs.wait(lambda: [a for a in _queue(stack, "xh-miss") if a.get("JobStatus") == 5], what="xh-miss held")
    assert held[0]["HoldReasonCode"] == 13 and held[0]["HoldReasonSubCode"] == 2
    assert "Transfer input files failure" in held[0]["HoldReason"] and "dask.pem" in held[0]["HoldReason"]
    held = hs.wait(lambda: [a for a in _queue(stack, "xh-nopy") if a.get("JobStatus") == 5], what="xh-nopy held")
    assert (held[0]["HoldReasonCode"], held[0]["HoldReasonSubCode"]) == (3, 86), held[0]["HoldReason"]
    assert "missing on the execute host" in held[0]["HoldReason"]
    for cluster, words in (("xh-miss", "Transfer input files failure"), ("xh-nopy", "missing on the execute host")):
        out = hs.wait(lambda: (r := stack.cli("status", cluster)).returncode == 0 and words in r.stdout and r.stdout,
                      timeout=60, what=f"status of {cluster} to show its hold reason")
        assert "held" in out
    for cluster in ("xh-miss", "xh-nopy"):
        _cli(stack, "delete", cluster, "--wait", "--timeout", "120")


def test_dry_run_prints_the_description_and_records_nothing(stack):
    import redis
    r = redis.Redis.from_url(stack.env["REDIS_URL"])
    bridge = hs.bridge_address(stack)
    res = _cli(stack, "scale", "xh-dry", "3", "--scheduler", f"tls://{bridge}:8786", "--tls", "--universe", "docker",
               "--image", "ghcr.io/dask/dask:2026.8.0", "--dry-run")
    text = res.stdout
    spool = Path(stack.env["SPOOL_DIR"])
    assert f"transfer_input_files = {spool}/xh-dry/dask.crt,{spool}/xh-dry/dask.pem" in text
    assert "container_service_names = dask" in text and "universe = docker" in text
    assert "queue DaskWorkerIndex,DaskWorkerName from (\n0,xh-dry-0\n1,xh-dry-1\n2,xh-dry-2\n)" in text
    import htcondor2
    assert htcondor2.Submit(text).getQArgs().startswith("DaskWorkerIndex,DaskWorkerName from")
    assert [k for k in r.keys("*") if b"xh-dry" in k] == [], "a dry run records nothing"
    assert not (spool / "xh-dry").exists() and stack.cli("status", "xh-dry").returncode != 0


def test_a_packed_environment_shipped_by_file_transfer(stack):
    """--packed-env: the tarball comes with every job and the start script unpacks it into the sandbox
    (here an environment whose bin/python hands over to the interpreter the execute hosts have)."""
    import io
    import tarfile
    bridge = hs.bridge_address(stack)
    sched = hs.Scheduler(stack, bridge)
    pack = stack.workdir / "packs" / "env.tar.gz"
    pack.parent.mkdir(exist_ok=True)
    script = f"#!/bin/sh\nexport HTDASK_FROM_PACK=1\nexec {sys.executable} \"$@\"\n".encode()
    with tarfile.open(pack, "w:gz") as tar:
        info = tarfile.TarInfo("bin/python")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    os.chmod(pack.parent, 0o755)
    os.chmod(pack, 0o644)
    try:
        _cli(stack, "scale", "xh-pack", "2", "--scheduler", sched.address, "--packed-env", str(pack),
             "--wait", "--timeout", "200")
        with sched.client() as client:
            hs.compute_across_workers(client)
            assert set(client.run(lambda: os.environ.get("HTDASK_FROM_PACK")).values()) == {"1"}
            cwd = client.run(lambda: os.path.exists("env/bin/python") and os.path.exists("env.tar.gz"))
            assert set(cwd.values()) == {True}, cwd
        _cli(stack, "delete", "xh-pack", "--wait", "--timeout", "120")
    finally:
        sched.stop()
