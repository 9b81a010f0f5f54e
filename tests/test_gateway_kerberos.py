"""Kerberos login end to end: a real KDC on loopback (Debian's krb5-kdc, set up by PyPI `k5test` in a private
directory, ~2 s), the gateway with GATEWAY_AUTH=kerberos and a keytab holding `HTTP/127.0.0.1`, and the
dask-gateway client's KerberosAuth (pykerberos) with a ticket of a principal named as a Unix user: the cluster's
worker jobs are owned in the pool by that user. A request without a ticket is told to Negotiate (401).

Needs root (Unix users), redis-server, the pool, krb5kdc/kdb5_util/kadmin.local (`make deps`), pykerberos and
k5test; skips with one line naming what is missing.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from htdask.demo.gateway_server import GatewayServer, close_client
from htdask.demo.services import have_redis
from tests.conftest import live, needs, queue_of, wait_until
from tests.test_gateway import FAST, make_stack, no_processes_left

pytestmark = [pytest.mark.skipif(not have_redis(), reason="redis-server is not installed"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

KRB5_CONF = {"libdefaults": {"dns_canonicalize_hostname": "false", "rdns": "false"}}


def _free_port_base(count: int = 10) -> int:
    """A base port with `count` consecutive free loopback ports (k5test's KDC uses base .. base+9)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count >= 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    pytest.fail("no 10 consecutive free ports for the KDC")


@pytest.fixture(scope="module")
@needs("root")
def krb_user():
    """A Unix user (uid >= 1000) with a principal of the same name, removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("creating a Unix user needs root (CI runs as root)")
    user = f"htdask-krb-{os.getpid()}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", user], check=True)
    try:
        yield user
    finally:
        subprocess.run(["userdel", user], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
@needs("root", "external")
def realm(krb_user):
    """A KDC on loopback: principals HTTP/127.0.0.1 (the gateway's, in a 0600 keytab) and the user's, with a
    ticket of the user in the realm's credential cache."""
    for program in ("krb5kdc", "kdb5_util", "kadmin.local", "kinit"):
        if shutil.which(program) is None and not os.path.exists(f"/usr/sbin/{program}"):
            pytest.skip(f"{program} is not installed (make deps: krb5-kdc krb5-admin-server krb5-user)")
    k5test = pytest.importorskip("k5test", reason="k5test is not installed (requirements-dev.txt)")
    pytest.importorskip("kerberos", reason="pykerberos is not installed (requirements-dev.txt; libkrb5-dev)")
    r = k5test.K5Realm(portbase=_free_port_base(), krb5_conf=KRB5_CONF, create_host=False, create_user=False,
                       get_creds=False)
    try:
        r.addprinc("HTTP/127.0.0.1")
        keytab = os.path.join(r.tmpdir, "gateway.keytab")
        r.extract_keytab("HTTP/127.0.0.1", keytab)
        os.chmod(keytab, 0o600)
        r.addprinc(krb_user, "user-password")
        r.kinit(krb_user, "user-password")
        r.gateway_keytab = keytab
        yield r
    finally:
        r.stop()  # the KDC (its own process, by its Popen) and the realm's directory


@pytest.fixture(scope="module")
@needs("stack")
def krb_gateway(service_user, realm):
    with make_stack(service_user) as stack:
        env = {**stack.env, "GATEWAY_AUTH": "kerberos", "GATEWAY_KERBEROS_KEYTAB": realm.gateway_keytab,
               "KRB5_CONFIG": realm.env["KRB5_CONFIG"], "GATEWAY_RUN_AS_OWNER": "1", "USER_MAP_FILE": "",
               "CICONNECT_URL": ""}
        srv = GatewayServer(env, stack.workdir / "gw-krb", overrides=FAST)
        srv.start()
        try:
            yield stack, srv
        finally:
            srv.stop()
        assert no_processes_left(srv)


def test_a_request_without_a_ticket_is_asked_to_negotiate(krb_gateway):
    stack, srv = krb_gateway
    try:
        urllib.request.urlopen(f"{srv.address}/api/v1/clusters/", timeout=30)
        pytest.fail("answered without a login")
    except urllib.error.HTTPError as e:
        assert e.code == 401 and e.headers.get("WWW-Authenticate") == "Negotiate"
    req = urllib.request.Request(f"{srv.address}/api/v1/clusters/", headers={"Authorization": "Negotiate AAAA"})
    with pytest.raises(urllib.error.HTTPError) as err:  # a token the KDC never issued (upstream: 500)
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code >= 400
    assert stack.calls("condor_submit") == []


def test_a_kerberos_users_cluster_is_owned_by_that_unix_user(krb_gateway, realm, krb_user, monkeypatch):
    from dask_gateway import Gateway, KerberosAuth
    stack, srv = krb_gateway
    monkeypatch.setenv("KRB5_CONFIG", realm.env["KRB5_CONFIG"])  # the client side: the realm and the ticket
    monkeypatch.setenv("KRB5CCNAME", realm.env["KRB5CCNAME"])
    gw = Gateway(srv.address, auth=KerberosAuth())
    try:
        cluster = gw.new_cluster()
        name = cluster.name
        cluster.scale(1)
        jobs = wait_until(lambda: live(stack, name), timeout=60, message="the worker job in the queue")
        assert {j["Owner"] for j in jobs} == {krb_user}, "the principal's name is the jobs' Unix user"
        cluster.shutdown()
        wait_until(lambda: not queue_of(stack, name), timeout=60, message="queue empty after shutdown")
    finally:
        close_client(gw)
