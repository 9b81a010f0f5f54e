"""The site's own login, end to end: a real JupyterHub (PyPI `jupyterhub`, its configurable-http-proxy from npm)
with its dummy authenticator and two hub users, and the gateway as a JupyterHub service (GATEWAY_AUTH=jupyterhub).

A hub user logs in to the hub (user name + password through the hub's token API, as `jupyterhub token`-style
tools do), gets a token, and opens a gateway cluster with it: the cluster's worker jobs are owned in the pool by
the Unix user USER_MAP_FILE maps the hub user's e-mail name to, and the work runs as that user. A token the hub
does not know, and the token of a hub user without the `access:services!service=dask-gateway` scope, are refused
(401). The service's token and the user's never reach a job ad, a condor_* command line, a Redis value (task
messages and records), the gateway's log, or a scheduler's environment.

Needs root (Unix users), redis-server, the pool, `jupyterhub` and `configurable-http-proxy` (make deps installs
it with npm under the venv); skips with one line naming what is missing.
"""
from __future__ import annotations

import asyncio
import json
import os
import pwd
import secrets
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from htdask.demo.gateway_server import GatewayServer, close_client
from htdask.demo.procs import Process, free_port
from htdask.demo.services import Stack, have_redis
from htdask.state import connect
from tests.conftest import live, needs, queue_of, wait_until
from tests.test_gateway import FAST, make_stack, no_processes_left

