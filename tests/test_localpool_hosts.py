"""A pool with separate execute hosts (LOCALPOOL_EXECUTE_HOSTS=2): network namespaces, a mount
namespace per job, HTCondor's file transfer, Docker-universe published ports, -name/-pool refusal.

Root only (ip netns); every namespace and veth the pool made is removed by name at teardown.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.test_localpool_lib import REPO, history, pool, q, run, submit, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="requires root: network namespaces")


def _remove_by_name(pool_dir: Path) -> None:
    """Finalizer: whatever `stop` left, by the names derived from this pool's directory."""
    sys.path.insert(0, str(REPO))
    from htdask_localpool import hosts
    h = hosts.pool_hash(pool_dir)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    for line in names:
        name = line.split(" ")[0]
        if name.startswith(f"lp{h}-"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "link", "del", f"lpb{h}"], capture_output=True)


@pytest.fixture
def hosts_pool(pool_env, monkeypatch):
    """(env, work): a 2-execute-host pool and a submit directory its owner can read."""
    base = Path(tempfile.mkdtemp(prefix="localpool-hosts-"))
    os.chmod(base, 0o1777)  # like /tmp: whoever runs the first command creates the pool dir
    work = base / "work"
    work.mkdir()
    pool_env["LOCALPOOL_DIR"] = str(base / "pool")
    pool_env["LOCALPOOL_EXECUTE_HOSTS"] = "2"
    pool_env["LOCALPOOL_SUBMIT_DIRS"] = str(REPO)  # the checkout, wherever it is
    monkeypatch.setenv("LOCALPOOL_DIR", pool_env["LOCALPOOL_DIR"])
    try:
        yield pool_env, work
    finally:
        pool(pool_env, "stop", check=False)
        _remove_by_name(base / "pool")
        shutil.rmtree(base, ignore_errors=True)


def _netns_of(pool_dir) -> list[str]:
    sys.path.insert(0, str(REPO))
    from htdask_localpool import hosts
    h = hosts.pool_hash(pool_dir)
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return sorted(line.split(" ")[0] for line in out.splitlines() if line.startswith(f"lp{h}-"))


def _done(env, cluster: str) -> dict:
    wait_for(lambda: not q(env, cluster), timeout=20, what=f"job {cluster} to leave the queue")
    return history(env, cluster)[0]


def test_job_runs_on_an_execute_host_that_cannot_see_the_submit_host(hosts_pool, tmp_path):
    env, work = hosts_pool
    secret = tmp_path / "submit-side-only.txt"  # under the submit host's /tmp
    secret.write_text("x")
    (work / "in.txt").write_text("payload\n")
    (work / "data").mkdir()
    (work / "data" / "a.txt").write_text("a\n")
    (work / "job.sh").write_text(
        "#!/bin/sh\n"
        f"for p in {secret} {REPO}/htdask_localpool/__init__.py {work}/in.txt /root /home; do\n"
        "  if [ -e \"$p\" ] && [ -n \"$(ls -A \"$p\" 2>/dev/null || echo file)\" ]; then echo \"SEEN $p\"; fi\n"
        "done\n"
        "echo \"cwd=$(pwd) scratch=$_CONDOR_SCRATCH_DIR host=$(hostname)\"\n"
        f"{sys.executable} -c 'import sys; print(\"python\", sys.version_info[0])'\n"
        "cat in.txt data/a.txt > made.txt\n"
        "echo kept > other.txt\n"
        "echo to-stderr >&2\n")
    os.chmod(work / "job.sh", 0o755)
    [job] = submit(env, work, "executable = job.sh\n"
                              "transfer_input_files = in.txt, data\n"
                              "transfer_output_files = made.txt\n"
                              'transfer_output_remaps = "made.txt = results/out.txt"\n'
                              "encrypt_input_files = in.txt\n"
                              "output = job.out\nerror = job.err\nqueue\n")
    (work / "results").mkdir()
    ad = _done(env, job)
    assert ad["ExitCode"] == 0, ad
    out = (work / "job.out").read_text()
    assert "SEEN" not in out, out
    assert "cwd=/var/tmp/condor/execute/dir_" in out and "scratch=/var/tmp/condor/execute/dir_" in out
    assert ad["LastRemoteHost"].startswith("slot1@exec") and ".localpool" in ad["LastRemoteHost"]
    assert f"host={ad['LastRemoteHost'].split('@')[1]}" in out
    assert "python 3" in out  # the execute host's software (the interpreter) stays visible
    assert (work / "results" / "out.txt").read_text() == "payload\na\n"  # back, renamed by the remap
    assert not (work / "other.txt").exists() and not (work / "made.txt").exists()
    assert (work / "job.err").read_text() == "to-stderr\n"


