"""Who owns a cluster: an owner given as a Unix user name or as an e-mail address, resolved to a Unix user.

Sites know people by e-mail (CI Connect) and run their jobs as their Unix user.  Every entry point
(cli.py, gateway/, k8s_operator/) turns an owner from outside into a checked Unix user name with::

    from workers.identity import resolve_owner, IdentityError, IdentityUnavailable

    user = resolve_owner("Alice@Example.org", store)   # -> "alice"
    user = resolve_owner("alice", store)               # a plain user name is validated and checked

``resolve_owner(value, store=None, *, check=True) -> str``

- ``value`` without ``@``: validated as a POSIX user name (``validation.validate_unix_user_name``).
- ``value`` with ``@``: validated as an e-mail (``validation.validate_email``), then resolved:

  1. ``USER_MAP_FILE`` (when set): a YAML mapping ``e-mail: unixuser`` (one per line), matched
     case-insensitively; re-read whenever its mtime/size changes.  An e-mail found there wins.
  2. else CI Connect (when ``CICONNECT_URL`` is set): ``GET {CICONNECT_URL}/v1alpha1/users?token=T``
     (token from ``CICONNECT_TOKEN``, else the file named by ``CICONNECT_TOKEN_FILE``); the answer must
     be ``kind == "UserList"``; ``metadata.email`` is matched case-insensitively on the client side
     (the API has no look-up by e-mail) and ``metadata.unix_name`` taken.  Each attempt has connect and
     read timeouts of ``CICONNECT_TIMEOUT`` seconds (default 5); connection errors, timeouts, 429 and
     5xx are retried ``CICONNECT_RETRIES`` more times (default 2) with exponential backoff starting at
     ``CICONNECT_BACKOFF`` seconds (default 0.25).  The answer is cached in Redis
     (``Store.cache_identity``, key ``htdask:identity:<email>``) for ``IDENTITY_CACHE_TTL`` seconds
     (default 3600; 0 = no cache), so a second look-up of the same e-mail makes no request.  Map-file
     answers are not cached (the file is local and re-read when it changes).
- ``check=True`` (default): the resulting user is checked with ``workers.runas.check_user``: it must
  exist on this host, have a uid >= ``MIN_SUBMIT_UID`` (default 1000) and not be in ``DENY_USERS`` (or
  root); else ``UserRefused``.  Entry points running on a host that does not have the submit node's
  users may pass ``check=False``; the Celery worker checks again before any condor_* command runs.
- ``store``: a ``state.Store`` for the cache; ``None`` = a Store on ``REDIS_URL``, opened only when
  CI Connect is asked.  A failing cache (Redis down) is logged and the look-up goes on uncached.

Errors.  Bad input (exit 2 in the CLI, HTTP 400/403 in an API) derives from ``ValidationError``:

- ``UnknownEmail``: no map entry and no CI Connect user has the e-mail;
- ``AmbiguousEmail``: several CI Connect users have it;
- ``IdentityNotConfigured``: an e-mail, but neither USER_MAP_FILE nor CICONNECT_URL is set (this site
  takes user names only);
- ``workers.runas.UserRefused``: the user is root, a system account (uid < MIN_SUBMIT_UID), denied or
  unknown on this host.

Runtime failures (exit 1, HTTP 503) derive from ``IdentityUnavailable``, not from ValidationError:

- ``CIConnectUnreachable``: connection refused, timeouts, 429/5xx, after the retries;
- ``CIConnectTokenRefused``: HTTP 401/403 ("CI Connect refused the token"), not retried;
- ``CIConnectBadAnswer``: not JSON, ``kind`` is not UserList, another HTTP status, unusable unix_name;
- ``IdentityConfigError``: unreadable or malformed USER_MAP_FILE, no token, bad CICONNECT_URL.

All of these except UserRefused also derive from ``IdentityError``.

``IdentityUnavailable`` is the common base of the runtime ones (catch it to map to exit 1 / HTTP 503).
The token never appears in log records or exception text: URLs are logged without their query
string, exceptions from requests are not chained, and a filter on the urllib3/requests loggers
redacts ``token=...`` from their (debug) records.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import yaml

from settings import IdentitySettings, load
from workers.runas import UserRefused, check_user
from domain.validation import ValidationError, validate_email, validate_unix_user_name

log = logging.getLogger(__name__)

USERS_PATH = "/v1alpha1/users"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})

__all__ = [
    "resolve_owner", "resolve_email", "IdentityError", "IdentityUnavailable", "UnknownEmail",
    "AmbiguousEmail", "IdentityNotConfigured", "IdentityConfigError", "CIConnectUnreachable",
    "CIConnectTokenRefused", "CIConnectBadAnswer", "UserRefused", "redact",
]


# ---------------------------------------------------------------------------------------------
# errors

class IdentityError(Exception):
    """Any failure to turn an owner e-mail into a Unix user."""


class IdentityUnavailable(IdentityError):
    """A runtime failure (service down, token refused, bad site configuration): exit 1, not the user's fault."""


