"""Owner e-mail -> Unix user: a real HTTP round trip to a loopback server that answers like CI Connect.

The server (http.server in a thread) serves GET /v1alpha1/users?token=T with the shapes of
maniaclab/ci-connect-api: a UserList for the right token, 403 {"kind":"Error","message":"Not authorized"}
otherwise; it counts requests and can be told to fail or stall first.  The cache is a real redis-server.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from htdask.demo.procs import free_port
from htdask.settings import SettingsError
from htdask.state import Store, connect, keys
from workers import identity
from workers.identity import (AmbiguousEmail, CIConnectBadAnswer, CIConnectTokenRefused, CIConnectUnreachable,
                              IdentityConfigError, IdentityError, IdentityNotConfigured, IdentityUnavailable,
                              UnknownEmail, resolve_owner)
from workers.runas import UserRefused
from htdask.domain.validation import ValidationError

TOKEN = "tok-3c9f1e2a-SECRET-b7d4"


def user(email, unix_name, **extra):
    meta = {"name": unix_name.title(), "email": email, "phone": "555-0100", "institution": "Example U",
            "unix_name": unix_name, "unix_id": 20000 + len(unix_name), "join_date": "2020-01-01 00:00:00",
            "last_use_time": "2024-01-01 00:00:00", "superuser": False, "service_account": False}
    meta.update(extra)
    return {"metadata": meta}


USERS = [
    user("alice@example.org", "alice"),
    user("Bob.Smith@Uni.EDU", "bsmith"),
    user("carol@example.org", "carol"),
    user("shared@example.org", "shared1"),
    user("SHARED@example.org", "shared2"),
]


class FakeCIConnect:
    """A loopback HTTP server with CI Connect's /v1alpha1/users answers; counts every request."""

    def __init__(self, users=USERS, token=TOKEN):
        self.users = list(users)
        self.token = token
        self.requests: list[tuple[str, dict]] = []
        self.fail_first: list[int] = []   # statuses answered (and consumed) before the real answer
        self.delay = 0.0
        self.body_override: dict | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                server.requests.append((parts.path, query))
                if server.delay:
                    time.sleep(server.delay)
                if server.fail_first:
                    status = server.fail_first.pop(0)
                    return self._send(status, {"kind": "Error", "message": "Internal Server Error"})
                if query.get("token") != [server.token]:
                    return self._send(403, {"kind": "Error", "message": "Not authorized"})
                if parts.path != "/v1alpha1/users":
                    return self._send(404, {"kind": "Error", "message": "Not found"})
                if server.body_override is not None:
                    return self._send(200, server.body_override)
                self._send(200, {"apiVersion": "v1alpha1", "kind": "UserList", "items": server.users})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def count(self) -> int:
        return len(self.requests)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def api():
    server = FakeCIConnect().start()
    yield server
    server.stop()


@pytest.fixture
def store(redis_server):
    return Store(connect(redis_server.url))


@pytest.fixture(autouse=True)
def env(monkeypatch, api):
    for name in ("USER_MAP_FILE", "CICONNECT_TOKEN_FILE", "DENY_USERS", "MIN_SUBMIT_UID", "IDENTITY_CACHE_TTL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CICONNECT_URL", api.url)
    monkeypatch.setenv("CICONNECT_TOKEN", TOKEN)
    monkeypatch.setenv("CICONNECT_TIMEOUT", "2")
    monkeypatch.setenv("CICONNECT_RETRIES", "2")
    monkeypatch.setenv("CICONNECT_BACKOFF", "0.01")


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(autouse=True)
def all_logs():
    """Every record of every logger at DEBUG (urllib3's request lines too); none may hold the token."""
    root, handler = logging.getLogger(), Collect()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # pytest resets the root level for each phase; levels set on these loggers stay
    loggers = [logging.getLogger(n) for n in ("urllib3", "requests", "workers", "htdask")]
    old_levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for lg, level in zip(loggers, old_levels):
            lg.setLevel(level)
    assert TOKEN not in handler.text, "the CI Connect token reached a log record"


def no_token_in(exc: BaseException) -> None:
    shown = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)
    assert TOKEN not in shown


# ---- success, matching, cache ----------------------------------------------------------------------

