"""A dask-gateway-server in this process (upstream's ``temp_gateway``), for tests of the backend's hooks.

    g = ThreadGateway(gateway_config(stack, "htdask-svc")).start()
    g.call(g.backend.do_check_workers(workers))   # a coroutine on the gateway's loop
    gw = g.client("alice")                        # a synchronous dask_gateway.Gateway
    g.stop()

`gateway_config` is htdask/gateway/config.py's configuration for a `htdask.demo.services.Stack`, with short periods.
"""
from __future__ import annotations

import asyncio
import threading

PASSWORD = "conformance"

#: short periods, as upstream's tests use (every value documented in htdask/gateway/backend.py)
FAST = {
    "cluster_heartbeat_period": 2,
    "cluster_heartbeat_timeout": 60.0,  # a busy 2-core machine may delay a heartbeat
    "worker_status_period": 10.0,  # as shipped: workers usually connect before a check sees their job
    "cluster_status_period": 1.0,
    "check_timeouts_period": 0.5,
}


def gateway_config(stack, job_user: str, **backend):
    """The traitlets Config of htdask/gateway/config.py for this stack, with short periods (+ `backend` overrides)."""
    from traitlets.config import Config
    from htdask.gateway.pyenv import dask_command, job_environment
    c = Config()
    c.DaskGateway.address = "127.0.0.1:0"
    c.Proxy.address = "127.0.0.1:0"
    c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
    c.SimpleAuthenticator.password = PASSWORD
    c.DaskGateway.backend_class = "htdask.gateway.backend.HTCondorBackend"
    c.DaskGateway.log_level = "INFO"
    c.HTCondorBackend.redis_url = stack.env["REDIS_URL"]
    c.HTCondorBackend.schedd = stack.env["SCHEDD_NAME"]
    c.HTCondorBackend.job_user = job_user
    for key, value in {**FAST, **backend}.items():
        setattr(c.HTCondorBackend, key, value)
    c.HTCondorClusterConfig.scheduler_cmd = dask_command("scheduler")
    c.HTCondorClusterConfig.worker_cmd = dask_command("worker")
    c.HTCondorClusterConfig.worker_cores = 1
    c.HTCondorClusterConfig.worker_memory = "512 M"
    c.HTCondorClusterConfig.environment = job_environment()
    c.HTCondorClusterConfig.adaptive_period = 0.5
    return c


class ThreadGateway:
    """upstream's ``temp_gateway``: a DaskGateway in this process, on an event loop of its own thread.

    `call(coro)` runs a coroutine (e.g. ``backend.do_check_workers(...)``) on that loop; `client()`
    is a synchronous `dask_gateway.Gateway`.
    """

    def __init__(self, config):
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.loop.add_signal_handler = lambda *a, **k: None  # signals belong to the main thread
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway-loop", daemon=True)
        self.gateway = None

    def start(self) -> "ThreadGateway":
        from dask_gateway_server.app import DaskGateway
        self.thread.start()

        async def setup():
            self.gateway = DaskGateway(config=self.config)
            self.gateway.initialize([])
            await self.gateway.setup()
            await self.gateway.backend.proxy._proxy_contacted
            await asyncio.sleep(0.25)  # as upstream (dask-gateway#529)
        self.call(setup(), timeout=60)
        return self

    @property
    def backend(self):
        return self.gateway.backend

    def call(self, coro, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn, *args, timeout: float = 30.0):
        """Run a plain function on the gateway's loop (the database is not thread-safe)."""
        async def wrap():
            return fn(*args)
        return self.call(wrap(), timeout)

    def client(self, user: str = "alice", **kwargs):
        from dask_gateway import BasicAuth, Gateway
        proxy = self.gateway.backend.proxy
        return Gateway(f"http://{proxy.address}", proxy_address=f"gateway://{proxy.tcp_address}",
                       auth=BasicAuth(user, PASSWORD), **kwargs)

    def stop(self) -> None:
        if self.gateway is not None:
            try:
                self.call(self.gateway.cleanup(), timeout=120)
            finally:
                self.gateway = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