class _BadOwner(IdentityError, ValidationError):
    """The owner given from outside cannot be used (exit 2). str() is the one-line message."""

    def __init__(self, value: Any, message: str):
        self.field = "owner e-mail"
        self.value = value
        self.reason = message
        Exception.__init__(self, message)


class UnknownEmail(_BadOwner):
    def __init__(self, email: str, where: str):
        super().__init__(email, f"no {where} has e-mail {email!r}")


class AmbiguousEmail(_BadOwner):
    def __init__(self, email: str, users: list[str]):
        super().__init__(email, f"{len(users)} CI Connect users have e-mail {email!r} ({', '.join(users)}); "
                                "give the Unix user instead")


class IdentityNotConfigured(_BadOwner):
    def __init__(self, email: str):
        super().__init__(email, f"cannot resolve e-mail {email!r}: this site maps no e-mail addresses "
                                "(neither USER_MAP_FILE nor CICONNECT_URL is set); give the Unix user instead")


class IdentityConfigError(IdentityUnavailable):
    """USER_MAP_FILE / CICONNECT_* settings are wrong."""


class CIConnectUnreachable(IdentityUnavailable):
    pass


class CIConnectTokenRefused(IdentityUnavailable):
    pass


class CIConnectBadAnswer(IdentityUnavailable):
    pass


# ---------------------------------------------------------------------------------------------
# redaction: the token travels in the query string, so no URL with a query is ever shown

_TOKEN_PARAM = re.compile(r"(token=)[^&\s'\"]*", re.IGNORECASE)


def redact(text: str, secret: str | None = None) -> str:
    """`text` with every `token=...` value (and the literal secret, if given) replaced by ***."""
    text = _TOKEN_PARAM.sub(r"\1***", text)
    if secret:
        text = text.replace(secret, "***")
    return text


def _shown_url(url: str) -> str:
    """scheme://host[:port]/path: no query, no user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _RedactTokens(logging.Filter):
    """Rewrites records of the HTTP libraries (urllib3 logs request lines with their query at DEBUG,
    and retried URLs at WARNING) so that no token reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        if "token=" in message.lower():
            record.msg = redact(message)
            record.args = ()
        return True


_FILTER = _RedactTokens()
for _name in ("urllib3", "urllib3.connectionpool", "urllib3.util.retry", "requests"):
    logging.getLogger(_name).addFilter(_FILTER)


# ---------------------------------------------------------------------------------------------
# settings

# The identity section of the settings model (settings/sections.py) holds every variable read here, typed
# and range-checked when the settings are loaded; what is checked here is what needs the file system or
# several variables together (a token or a token file).

def _section(settings: IdentitySettings | None) -> IdentitySettings:
    return settings or load().identity


def cache_ttl(settings: IdentitySettings | None = None) -> int:
    """IDENTITY_CACHE_TTL in seconds (0 = no cache)."""
    return _section(settings).identity_cache_ttl


@dataclass(frozen=True)
class CIConnectConfig:
    url: str           # base URL, no trailing slash, no query
    token: str
    timeout: float
    retries: int
    backoff: float

    def __repr__(self) -> str:  # never show the token
        return (f"CIConnectConfig(url={self.url!r}, token='***', timeout={self.timeout}, "
                f"retries={self.retries}, backoff={self.backoff})")


def ciconnect_config(settings: IdentitySettings | None = None) -> CIConnectConfig | None:
    """The CI Connect settings, None when CICONNECT_URL is unset; IdentityConfigError when half-set."""
    s = _section(settings)
    raw_url = (s.ciconnect_url or "").strip()
    if not raw_url:
        return None
    parts = urlsplit(raw_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or parts.username or parts.password:
        raise IdentityConfigError(f"CICONNECT_URL {_shown_url(raw_url)!r} must be http(s)://host[:port][/prefix] "
                                  "without query or credentials (the token goes in CICONNECT_TOKEN)")
    url = raw_url.rstrip("/")
    token = (s.ciconnect_token or "").strip()
    if not token:
        path = (s.ciconnect_token_file or "").strip()
        if not path:
            raise IdentityConfigError("CICONNECT_URL is set but neither CICONNECT_TOKEN nor CICONNECT_TOKEN_FILE is")
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise IdentityConfigError(f"cannot read CICONNECT_TOKEN_FILE {path}: {e.strerror}") from None
        if not token:
            raise IdentityConfigError(f"CICONNECT_TOKEN_FILE {path} is empty")
    if any(c.isspace() or ord(c) < 32 for c in token):
        raise IdentityConfigError("the CI Connect token contains whitespace or control characters")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        _warn_once(f"CICONNECT_URL {_shown_url(url)} is plain http: the token travels unencrypted")
    return CIConnectConfig(
        url=url, token=token,
        timeout=s.ciconnect_timeout, retries=s.ciconnect_retries, backoff=s.ciconnect_backoff)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


# ---------------------------------------------------------------------------------------------
# USER_MAP_FILE

_map_lock = threading.Lock()
_map_cache: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}


