"""Who owns a cluster: an owner given as a Unix user name or as an e-mail address, resolved to a Unix user.

Sites know people by e-mail (CI Connect) and run their jobs as their Unix user.  Every entry point
(cli.py, htdask/gateway/, htdask/k8s_operator/) turns an owner from outside into a checked Unix user name with::

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
from typing import Any

from htdask.domain.validation import ValidationError, validate_email, validate_unix_user_name
from htdask.settings import IdentitySettings
from workers.identity.ciconnect import _section, cache_ttl, ciconnect_config, fetch_users, match_email, redact
from workers.identity.errors import (AmbiguousEmail, CIConnectBadAnswer, CIConnectTokenRefused, CIConnectUnreachable,
                                     IdentityConfigError, IdentityError, IdentityNotConfigured, IdentityUnavailable,
                                     UnknownEmail)
from workers.identity.usermap import load_user_map
from workers.runas import UserRefused, check_user

log = logging.getLogger(__name__)

__all__ = [
    "resolve_owner", "resolve_email", "IdentityError", "IdentityUnavailable", "UnknownEmail",
    "AmbiguousEmail", "IdentityNotConfigured", "IdentityConfigError", "CIConnectUnreachable",
    "CIConnectTokenRefused", "CIConnectBadAnswer", "UserRefused", "redact", "ciconnect_config", "fetch_users",
    "match_email", "load_user_map", "cache_ttl",
]


def _default_store():
    from htdask.state import Store, connect
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