pytestmark = [pytest.mark.skipif(not have_redis(), reason="redis-server is not installed"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

SERVICE = "dask-gateway"
HUB_USER = "dana@example.org"  # a hub name that is an e-mail: mapped by USER_MAP_FILE
OUTSIDER = "erin"  # a hub user without the gateway's access scope


def chp_program() -> str | None:
    """configurable-http-proxy: on PATH, else where `make deps` puts it (npm --prefix <venv>/npm)."""
    found = shutil.which("configurable-http-proxy")
    local = Path(sys.prefix) / "npm" / "node_modules" / ".bin" / "configurable-http-proxy"
    return found or (str(local) if local.exists() else None)


class Hub:
    """A JupyterHub on loopback (its proxy's public port, API port and the hub's own port are free ports)."""

    def __init__(self, workdir: Path, service_token: str, password: str):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.proxy_api, self.hub_port = free_port(), free_port(), free_port()
        self.password = password
        config = workdir / "jupyterhub_config.py"
        config.touch(mode=0o600)  # the service's token is in it
        config.write_text("\n".join([
            "c = get_config()  # noqa: F821",
            f"c.JupyterHub.bind_url = 'http://127.0.0.1:{self.port}'",
            f"c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{self.hub_port}'",
            f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{self.proxy_api}'",
            f"c.ConfigurableHTTPProxy.command = [{chp_program()!r}]",
            f"c.ConfigurableHTTPProxy.pid_file = {str(workdir / 'proxy.pid')!r}",
            f"c.JupyterHub.db_url = 'sqlite:///{workdir / 'hub.sqlite'}'",
            f"c.JupyterHub.cookie_secret_file = {str(workdir / 'cookie_secret')!r}",
            "c.JupyterHub.authenticator_class = 'dummy'",
            f"c.DummyAuthenticator.password = {password!r}",
            f"c.Authenticator.allowed_users = {{{HUB_USER!r}, {OUTSIDER!r}}}",
            # The gateway as an external service, and the role that lets a user's token reach it.
            f"c.JupyterHub.services = [{{'name': {SERVICE!r}, 'api_token': {service_token!r}}}]",
            f"c.JupyterHub.load_roles = [{{'name': 'dask-gateway-users', 'users': [{HUB_USER!r}],"
            f" 'scopes': ['access:services!service={SERVICE}']}}]",
        ]) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "CONFIGPROXY_"))}
        self.proc = Process([sys.executable, "-m", "jupyterhub", "-f", str(config)], env=env, cwd=str(workdir),
                            log_path=workdir / "hub.log", name="jupyterhub")
        try:
            wait_until(self._up, timeout=90, message=f"JupyterHub answering on its proxy (log {workdir}/hub.log)")
        except BaseException:
            self.stop()
            raise

    @property
    def api_url(self) -> str:
        """The hub's API through its proxy (the public URL a site would give the gateway)."""
        return f"http://127.0.0.1:{self.port}/hub/api"

    def _up(self) -> bool:
        if not self.proc.alive():
            pytest.fail(f"JupyterHub exited:\n{self.proc.tail(40)}")
        try:
            with urllib.request.urlopen(f"{self.api_url}/", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def login_token(self, user: str) -> str:
        """A new API token of `user`, asked with the user's name and password (the hub's authenticator)."""
        body = json.dumps({"auth": {"username": user, "password": self.password}, "note": "htdask test"})
        req = urllib.request.Request(f"{self.api_url}/users/{urllib.parse.quote(user)}/tokens", data=body.encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)["token"]

    def stop(self) -> None:
        self.proc.stop(timeout=20)  # the hub and the proxy it started (one process group)


@pytest.fixture(scope="module")
@needs("root")
def mapped_user():
    """The Unix user the hub user's e-mail maps to (uid >= 1000), removed at the end."""
    import subprocess
    if os.geteuid() != 0:
        pytest.skip("creating a Unix user needs root (CI runs as root)")
    user = f"htdask-hub-{os.getpid()}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", user], check=True)
    try:
        yield user
    finally:
        subprocess.run(["userdel", user], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
@needs("stack", "external")
def hub_stack(service_user, mapped_user, tmp_path_factory):
    """A JupyterHub, a stack (Redis, Celery worker and beat, the pool) and a gateway logging in through the hub."""
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        pytest.skip("jupyterhub is not installed (requirements-dev.txt)")
    if chp_program() is None:
        pytest.skip("configurable-http-proxy is not installed (make deps: npm install --prefix <venv>/npm)")
    work = tmp_path_factory.mktemp("hub")
    service_token = secrets.token_hex(32)
    hub = Hub(work / "hub", service_token, password=secrets.token_hex(8))
    try:
        token_file = work / "gateway-service-token"
        token_file.touch(mode=0o600)
        token_file.write_text(service_token + "\n")
        user_map = work / "users.yaml"
        user_map.write_text(f"{HUB_USER}: {mapped_user}\n")
        with make_stack(service_user) as stack:
            env = {**stack.env, "GATEWAY_AUTH": "jupyterhub", "JUPYTERHUB_API_URL": hub.api_url,
                   "JUPYTERHUB_API_TOKEN_FILE": str(token_file), "JUPYTERHUB_SERVICE_NAME": SERVICE,
                   "GATEWAY_RUN_AS_OWNER": "1", "USER_MAP_FILE": str(user_map), "CICONNECT_URL": ""}
            env.pop("JUPYTERHUB_API_TOKEN", None)
            srv = GatewayServer(env, stack.workdir / "gw-hub", overrides=FAST)
            srv.start()
            try:
                yield hub, stack, srv, service_token
            finally:
                srv.stop()
            assert no_processes_left(srv)
    finally:
        hub.stop()


def _gateway(srv: GatewayServer, token: str):
    from dask_gateway import Gateway, JupyterHubAuth
    return Gateway(srv.address, auth=JupyterHubAuth(api_token=token))


def _status_with(srv: GatewayServer, authorization: str | None) -> int:
    """HTTP status of the gateway's cluster list with this Authorization header (raw, no client retry)."""
    req = urllib.request.Request(f"{srv.address}/api/v1/clusters/",
                                 headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_a_bad_token_and_a_user_without_the_access_scope_are_refused(hub_stack):
    import aiohttp
    hub, stack, srv, service_token = hub_stack
    assert _status_with(srv, None) == 401
    assert _status_with(srv, "jupyterhub " + secrets.token_hex(16)) == 401, "a token the hub does not know"
    outsider = hub.login_token(OUTSIDER)
    assert _status_with(srv, "jupyterhub " + outsider) == 401, "a hub user without access:services!service=..."

    async def new_cluster_with_a_bad_token():
        from dask_gateway import Gateway, JupyterHubAuth
        async with Gateway(srv.address, auth=JupyterHubAuth(api_token=secrets.token_hex(16)),
                           asynchronous=True) as gw:
            await gw.new_cluster()

    with pytest.raises(aiohttp.ClientResponseError) as err:  # what a user sees from the client
        asyncio.run(new_cluster_with_a_bad_token())
    assert err.value.status == 401
    assert _status_with(srv, "jupyterhub " + hub.login_token(HUB_USER)) == 200, "the same call with a good token"
    assert stack.calls("condor_submit") == [], "nothing was submitted for a refused login"


def test_a_hub_users_token_opens_a_cluster_owned_by_the_mapped_unix_user(hub_stack, mapped_user):
    hub, stack, srv, service_token = hub_stack
    token = hub.login_token(HUB_USER)
    gw = _gateway(srv, token)
    try:
        cluster = gw.new_cluster()
        name = cluster.name
        assert name in [c.name for c in gw.list_clusters()]
        cluster.scale(1)
        client = cluster.get_client(set_as_default=False)
        client.wait_for_workers(1, timeout=120)
        assert {j["Owner"] for j in live(stack, name)} == {mapped_user}, "the job ads' Owner is the mapped user"
        uid = pwd.getpwnam(mapped_user).pw_uid
        assert client.submit(lambda: __import__("os").getuid(), pure=False).result(timeout=60) == uid
        assert client.run_on_scheduler(lambda: __import__("os").getuid()) == uid
        scheduler_env = _environments(srv)
        assert scheduler_env, "the scheduler and the worker are found by the run mark"
        _assert_no_secret(stack, srv, scheduler_env, secrets_=(service_token, token))
        client.close()
        cluster.shutdown()
        wait_until(lambda: not queue_of(stack, name), timeout=60, message="queue empty after shutdown")
    finally:
        close_client(gw)


def _environments(srv: GatewayServer) -> str:
    """Environment and command line of every process of this gateway but the gateway itself (schedulers, jobs)."""
    out = []
    for row in srv.processes():
        pid = int(row.split()[0])
        if pid == srv.proc.pid:
            continue
        try:
            out.append(Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace"))
            out.append(row)
        except OSError:
            continue
    return "\n".join(out)


def _assert_no_secret(stack: Stack, srv: GatewayServer, scheduler_env: str, secrets_: tuple[str, ...]) -> None:
    ads = stack.condor("condor_q", "-allusers", "-long").stdout + stack.condor("condor_history", "-long").stdout
    calls = (Path(stack.env["LOCALPOOL_DIR"]) / "calls.log").read_text()
    r = connect(stack.redis.url)
    values = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == "string":
            values.append(r.get(key))
        elif kind == "hash":
            values.extend(f"{k}={v}" for k, v in r.hgetall(key).items())
        elif kind == "list":
            values.extend(r.lrange(key, 0, -1))
        elif kind in ("set", "zset"):
            values.extend(r.smembers(key) if kind == "set" else r.zrange(key, 0, -1))
    redis_text = "\n".join(str(v) for v in values)
    assert ads.strip() and calls.strip() and redis_text.strip(), "there is something to look in"
    for secret in secrets_:
        assert secret not in ads, "a token in a job ad"
        assert secret not in calls, "a token on a condor_* command line"
        assert secret not in redis_text, "a token in Redis (task messages, records)"
        assert secret not in srv.log_path.read_text(errors="replace"), "a token in the gateway's log"
        assert secret not in scheduler_env, "a token in a scheduler's or job's environment or argv"
