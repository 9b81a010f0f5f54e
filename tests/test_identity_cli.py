"""`python cli.py scale ... --email/--owner` as a real process against a real redis-server.

Bad owners (malformed e-mails and user names, unknown e-mails, e-mails mapped to root or system
accounts) are one line on stderr, exit 2, and nothing reaches Redis: no task on the queue, no request
number taken.  CI Connect down or refusing the token is exit 1, one line, and the token is not shown.
No Celery worker runs here, so nothing could be submitted; test_owner_e2e.py covers the full stack.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from htdask.demo.procs import free_port
from htdask.demo.services import REPO, base_env
from htdask.state import connect, keys
from tests.test_identity import TOKEN, FakeCIConnect, user


@pytest.fixture
def api():
    server = FakeCIConnect(users=[user("alice@example.org", "alice"), user("rooty@example.org", "root")]).start()
    yield server
    server.stop()


@pytest.fixture
def user_map(tmp_path):
    path = tmp_path / "users.yaml"
    path.write_text("boss@example.org: root\n"
                    "sys@example.org: daemon\n"
                    "ghost@example.org: no-such-user-xyz\n"
                    "nob@example.org: bin\n")
    return path


@pytest.fixture
def env(tmp_path, redis_server, api, user_map):
    e = base_env(tmp_path, redis_server.url, USER_MAP_FILE=str(user_map), CICONNECT_URL=api.url,
                 CICONNECT_TOKEN=TOKEN, CICONNECT_RETRIES="1", CICONNECT_BACKOFF="0.01", CICONNECT_TIMEOUT="2",
                 DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786")
    for k in ("DENY_USERS", "MIN_SUBMIT_UID", "CICONNECT_TOKEN_FILE", "IDENTITY_CACHE_TTL"):
        e.pop(k, None)
    return e


def cli(env, *args):
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=60)


def nothing_enqueued(redis_url):
    r = connect(redis_url)
    return r.llen("local") == 0 and not r.exists(keys.seq())


BAD = [
    # malformed e-mails
    (["--email", ""], "--email"),
    (["--email", "alice"], "--email"),
    (["--email", "alice@"], "--email"),
    (["--email", "@example.org"], "--email"),
    (["--email", "alice@localhost"], "--email"),
    (["--email", "alice@exa mple.org"], "--email"),
    (["--email", "al ice@example.org"], "--email"),
    (["--email", "alice@example.org\nMY.Owner = \"root\""], "--email"),
    (["--email", "$(Owner)@example.org"], "--email"),
    (["--email", '"alice"@example.org'], "--email"),
    (["--email", "alice@[127.0.0.1]"], "--email"),
    (["--email", "alice@example.123"], "--email"),
    (["--email", "x" * 65 + "@example.org"], "--email"),
    (["--email", "alice@example.org;rm -rf /"], "--email"),
    # well-formed e-mails that resolve to nobody usable
    (["--email", "unknown@example.org"], "no CI Connect user has e-mail 'unknown@example.org'"),
    (["--email", "boss@example.org"], "'root'"),
    (["--email", "BOSS@Example.org"], "'root'"),
    (["--email", "sys@example.org"], "'daemon'"),
    (["--email", "nob@example.org"], "'bin'"),
    (["--email", "ghost@example.org"], "no such Unix user"),
    (["--email", "rooty@example.org"], "'root'"),  # CI Connect itself says unix_name root
    # bad --owner values
    (["--owner", "root"], "root"),
    (["--owner", "daemon"], "daemon"),
    (["--owner", "-rf"], "owner"),
    (["--owner", "../etc"], "owner"),
    (["--owner", "al ice"], "owner"),
    (["--owner", "$(Owner)"], "owner"),
    (["--owner", "1000"], "all digits"),
    (["--owner", "a" * 33], "longer than 32"),
    (["--owner", ""], "owner"),
    (["--owner", "no-such-user-xyz"], "no such Unix user"),
    (["--owner", "boss@example.org"], "'root'"),  # an e-mail given as --owner is resolved too
    # both at once
    (["--owner", "alice", "--email", "alice@example.org"], "mutually exclusive"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[f"{i:02d}" for i in range(len(BAD))])
def test_bad_owner_is_one_line_exit_2_nothing_enqueued(env, redis_server, args, needle):
    out = cli(env, "scale", "c1", "2", *args)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert needle in lines[0], lines[0]
    assert out.stdout == ""
    assert nothing_enqueued(redis_server.url)


def test_email_without_any_lookup_configured_is_exit_2(env, redis_server):
    env = {k: v for k, v in env.items() if k not in ("USER_MAP_FILE", "CICONNECT_URL")}
    out = cli(env, "scale", "c1", "2", "--email", "alice@example.org")
    assert out.returncode == 2 and "neither USER_MAP_FILE nor CICONNECT_URL" in out.stderr
    assert nothing_enqueued(redis_server.url)


@pytest.mark.parametrize("case,needle", [
    ("down", "unreachable after 2 attempts (connection refused)"),
    ("token", "CI Connect refused the token (HTTP 403: Not authorized)"),
])
def test_ci_connect_failures_are_one_line_exit_1(env, redis_server, case, needle):
    if case == "down":
        env["CICONNECT_URL"] = f"http://127.0.0.1:{free_port()}"
    else:
        env["CICONNECT_TOKEN"] = "not-the-token"
    out = cli(env, "-v", "scale", "c1", "2", "--email", "alice@example.org")
    assert out.returncode == 1, (out.stdout, out.stderr)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], out.stderr
    assert "Traceback" not in out.stderr
    assert TOKEN not in out.stderr + out.stdout and "not-the-token" not in out.stderr + out.stdout
    assert nothing_enqueued(redis_server.url)


def queued_kwargs(redis_url) -> list[dict]:
    """kwargs of the scale and delete task messages waiting on the `local` list (protocol 2, JSON body); the
    watch task a second request arms while the first one's round is queued (htdask/state/rounds.py) is not
    a request."""
    out = []
    for raw in connect(redis_url).lrange("local", 0, -1):
        msg = json.loads(raw)
        if msg.get("headers", {}).get("task") == "tasks.reconcile_pending":
            continue
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _ = json.loads(body)
        typed = "request" in kwargs and set(kwargs) <= {"request", "handled_by"}  # the typed request (+ its round)
        out.append(json.loads(kwargs["request"]) if typed else kwargs)
    return out


def test_email_is_resolved_before_enqueueing_and_cached(env, redis_server, api, service_user):
    api.users.append(user("Svc.User@Example.org", service_user))
    for _ in range(2):
        out = cli(env, "-v", "scale", "c1", "2", "--email", "svc.user@example.org")
        assert out.returncode == 0, out.stderr
        assert TOKEN not in out.stderr
    assert api.count == 1, "the second CLI run took the user from the Redis cache"
    assert [k["owner"] for k in queued_kwargs(redis_server.url)] == [service_user, service_user]
    assert connect(redis_server.url).get(keys.identity("svc.user@example.org")) == service_user
