"""The gateway's login settings (GATEWAY_AUTH, htdask/gateway/auth.py) through the shipped config file: which
authenticator each selects, with which traitlets, and the one line a missing or unsafe setting stops it with.
(A real JupyterHub: tests/test_gateway_jupyterhub.py; a real KDC: tests/test_gateway_kerberos.py.)"""
from __future__ import annotations

import getpass

import pytest

from tests.test_gateway_units import _load_config, _run_config

TOKEN = "0123456789abcdef-service-token"


def _base(**env) -> dict:
    me = getpass.getuser()
    owner = {"GATEWAY_RUN_AS_OWNER": "1"} if me == "root" else {"DEFAULT_OWNER": me}
    return {"GATEWAY_PASSWORD": "", "JUPYTERHUB_API_URL": "", "JUPYTERHUB_API_TOKEN": "",
            "JUPYTERHUB_API_TOKEN_FILE": "", "JUPYTERHUB_SERVICE_NAME": "", **owner, **env}


def _refused(env: dict, *words: str) -> str:
    res = _run_config(env)
    assert res.returncode == 2 and res.stdout == "", (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dask-gateway-server: refusing to start: "), res.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert TOKEN not in res.stderr
    return lines[0]


def test_jupyterhub_login_is_the_hub_authenticator_with_the_service_scope_enforced():
    cfg = _load_config(_base(GATEWAY_AUTH="jupyterhub", JUPYTERHUB_API_URL="http://hub.example.org:8081/hub/api/",
                             JUPYTERHUB_API_TOKEN=TOKEN))
    assert cfg["DaskGateway"]["authenticator_class"] == "htdask.gateway.auth.HubAuthenticator"
    hub = cfg["JupyterHubAuthenticator"]
    assert hub["jupyterhub_api_url"] == "http://hub.example.org:8081/hub/api"
    assert hub["jupyterhub_api_token"] == TOKEN
    assert hub["jupyterhub_service_name"] == "dask-gateway", "the default service name: scopes are checked"
    assert hub["use_service_access_scopes"] is True
    assert "SimpleAuthenticator" not in cfg, "no shared password is configured"


def test_the_hub_authenticator_takes_its_config_and_is_upstreams():
    from dask_gateway_server.auth import JupyterHubAuthenticator
    from traitlets.config import Config

    from htdask.gateway.auth import HubAuthenticator
    c = Config()
    c.JupyterHubAuthenticator.jupyterhub_api_url = "http://127.0.0.1:1/hub/api"
    c.JupyterHubAuthenticator.jupyterhub_service_name = "gw"
    a = HubAuthenticator(config=c)
    assert isinstance(a, JupyterHubAuthenticator)
    assert (a.jupyterhub_api_url, a.jupyterhub_service_name, a.use_service_access_scopes) == \
        ("http://127.0.0.1:1/hub/api", "gw", True)


def test_jupyterhub_token_from_a_file_readable_only_by_the_gateway(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = _base(GATEWAY_AUTH="jupyterhub", JUPYTERHUB_API_URL="https://hub/hub/api",
                JUPYTERHUB_API_TOKEN_FILE=str(token_file), JUPYTERHUB_SERVICE_NAME="gateway-1")
    cfg = _load_config(env)
    assert cfg["JupyterHubAuthenticator"]["jupyterhub_api_token"] == TOKEN
    assert cfg["JupyterHubAuthenticator"]["jupyterhub_service_name"] == "gateway-1"
    token_file.chmod(0o644)
    _refused(env, "JUPYTERHUB_API_TOKEN_FILE=", "readable by every user")


@pytest.mark.parametrize("env,words", [
    ({"JUPYTERHUB_API_TOKEN": TOKEN}, ["JUPYTERHUB_API_URL=(unset)", "http(s)://"]),
    ({"JUPYTERHUB_API_URL": "hub:8081/hub/api", "JUPYTERHUB_API_TOKEN": TOKEN}, ["JUPYTERHUB_API_URL=hub:8081"]),
    ({"JUPYTERHUB_API_URL": "http://u:pw@hub/hub/api", "JUPYTERHUB_API_TOKEN": TOKEN}, ["(with user info)"]),
    ({"JUPYTERHUB_API_URL": "http://hub/hub/api"}, ["JUPYTERHUB_API_TOKEN or JUPYTERHUB_API_TOKEN_FILE"]),
    ({"JUPYTERHUB_API_URL": "http://hub/hub/api", "JUPYTERHUB_API_TOKEN_FILE": "/nonexistent/token"},
     ["JUPYTERHUB_API_TOKEN_FILE=/nonexistent/token", "No such file"]),
    ({"JUPYTERHUB_API_URL": "http://hub/hub/api", "JUPYTERHUB_API_TOKEN": TOKEN,
      "JUPYTERHUB_SERVICE_NAME": "dask gateway!"}, ["JUPYTERHUB_SERVICE_NAME='dask gateway!'"]),
])
def test_an_unusable_jupyterhub_login_stops_the_gateway_with_one_line(env, words):
    line = _refused(_base(GATEWAY_AUTH="jupyterhub", **env), *words)
    assert "pw@" not in line


def test_kerberos_login_needs_a_keytab_only_the_gateway_reads(tmp_path):
    pytest.importorskip("kerberos", reason="pykerberos is not installed (requirements-dev.txt; libkrb5-dev)")
    _refused(_base(GATEWAY_AUTH="kerberos"), "GATEWAY_KERBEROS_KEYTAB")
    _refused(_base(GATEWAY_AUTH="kerberos", GATEWAY_KERBEROS_KEYTAB=str(tmp_path / "none.keytab")),
             "GATEWAY_KERBEROS_KEYTAB=", "No such file")
    _refused(_base(GATEWAY_AUTH="kerberos", GATEWAY_KERBEROS_KEYTAB=str(tmp_path)), "not a regular file")
    keytab = tmp_path / "gw.keytab"
    keytab.write_bytes(b"\x05\x02")
    keytab.chmod(0o644)
    _refused(_base(GATEWAY_AUTH="kerberos", GATEWAY_KERBEROS_KEYTAB=str(keytab)), "readable by every user")
    keytab.chmod(0o600)
    cfg = _load_config(_base(GATEWAY_AUTH="kerberos", GATEWAY_KERBEROS_KEYTAB=str(keytab)))
    assert cfg["DaskGateway"]["authenticator_class"] == "dask_gateway_server.auth.KerberosAuthenticator"
    assert cfg["KerberosAuthenticator"] == {"keytab": str(keytab), "service_name": "HTTP"}
    cfg = _load_config(_base(GATEWAY_AUTH="kerberos", GATEWAY_KERBEROS_KEYTAB=str(keytab),
                             GATEWAY_KERBEROS_SERVICE_NAME="dask"))
    assert cfg["KerberosAuthenticator"]["service_name"] == "dask"


def test_simple_login_still_needs_the_shared_password_and_bad_choices_are_named():
    _refused(_base(), "GATEWAY_PASSWORD is unset", "GATEWAY_AUTH")
    cfg = _load_config(_base(GATEWAY_AUTH="simple", GATEWAY_PASSWORD="pw"))
    assert cfg["DaskGateway"]["authenticator_class"] == "dask_gateway_server.auth.SimpleAuthenticator"
    assert cfg["SimpleAuthenticator"]["password"] == "pw"
    _refused(_base(GATEWAY_AUTH="ldap"), "bad setting: GATEWAY_AUTH='ldap'", "jupyterhub", "kerberos")

