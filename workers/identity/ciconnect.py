"""The CI Connect users API (``GET {CICONNECT_URL}/v1alpha1/users?token=T``): settings, the request with
timeouts and retries (`htdask.domain.retry`), matching an e-mail, and keeping the token out of every log line."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from htdask.domain import retry
from htdask.settings import IdentitySettings, load
from workers.identity.errors import (CIConnectBadAnswer, CIConnectTokenRefused, CIConnectUnreachable,
                                     IdentityConfigError)

log = logging.getLogger(__name__)

USERS_PATH = "/v1alpha1/users"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


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

# The identity section of the settings model (htdask/settings/sections.py) holds every variable read here, typed
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



class _Retry(Exception):
    """An attempt that may succeed when repeated (no connection, timeout, 429, 5xx); str() says why."""


def fetch_users(cfg: CIConnectConfig) -> list[dict]:
    """The `items` of GET /v1alpha1/users (kind UserList), with timeouts and `cfg.retries` retries."""
    url = cfg.url + USERS_PATH
    shown = _shown_url(url)
    try:
        for attempt in retry.retrying(cfg.retries + 1, cfg.backoff, 10.0, _Retry, log, f"CI Connect {shown}"):
            with attempt:
                return _fetch_once(cfg, url, shown)
    except _Retry as e:
        raise CIConnectUnreachable(f"CI Connect at {shown} unreachable after {cfg.retries + 1} attempt"
                                   f"{'s' if cfg.retries else ''} ({e})") from None
    raise AssertionError("unreachable")  # pragma: nocover  (tenacity returns or raises)


def _fetch_once(cfg: CIConnectConfig, url: str, shown: str) -> list[dict]:
    try:
        resp = requests.get(url, params={"token": cfg.token}, timeout=(cfg.timeout, cfg.timeout),
                            headers={"Accept": "application/json"}, allow_redirects=False)
    except requests.Timeout:
        raise _Retry(f"no answer within {cfg.timeout:g}s") from None
    except requests.ConnectionError as e:
        raise _Retry(_connection_problem(e, cfg.token)) from None
    except requests.RequestException as e:
        raise CIConnectBadAnswer(f"CI Connect at {shown}: request failed "
                                 f"({type(e).__name__}: {redact(str(e), cfg.token)})") from None
    with resp:
        status = resp.status_code
        if status in RETRY_STATUS:
            raise _Retry(f"HTTP {status}")
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