def test_email_resolves_through_a_real_http_round_trip(api, store):
    assert resolve_owner("alice@example.org", store, check=False) == "alice"
    assert api.count == 1
    path, query = api.requests[0]
    assert path == "/v1alpha1/users" and query["token"] == [TOKEN]
    assert store.cached_identity("alice@example.org") == "alice"


def test_match_is_case_insensitive_on_both_sides(api, store):
    assert resolve_owner("ALICE@Example.ORG", store, check=False) == "alice"
    assert resolve_owner("bob.smith@uni.edu", store, check=False) == "bsmith"


def test_second_look_up_makes_no_request(api, store):
    assert resolve_owner("carol@example.org", store, check=False) == "carol"
    assert api.count == 1
    assert resolve_owner("carol@example.org", store, check=False) == "carol"
    assert resolve_owner("Carol@EXAMPLE.org", store, check=False) == "carol"
    assert api.count == 1


def test_cache_entry_expires_after_the_ttl(api, store, monkeypatch):
    monkeypatch.setenv("IDENTITY_CACHE_TTL", "1")
    assert resolve_owner("alice@example.org", store, check=False) == "alice"
    assert 0 < store.r.ttl(keys.identity("alice@example.org")) <= 1
    assert resolve_owner("alice@example.org", store, check=False) == "alice"
    assert api.count == 1
    time.sleep(1.3)
    assert store.cached_identity("alice@example.org") is None
    assert resolve_owner("alice@example.org", store, check=False) == "alice"
    assert api.count == 2


def test_ttl_zero_disables_the_cache(api, store, monkeypatch):
    monkeypatch.setenv("IDENTITY_CACHE_TTL", "0")
    resolve_owner("alice@example.org", store, check=False)
    resolve_owner("alice@example.org", store, check=False)
    assert api.count == 2 and store.cached_identity("alice@example.org") is None


def test_redis_down_still_resolves_uncached(api, all_logs):
    dead = Store(connect(f"redis://127.0.0.1:{free_port()}/0"))
    assert resolve_owner("alice@example.org", dead, check=False) == "alice"
    assert "identity cache unavailable" in all_logs.text


def test_token_from_token_file(api, store, tmp_path, monkeypatch):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    monkeypatch.delenv("CICONNECT_TOKEN")
    monkeypatch.setenv("CICONNECT_TOKEN_FILE", str(path))
    assert resolve_owner("alice@example.org", store, check=False) == "alice"
    assert api.requests[0][1]["token"] == [TOKEN]


# ---- mapping file ----------------------------------------------------------------------------------

def write_map(path, text):
    path.write_text(text)
    st = os.stat(path)  # make sure the mtime moves even on coarse-grained file systems
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_mapping_file_wins_over_ci_connect(api, store, tmp_path, monkeypatch):
    path = tmp_path / "users.yaml"
    write_map(path, "# site map\nAlice@Example.org: alice-local\ndave@example.org: dave\n")
    monkeypatch.setenv("USER_MAP_FILE", str(path))
    assert resolve_owner("alice@example.org", store, check=False) == "alice-local"
    assert resolve_owner("DAVE@example.org", store, check=False) == "dave"
    assert api.count == 0
    assert store.cached_identity("alice@example.org") is None, "map answers are not cached"
    # not in the map: CI Connect is still asked
    assert resolve_owner("carol@example.org", store, check=False) == "carol"
    assert api.count == 1


def test_mapping_file_is_reloaded_when_it_changes(api, store, tmp_path, monkeypatch):
    path = tmp_path / "users.yaml"
    write_map(path, "alice@example.org: first\n")
    monkeypatch.setenv("USER_MAP_FILE", str(path))
    assert resolve_owner("alice@example.org", store, check=False) == "first"
    write_map(path, "alice@example.org: second\n")
    assert resolve_owner("alice@example.org", store, check=False) == "second"