def load_user_map(path: str) -> dict[str, str]:
    """lower-case e-mail -> Unix user from the YAML file; re-read only when its mtime or size changed."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise IdentityConfigError(f"cannot read USER_MAP_FILE {path}: {e.strerror}") from None
    stamp = (st.st_mtime_ns, st.st_size)
    with _map_lock:
        cached = _map_cache.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise IdentityConfigError(f"cannot read USER_MAP_FILE {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise IdentityConfigError(f"USER_MAP_FILE {path} is not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise IdentityConfigError(f"USER_MAP_FILE {path} must be a mapping 'e-mail: unixuser', "
                                  f"not a {type(data).__name__}")
    mapping: dict[str, str] = {}
    for key, user in data.items():
        try:
            email = validate_email(key, "USER_MAP_FILE e-mail").strip().lower()
            name = validate_unix_user_name(user, f"USER_MAP_FILE user of {key}")
        except ValidationError as e:
            raise IdentityConfigError(f"USER_MAP_FILE {path}: {e}") from None
        if email in mapping and mapping[email] != name:
            raise IdentityConfigError(f"USER_MAP_FILE {path}: e-mail {key!r} is mapped twice "
                                      f"({mapping[email]}, {name})")
        mapping[email] = name
    with _map_lock:
        _map_cache[path] = (stamp, mapping)
    log.info("USER_MAP_FILE %s: %d e-mail addresses", path, len(mapping))
    return mapping


# ---------------------------------------------------------------------------------------------
# CI Connect

def _sleep(seconds: float) -> None:  # tests may patch it
    time.sleep(seconds)


def fetch_users(cfg: CIConnectConfig) -> list[dict]:
    """The `items` of GET /v1alpha1/users (kind UserList), with timeouts and retries."""
    url = cfg.url + USERS_PATH
    shown = _shown_url(url)
    attempts = cfg.retries + 1
    problem = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            delay = min(cfg.backoff * 2 ** (attempt - 2), 10.0)
            log.info("CI Connect %s: %s; retry %d of %d in %.2fs", shown, problem, attempt - 1, cfg.retries, delay)
            _sleep(delay)
        try:
            resp = requests.get(url, params={"token": cfg.token}, timeout=(cfg.timeout, cfg.timeout),
                                headers={"Accept": "application/json"}, allow_redirects=False)
        except requests.Timeout:
            problem = f"no answer within {cfg.timeout:g}s"
            continue
        except requests.ConnectionError as e:
            problem = _connection_problem(e, cfg.token)
            continue
        except requests.RequestException as e:
            raise CIConnectBadAnswer(f"CI Connect at {shown}: request failed "
                                     f"({type(e).__name__}: {redact(str(e), cfg.token)})") from None
        with resp:
            status = resp.status_code
            if status in RETRY_STATUS:
                problem = f"HTTP {status}"
                continue
            body = _json(resp)
        if status in (401, 403):
            message = body.get("message") if isinstance(body, dict) else None
            raise CIConnectTokenRefused(
                f"CI Connect refused the token (HTTP {status}{': ' + str(message)[:200] if message else ''}); "
                "check CICONNECT_TOKEN / CICONNECT_TOKEN_FILE")
        if status != 200:
            raise CIConnectBadAnswer(f"CI Connect at {shown} answered HTTP {status}"
                                     + (f" ({body.get('message')})" if isinstance(body, dict)
                                        and body.get("message") else ""))
        if not isinstance(body, dict):
            raise CIConnectBadAnswer(f"CI Connect at {shown} did not answer with a JSON object")
        if body.get("kind") != "UserList":
            raise CIConnectBadAnswer(f"CI Connect at {shown} answered kind {body.get('kind')!r}, "
                                     "expected 'UserList'")
        items = body.get("items")
        if not isinstance(items, list):
            raise CIConnectBadAnswer(f"CI Connect at {shown} answered a UserList without 'items'")
        log.debug("CI Connect %s: %d users", shown, len(items))
        return items
    raise CIConnectUnreachable(f"CI Connect at {shown} unreachable after {attempts} attempt"
                               f"{'s' if attempts > 1 else ''} ({problem})")


def _connection_problem(e: requests.ConnectionError, token: str) -> str:
    text = str(e)
    for needle, short in (("Connection refused", "connection refused"),
                          ("Name or service not known", "unknown host"),
                          ("nodename nor servname", "unknown host"),
                          ("Temporary failure in name resolution", "unknown host"),
                          ("Connection reset", "connection reset"),
                          ("RemoteDisconnected", "connection closed without an answer"),
                          ("SSLError", "TLS error"), ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
                          ("No route to host", "no route to host"),
                          ("Network is unreachable", "network unreachable")):
        if needle in text:
            return short
    return f"connection error ({type(e).__name__})"


def _json(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def match_email(items: list[dict], email: str) -> list[str]:
    """Distinct unix_names of the users whose metadata.email equals `email` ignoring case."""
    want = email.strip().lower()
    found: list[str] = []
    for item in items:
        meta = item.get("metadata") if isinstance(item, dict) else None
        if not isinstance(meta, dict):
            continue
        mail = meta.get("email")
        if not isinstance(mail, str) or mail.strip().lower() != want:
            continue
        name = meta.get("unix_name")
        if not isinstance(name, str) or not name:
            raise CIConnectBadAnswer(f"CI Connect user with e-mail {email!r} has no unix_name")
        if name not in found:
            found.append(name)
    return found


# ---------------------------------------------------------------------------------------------
# the API

def _default_store():
    from state import Store, connect
    return Store(connect())


def _cached(store, email: str) -> str | None:
    try:
        return store.cached_identity(email)
    except Exception as e:  # redis errors: go on without the cache
        log.warning("identity cache unavailable (%s); asking CI Connect", type(e).__name__)
        return None


def _cache(store, email: str, user: str, ttl: int) -> None:
    try:
        store.cache_identity(email, user, ttl)
    except Exception as e:
        log.warning("identity cache unavailable (%s); %s not cached", type(e).__name__, email)


def resolve_email(email: str, store=None, settings: IdentitySettings | None = None) -> tuple[str, str]:
    """(unix user, source) for a validated e-mail; source is 'USER_MAP_FILE', 'cache' or 'CI Connect'.

    The user is validated as a name but not checked against the passwd database (resolve_owner does).
    `settings` (the identity section) default to this process's.
    """
    settings = _section(settings)
    key = email.strip().lower()
    map_path = (settings.user_map_file or "").strip()
    if map_path:
        user = load_user_map(map_path).get(key)
        if user:
            return user, "USER_MAP_FILE"
    cfg = ciconnect_config(settings)
    if cfg is None:
        if map_path:
            raise UnknownEmail(email, f"entry of USER_MAP_FILE {map_path}")
        raise IdentityNotConfigured(email)
    ttl = cache_ttl(settings)
    if store is None and ttl > 0:
        store = _default_store()
    if ttl > 0:
        hit = _cached(store, key)
        if hit:
            return validate_unix_user_name(hit, "cached user"), "cache"
    users = match_email(fetch_users(cfg), key)
    if not users:
        raise UnknownEmail(email, "CI Connect user")
    if len(users) > 1:
        raise AmbiguousEmail(email, users)
    try:
        user = validate_unix_user_name(users[0], "CI Connect unix_name")
    except ValidationError as e:
        raise CIConnectBadAnswer(f"CI Connect gave e-mail {email!r} an unusable {e}") from None
    if ttl > 0:
        _cache(store, key, user, ttl)
    return user, "CI Connect"


def resolve_owner(value: Any, store=None, *, check: bool = True,
                  settings: IdentitySettings | None = None) -> str:
    """The Unix user for an owner given from outside (a user name or an e-mail); see the module doc.
    `settings` (the identity section) default to this process's."""
    email = None
    if isinstance(value, str) and "@" in value:
        email = validate_email(value, "owner e-mail")
        user, source = resolve_email(email, store, settings)
        log.info("owner %s is Unix user %s (%s)", email, user, source)
    else:
        user = validate_unix_user_name(value, "owner")
    if check:
        try:
            check_user(user)
        except UserRefused as e:
            if email is None:
                raise
            raise UserRefused(user, f"{e.reason} (e-mail {email!r} maps to it)") from None
    return user
