"""The exporter's HTTP server: `/metrics` (Prometheus text format), `/` (status page), `/healthz`.

    python cli.py exporter [--address 127.0.0.1] [--port 9808]

Reads Redis (REDIS_URL) through `state` at each request and never talks to a schedd, so any number of
exporters may run anywhere Redis is reachable. `/healthz` answers 200 while the process serves
(liveness; Redis' reachability is the `htdask_redis_up` metric, so a Redis outage does not restart
the exporter). A threaded WSGI server (the standard library's, as prometheus_client's own
`start_http_server`) serves the requests.
"""
from __future__ import annotations

import logging
import signal
import socket
import socketserver
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, make_wsgi_app

from htdask.exporter import page, snapshot
from htdask.exporter.collector import HtdaskCollector
from htdask.state import Store

log = logging.getLogger(__name__)

DEFAULT_ADDRESS, DEFAULT_PORT = "127.0.0.1", 9808


def registry_for(store: Store, poll_interval: float, schedds: tuple[str, ...] = ()) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HtdaskCollector(store, poll_interval, schedds))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class App:
    """The WSGI application: one store, one registry, three paths."""

    def __init__(self, store: Store, poll_interval: float, schedds: tuple[str, ...] = ()):
        self.store, self.poll_interval, self.schedds = store, poll_interval, schedds
        self.metrics = make_wsgi_app(registry_for(store, poll_interval, schedds))

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return self.metrics(environ, start_response)
        if path == "/healthz":
            return _reply(start_response, "200 OK", "text/plain; charset=utf-8", "ok\n")
        if path in ("/", "/index.html"):
            try:
                snap = snapshot.read(self.store, self.poll_interval, self.schedds)
            except redis.exceptions.RedisError as err:
                log.error("status page: cannot read Redis: %s", err)
                return _reply(start_response, "503 Service Unavailable", "text/plain; charset=utf-8",
                              f"cannot read Redis: {err}\n")
            return _reply(start_response, "200 OK", "text/html; charset=utf-8", page.render(snap))
        return _reply(start_response, "404 Not Found", "text/plain; charset=utf-8", "not found\n")


def _reply(start_response, status: str, content_type: str, body: str):
    data = body.encode()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store")])
    return [data]


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(WSGIRequestHandler):
    def log_message(self, format, *args):  # requests at DEBUG, not on stderr
        log.debug("%s %s", self.address_string(), format % args)


def make(address: str, port: int, app) -> WSGIServer:
    """Bind the server (OSError when the address cannot be bound)."""
    server_class = _Server6 if ":" in address else _Server
    return make_server(address, port, app, server_class=server_class, handler_class=_Handler)


def serve(address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT, *, redis_url: str | None = None,
          poll_interval: float | None = None, schedds: tuple[str, ...] | None = None, on_ready=None) -> None:
    """Serve until SIGTERM/SIGINT. `on_ready(url)` is called once the socket listens.

    Raises ValueError for a bad setting (naming it) and OSError when the address cannot be bound."""
    from htdask.state import connect
    from htdask.state.connection import check_eviction_or_exit
    from tasks.config import settings
    s = settings()
    if (poll_interval if poll_interval is not None else s.poll_interval) <= 0:
        raise ValueError(f"POLL_INTERVAL must be positive, not {s.poll_interval:g}")
    store = Store(connect(redis_url or s.redis_url), settings=s)
    check_eviction_or_exit("htdask exporter", store.r)  # the status page shows it when allowed
    app = App(store, s.poll_interval if poll_interval is None else poll_interval,
              s.schedds if schedds is None else schedds)
    server = make(address, port, app)
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{server.server_port}/"
    log.info("exporter serving %s (metrics at %smetrics)", url, url)
    if on_ready:
        on_ready(url)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