def test_mapping_file_alone_unknown_email_is_bad_input(tmp_path, monkeypatch, store):
    path = tmp_path / "users.yaml"
    write_map(path, "alice@example.org: alice\n")
    monkeypatch.setenv("USER_MAP_FILE", str(path))
    monkeypatch.delenv("CICONNECT_URL")
    with pytest.raises(UnknownEmail) as e:
        resolve_owner("zed@example.org", store, check=False)
    assert isinstance(e.value, ValidationError) and "zed@example.org" in str(e.value)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("text,needle", [
    ("alice@example.org: [unclosed\n", "not valid YAML"),
    ("- alice@example.org\n- alice\n", "must be a mapping"),
    ("alice@example.org: root; rm -rf /\n", "USER_MAP_FILE user"),
    ("not-an-email: alice\n", "USER_MAP_FILE e-mail"),
    ("alice@example.org: a\nALICE@example.org: b\n", "mapped twice"),
])
def test_broken_mapping_file_is_a_configuration_error(tmp_path, monkeypatch, store, text, needle):
    path = tmp_path / "users.yaml"
    write_map(path, text)
    monkeypatch.setenv("USER_MAP_FILE", str(path))
    with pytest.raises(IdentityConfigError) as e:
        resolve_owner("alice@example.org", store, check=False)
    assert needle in str(e.value) and not isinstance(e.value, ValidationError)


def test_missing_mapping_file_is_a_configuration_error(tmp_path, monkeypatch, store):
    monkeypatch.setenv("USER_MAP_FILE", str(tmp_path / "nope.yaml"))
    with pytest.raises(IdentityConfigError, match="cannot read USER_MAP_FILE"):
        resolve_owner("alice@example.org", store, check=False)


# ---- errors ----------------------------------------------------------------------------------------

def test_unknown_email_is_bad_input(api, store):
    with pytest.raises(UnknownEmail) as e:
        resolve_owner("nobody-here@example.org", store, check=False)
    assert str(e.value) == "no CI Connect user has e-mail 'nobody-here@example.org'"
    assert isinstance(e.value, ValidationError) and isinstance(e.value, IdentityError)
    assert store.cached_identity("nobody-here@example.org") is None
    no_token_in(e.value)


def test_two_users_with_one_email_is_ambiguous(api, store):
    with pytest.raises(AmbiguousEmail, match="shared1, shared2"):
        resolve_owner("shared@example.org", store, check=False)