def test_running_job_ad_and_the_hosts_network(hosts_pool):
    env, work = hosts_pool
    (work / "job.sh").write_text("#!/bin/sh\nip -4 -o addr show eth0 > addr.txt\nexec sleep 60\n")
    os.chmod(work / "job.sh", 0o755)
    [job] = submit(env, work, "executable = job.sh\ntransfer_output_files = addr.txt\nqueue\n")
    ad = wait_for(lambda: next((a for a in q(env, job) if a.get("JobPid")), None), what="JobPid")
    host = ad["RemoteHost"].split("@", 1)[1]
    assert ad["RemoteHost"] == f"slot1@{host}"
    ip = ad["StartdIpAddr"][1:].split(":")[0]
    assert ad["StartdIpAddr"].startswith(f"<{ip}:9618?") and ip.startswith("10.")
    assert os.readlink(f"/proc/{ad['JobPid']}/ns/net") != os.readlink("/proc/self/ns/net")
    assert os.readlink(f"/proc/{ad['JobPid']}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert len(_netns_of(env["LOCALPOOL_DIR"])) == 2
    run(env, "condor_rm", job)
    wait_for(lambda: not q(env, job), what="removal")
    assert not (work / "addr.txt").exists(), "a removed job's output is not transferred"
    pool(env, "stop")
    assert _netns_of(env["LOCALPOOL_DIR"]) == [], "stop removes the execute hosts"


def test_missing_input_file_holds_with_code_13(hosts_pool):
    env, work = hosts_pool
    [job] = submit(env, work, "executable = /bin/true\ntransfer_input_files = nothere.txt\nqueue\n")
    ad = wait_for(lambda: next((a for a in q(env, job) if a["JobStatus"] == 5), None), what="hold")
    assert (ad["HoldReasonCode"], ad["HoldReasonSubCode"]) == (13, 2)
    assert ad["HoldReason"].startswith(f"Transfer input files failure at access point {socket.gethostname()} "
                                       "while sending files to execution point slot1@exec")
    assert ad["HoldReason"].endswith(f"Details: reading from file {work}/nothere.txt: "
                                     "(errno 2) No such file or directory")


def test_missing_output_file_holds_with_code_12(hosts_pool):
    env, work = hosts_pool
    [job] = submit(env, work, "executable = /bin/true\ntransfer_output_files = never.txt\nqueue\n")
    ad = wait_for(lambda: next((a for a in q(env, job) if a["JobStatus"] == 5), None), what="hold")
    assert (ad["HoldReasonCode"], ad["HoldReasonSubCode"]) == (12, 2)
    assert ad["HoldReason"].startswith("Transfer output files failure at execution point slot1@exec")
    assert ad["HoldReason"].endswith("/never.txt: (errno 2) No such file or directory")


def test_input_is_read_as_the_jobs_owner(hosts_pool, unix_user):
    env, work = hosts_pool
    pool(env, "start")  # root's runner; the submit below is the user's
    os.chmod(work, 0o1777)
    (work / "root-only.txt").write_text("secret")
    os.chmod(work / "root-only.txt", 0o600)
    path = work / "job.sub"
    path.write_text("executable = /bin/true\ntransfer_input_files = root-only.txt\nqueue\n")
    os.chmod(path, 0o644)
    res = run(env, "condor_submit", "-terse", str(path), cwd=work, user=unix_user)
    assert res.returncode == 0, res.stderr
    job = res.stdout.split(" - ")[0]
    ad = wait_for(lambda: next((a for a in q(env, job) if a["JobStatus"] == 5), None), what="hold")
    assert (ad["HoldReasonCode"], ad["HoldReasonSubCode"]) == (13, 13), ad["HoldReason"]
    assert ad["HoldReason"].endswith(f"root-only.txt: (errno 13) Permission denied")


def test_should_transfer_files_no_never_matches_a_separate_execute_host(hosts_pool):
    env, work = hosts_pool
    [job] = submit(env, work, "executable = /bin/true\nshould_transfer_files = NO\nqueue\n")
    [ok] = submit(env, work, "executable = /bin/true\nqueue\n", name="ok.sub")
    _done(env, ok)
    assert [a["JobStatus"] for a in q(env, job)] == [1]  # idle: no execute host has its FileSystemDomain
    res = run(env, "condor_q", "-better-analyze", job)
    assert "No execute host matches: should_transfer_files = NO requires TARGET.FileSystemDomain" in res.stdout


SERVER = """import http.server, socket
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def _connect(addr: str, port: int) -> bool:
    try:
        socket.create_connection((addr, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("universe", ["docker", "container"])
def test_docker_job_is_reachable_only_through_its_published_port(hosts_pool, universe):
    env, work = hosts_pool
    (work / "srv.py").write_text(SERVER)
    image = ("docker_image = python:3.11-slim" if universe == "docker"
             else "container_image = docker://python:3.11-slim")
    [job] = submit(env, work, f"universe = {universe}\n{image}\n"
                              f"executable = {sys.executable}\ntransfer_executable = false\n"
                              "arguments = srv.py\ntransfer_input_files = srv.py\n"
                              "container_service_names = web\nweb_container_port = 8080\nqueue\n")
    ad = wait_for(lambda: next((a for a in q(env, job) if a.get("JobPid")), None), what="JobPid")
    assert ad["web_ContainerPort"] == 8080
    ip = ad["StartdIpAddr"][1:].split(":")[0]
    port = ad["web_HostPort"]
    assert isinstance(port, int) and port != 8080
    wait_for(lambda: _connect(ip, port), timeout=20, what="the published port")
    assert not _connect(ip, 8080), "the container's own port is not the host's"
    jobns = os.readlink(f"/proc/{ad['JobPid']}/ns/net")
    hostns = [n for n in _netns_of(env["LOCALPOOL_DIR"]) if "exec" in n]
    assert all(os.stat(f"/run/netns/{n}").st_ino != os.stat(f"/proc/{ad['JobPid']}/ns/net").st_ino
               for n in hostns), f"the job has a network namespace of its own ({jobns})"
    run(env, "condor_rm", job)
    wait_for(lambda: not q(env, job), what="removal")
    wait_for(lambda: not _connect(ip, port), what="the published port to close")


def test_a_container_that_cannot_be_made_holds_only_its_job(hosts_pool):
    """The class behind the docker/container regression (the published-port map was named differently where
    it was made and where it was filled): a failure while setting up a job on its execute host holds that
    job with HTCondor's code 6 and the reason; it never leaves a Running job without a process, and the
    jobs starting beside it still run. `nft` is wrapped to refuse adding published ports."""
    env, work = hosts_pool
    wrap = work / "bin"
    wrap.mkdir()
    (wrap / "nft").write_text("#!/bin/sh\n"
                              'case "$*" in *"add element"*) echo "Error: injected by the test" >&2; exit 1;; esac\n'
                              f'exec {shutil.which("nft")} "$@"\n')
    os.chmod(wrap / "nft", 0o755)
    env = dict(env, PATH=f"{wrap}:{env['PATH']}")
    [bad, ok] = submit(env, work, "universe = docker\ndocker_image = python:3.11-slim\nexecutable = /bin/true\n"
                                  "transfer_executable = false\ncontainer_service_names = web\n"
                                  "web_container_port = 8080\nqueue\nuniverse = vanilla\nqueue\n")
    ad = wait_for(lambda: next((a for a in q(env, bad) if a["JobStatus"] == 5), None), what="the hold")
    assert (ad["HoldReasonCode"], ad.get("JobPid")) == (6, None), ad
    assert ad["HoldReason"].startswith("Error from slot1@exec") and "Cannot start container: " in ad["HoldReason"]
    assert "injected by the test" in ad["HoldReason"]
    assert _done(env, ok)["ExitCode"] == 0


@pytest.mark.parametrize("image", ["universe = docker\ndocker_image = python:3.11-slim\ndocker_network_type = host",
                                   "universe = container\ncontainer_image = /cvmfs/images/python.sif"])
def test_host_network(hosts_pool, image):
    """docker_network_type = host, and an Apptainer image (which shares its host's network)."""
    env, work = hosts_pool
    (work / "srv.py").write_text(SERVER)
    [job] = submit(env, work, f"{image}\n"
                              f"executable = {sys.executable}\ntransfer_executable = false\n"
                              "arguments = srv.py\ntransfer_input_files = srv.py\nqueue\n")
    ad = wait_for(lambda: next((a for a in q(env, job) if a.get("JobPid")), None), what="JobPid")
    ip = ad["StartdIpAddr"][1:].split(":")[0]
    wait_for(lambda: _connect(ip, 8080), timeout=20, what="the server on the host's network")
    run(env, "condor_rm", job)


@pytest.mark.parametrize("prog", ["condor_rm", "condor_hold", "condor_release"])
def test_wrong_schedd_name_is_refused(hosts_pool, prog):
    env, work = hosts_pool
    env = dict(env, LOCALPOOL_EXECUTE_HOSTS="0", LOCALPOOL_SLOTS="0")
    [job] = submit(env, work, "executable = /bin/true\nqueue\n")
    res = run(env, prog, "-name", "wrong.docker", job)
    assert (res.returncode, res.stdout, res.stderr) == (1, "", "Error: cannot get address of schedd wrong.docker\n")
    res = run(env, prog, "-pool", "wrong.example.org", job)
    assert res.returncode == 1 and res.stderr == f"{prog}: Can't find address for schedd {socket.gethostname()}\n"
    assert [a["JobStatus"] for a in q(env, job)] == [1], "nothing was acted on"
    res = run(env, prog, "-name", socket.gethostname(), job)
    assert res.returncode == (0 if prog != "condor_release" else 1), res.stderr
    res = run(env, "condor_q", "-name", "wrong.docker")
    assert (res.returncode, res.stdout, res.stderr) == (1, "", "Error: Collector has no record of schedd/submitter\n")
    res = run(env, "condor_q", "-json", "-name", "local", job)
    assert res.returncode == 0, res.stderr
    res = run(env, "condor_submit", "-name", "wrong.docker", str(work / "job.sub"))
    assert (res.returncode, res.stderr) == (1, "\nERROR: Can't find address of schedd wrong.docker\n")


def test_execute_hosts_need_root_and_a_number(hosts_pool, unix_user):
    env, work = hosts_pool
    res = pool(dict(env, LOCALPOOL_EXECUTE_HOSTS="two"), "start", check=False)
    assert (res.returncode, res.stderr) == (
        1, "localpool: LOCALPOOL_EXECUTE_HOSTS='two': not a number of execute hosts (0..32)\n")
    os.chmod(work, 0o1777)
    path = work / "job.sub"
    path.write_text("executable = /bin/true\nqueue\n")
    os.chmod(path, 0o644)
    res = run(env, "condor_submit", "-terse", str(path), cwd=work, user=unix_user)
    assert (res.returncode, res.stderr) == (1, "ERROR: condor_submit: LOCALPOOL_EXECUTE_HOSTS=2 needs root: "
                                               "execute hosts are network namespaces (ip netns) only root can make\n")