def test_api_down_is_a_runtime_error(store, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("CICONNECT_URL", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(CIConnectUnreachable) as e:
        resolve_owner("alice@example.org", store, check=False)
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert msg.startswith(f"CI Connect at http://127.0.0.1:{port}/v1alpha1/users unreachable")
    assert "3 attempts" in msg and "connection refused" in msg
    assert isinstance(e.value, IdentityUnavailable) and not isinstance(e.value, ValidationError)
    no_token_in(e.value)


def test_stalled_api_times_out(api, store, monkeypatch):
    api.delay = 1.0
    monkeypatch.setenv("CICONNECT_TIMEOUT", "0.2")
    monkeypatch.setenv("CICONNECT_RETRIES", "0")
    t0 = time.monotonic()
    with pytest.raises(CIConnectUnreachable, match=r"no answer within 0.2s"):
        resolve_owner("alice@example.org", store, check=False)
    assert time.monotonic() - t0 < 1.0


def test_bad_token_is_refused_clearly(api, store, monkeypatch):
    monkeypatch.setenv("CICONNECT_TOKEN", "wrong-" + TOKEN)
    with pytest.raises(CIConnectTokenRefused) as e:
        resolve_owner("alice@example.org", store, check=False)
    assert str(e.value).startswith("CI Connect refused the token (HTTP 403: Not authorized)")
    assert api.count == 1, "a refused token is not retried"
    assert "wrong-" not in str(e.value)
    no_token_in(e.value)


def test_server_error_then_success_is_retried(api, store):
    api.fail_first = [500, 503]
    assert resolve_owner("alice@example.org", store, check=False) == "alice"
    assert api.count == 3


def test_server_errors_exhaust_the_retries(api, store):
    api.fail_first = [500, 500, 500, 500]
    with pytest.raises(CIConnectUnreachable, match=r"after 3 attempts \(HTTP 500\)"):
        resolve_owner("alice@example.org", store, check=False)
    assert api.count == 3


def test_wrong_kind_is_a_bad_answer(api, store):
    api.body_override = {"apiVersion": "v1alpha1", "kind": "User", "metadata": {"unix_name": "alice"}}
    with pytest.raises(CIConnectBadAnswer, match="expected 'UserList'"):
        resolve_owner("alice@example.org", store, check=False)


def test_unusable_unix_name_from_the_api_is_refused(api, store):
    api.users = [user("evil@example.org", "root\nMY.Owner")]
    with pytest.raises(CIConnectBadAnswer, match="unusable"):
        resolve_owner("evil@example.org", store, check=False)
    assert store.cached_identity("evil@example.org") is None


def test_not_configured_is_bad_input(monkeypatch, store):
    monkeypatch.delenv("CICONNECT_URL")
    with pytest.raises(IdentityNotConfigured) as e:
        resolve_owner("alice@example.org", store)
    assert isinstance(e.value, ValidationError) and "neither USER_MAP_FILE nor CICONNECT_URL" in str(e.value)


@pytest.mark.parametrize("setting,needle", [
    ({"CICONNECT_URL": "ftp://ciconnect.example.org"}, "must be http(s)"),
    ({"CICONNECT_URL": "https://ciconnect.example.org/?token=abc"}, "without query"),
    ({"CICONNECT_TOKEN": ""}, "neither CICONNECT_TOKEN nor CICONNECT_TOKEN_FILE"),
    ({"CICONNECT_TOKEN": "", "CICONNECT_TOKEN_FILE": "/nonexistent/token"}, "cannot read CICONNECT_TOKEN_FILE"),
])
def test_bad_ci_connect_settings_are_configuration_errors(monkeypatch, store, setting, needle):
    for k, v in setting.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(IdentityConfigError) as e:
        resolve_owner("alice@example.org", store)
    assert needle in str(e.value)
    assert "abc" not in str(e.value)


def test_a_ci_connect_setting_of_the_wrong_type_is_refused_by_the_settings_model(monkeypatch, store):
    """A value that is not a number is refused when the settings are loaded (every process at start)."""
    monkeypatch.setenv("CICONNECT_TIMEOUT", "soon")
    with pytest.raises(SettingsError, match="^CICONNECT_TIMEOUT='soon'"):
        resolve_owner("alice@example.org", store)


def test_token_never_in_logs_or_errors_even_at_debug(api, store, monkeypatch, all_logs):
    """Every path that touches the token, with urllib3's DEBUG request lines switched on."""
    errors = []
    resolve_owner("alice@example.org", store, check=False)
    api.fail_first = [502]
    resolve_owner("carol@example.org", store, check=False)
    for email in ("zzz@example.org", "shared@example.org"):
        try:
            resolve_owner(email, store, check=False)
        except IdentityError as e:
            errors.append(e)
    monkeypatch.setenv("CICONNECT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(CIConnectUnreachable) as e:
        resolve_owner("bob.smith@uni.edu", store, check=False)
    errors.append(e.value)
    for err in errors:
        no_token_in(err)
    assert "urllib3.connectionpool" in all_logs.text  # urllib3 did log the request lines...
    assert "GET /v1alpha1/users?token=*** " in all_logs.text  # ...with the token redacted
    assert TOKEN not in all_logs.text
    assert TOKEN not in repr(identity.ciconnect_config())


# ---- the user it resolves to -----------------------------------------------------------------------

def test_plain_user_names_are_validated_not_looked_up(api):
    assert resolve_owner("alice", check=False) == "alice"
    for bad in ("", "-rf", "al ice", "1000", "a" * 33, "$(Owner)", None, 7):
        with pytest.raises(ValidationError):
            resolve_owner(bad, check=False)
    assert api.count == 0


@pytest.mark.parametrize("owner", ["root", "daemon", "bin", "no-such-user-xyz"])
def test_refused_users(owner):
    with pytest.raises(UserRefused):
        resolve_owner(owner)


@pytest.mark.parametrize("target", ["root", "daemon"])
def test_email_mapped_to_a_system_account_is_refused(tmp_path, monkeypatch, store, target):
    path = tmp_path / "users.yaml"
    write_map(path, f"boss@example.org: {target}\n")
    monkeypatch.setenv("USER_MAP_FILE", str(path))
    with pytest.raises(UserRefused) as e:
        resolve_owner("boss@example.org", store)
    assert target in str(e.value) and "boss@example.org" in str(e.value)


def test_email_mapped_to_a_denied_user_is_refused(api, store, service_user, monkeypatch):
    api.users = [user("svc@example.org", service_user)]
    assert resolve_owner("svc@example.org", store) == service_user
    monkeypatch.setenv("DENY_USERS", f"someone,{service_user}")
    with pytest.raises(UserRefused, match="deny list"):
        resolve_owner("svc@example.org", store)  # from the cache, and still checked
    assert api.count == 1
