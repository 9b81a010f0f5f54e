"""Where the controller's Redis is, and every client of it: state store, locks, Celery broker and results.

One setting names it, `REDIS_URL`, in one of two forms:

- a single server: `redis://[:password@]host:port/db` (also `rediss://`, `unix://`), as redis-py and kombu
  read it;
- Redis Sentinel, kombu's own form: `sentinel://[:password@]host:26379;sentinel://host2:26379/db`, one
  `sentinel://` per sentinel, `;`-separated; the master is found by asking the sentinels for
  `REDIS_SENTINEL_MASTER` (default `mymaster`), and clients follow it across a failover.

Passwords: the password in the URL (or `REDIS_PASSWORD` when the URL carries none) is the Redis server's
(the master's); `REDIS_SENTINEL_PASSWORD` is the sentinels' own `requirepass`, when they have one.

Every process gets its clients here: `connect()` for redis-py (the state store, locks, beat's lock, the
heartbeats) and `configure_celery(app)` for kombu's broker transport and celery's result backend (the
`sentinel://` transport with `master_name` and `sentinel_kwargs` in the transport options). An unusable
setting raises `RedisSettingError`, whose message starts with the setting's name; entry points print it
as one line and exit 2 (`check_or_exit`).

Eviction: every process that uses Redis checks at start that the server never evicts keys
(`maxmemory-policy noeviction`, read with `INFO memory`): `check_eviction` / `check_eviction_or_exit`. A server
that may evict stops the process with one line, unless REDIS_ALLOW_EVICTION=1 (a warning instead).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from htdask.settings import DEFAULT_REDIS_URL, load

log = logging.getLogger(__name__)

DEFAULT_SENTINEL_MASTER = "mymaster"
SENTINEL_PORT = 26379
#: schemes of a single Redis server (redis-py's `from_url`)
SERVER_SCHEMES = ("redis", "rediss", "unix")
#: redis-py client options shared by every connection we make (seconds)
CLIENT_OPTIONS = dict(socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
#: Under Sentinel a command that meets a dead or demoted master is re-sent, the master asked of the
#: sentinels again before each try, for about this many seconds (backoff 0.1 s doubling to 1 s): a failover
#: (down-after-milliseconds + election, a few seconds) is ridden through instead of failing the task
#: half-way, e.g. between a reconcile round and the release of its lock.
FAILOVER_RETRY_SECONDS = 30


class RedisSettingError(ValueError):
    """REDIS_URL / REDIS_SENTINEL_MASTER / REDIS_PASSWORD / REDIS_SENTINEL_PASSWORD cannot be used;
    the message starts with the setting's name."""


@dataclass(frozen=True)
class RedisTarget:
    """A parsed REDIS_URL. `sentinels` is empty for a single server."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    db: int = 0

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    def celery_url(self) -> str:
        """The URL kombu and celery are given: REDIS_PASSWORD put into it when the URL had none."""
        if not self.password or _url_password(self.url.split(";")[0]) is not None:
            return self.url
        return ";".join(_with_password(chunk, self.password) for chunk in self.url.split(";"))

    def transport_options(self) -> dict:
        """Options added to `broker_transport_options` and `result_backend_transport_options`."""
        if not self.is_sentinel:
            return {}
        opts: dict = {"master_name": self.master_name}
        if self.sentinel_password:
            opts["sentinel_kwargs"] = {"password": self.sentinel_password}
        return opts


def settings_from_env(env=None) -> dict:
    """The Redis settings: this process's (the settings model, htdask/settings/model.py), or those of `env`, a
    mapping of variables (tests parse a URL against made-up settings)."""
    if env is None:
        s = load()
        return {"url": s.redis_url, "master_name": s.redis_sentinel_master, "password": s.redis_password,
                "sentinel_password": s.redis_sentinel_password}
    return {
        "url": env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL,
        "master_name": env.get("REDIS_SENTINEL_MASTER"),
        "password": env.get("REDIS_PASSWORD") or None,
        "sentinel_password": env.get("REDIS_SENTINEL_PASSWORD") or None,
    }


def _url_password(chunk: str) -> str | None:
    try:
        pw = urlsplit(chunk).password
    except ValueError:
        return None
    return unquote(pw) if pw else None


def _with_password(chunk: str, password: str) -> str:
    scheme, rest = chunk.split("://", 1)
    if "@" in rest.split("/", 1)[0]:
        return chunk
    return f"{scheme}://:{quote(password, safe='')}@{rest}"


def parse(url: str | None = None, env=None) -> RedisTarget:
    """Parse REDIS_URL (`url` overrides the environment's) with the other Redis settings.

    Raises RedisSettingError (message: the setting's name, what is wrong) for an unknown scheme, a mix of
    `sentinel://` and other URLs, a sentinel without a host, a port or db that is not a number, or an
    empty REDIS_SENTINEL_MASTER.
    """
    raw = settings_from_env(env)
    url = (url or raw["url"]).strip()
    chunks = [c.strip() for c in url.split(";") if c.strip()]
    if not chunks or "://" not in chunks[0]:
        raise RedisSettingError(f"REDIS_URL {redact(url)!r} is not a URL (redis://host:6379/0 or "
                                f"sentinel://host:26379;sentinel://host2:26379/0)")
    schemes = {c.split("://", 1)[0].lower() if "://" in c else "" for c in chunks}
    if schemes != {"sentinel"}:
        if "sentinel" in schemes or len(chunks) > 1:
            raise RedisSettingError(f"REDIS_URL {redact(url)!r}: several servers must all be sentinel:// URLs "
                                    "separated by ';'")
        scheme = schemes.pop()
        if scheme not in SERVER_SCHEMES:
            raise RedisSettingError(f"REDIS_URL {redact(url)!r}: unknown scheme {scheme!r} (redis, rediss, unix "
                                    "or sentinel)")
        if scheme != "unix":
            _port(url, chunks[0])
        return RedisTarget(url=url, password=_check_password(url, raw["password"]), db=_db(url, chunks[0]))
    master = raw["master_name"]
    if master is None:
        master = DEFAULT_SENTINEL_MASTER
    master = master.strip()
    if not master:
        raise RedisSettingError("REDIS_SENTINEL_MASTER is empty: name the master the sentinels monitor "
                                f"(default {DEFAULT_SENTINEL_MASTER!r})")
    sentinels = []
    for chunk in chunks:
        host, port = urlsplit(chunk).hostname, _port(url, chunk) or SENTINEL_PORT
        if not host:
            raise RedisSettingError(f"REDIS_URL {redact(url)!r}: a sentinel without a host")
        sentinels.append((host, port))
    return RedisTarget(url=";".join(chunks), sentinels=tuple(sentinels), master_name=master,
                       password=_check_password(url, raw["password"]),
                       sentinel_password=raw["sentinel_password"], db=_db(url, chunks[-1]))


def _check_password(url: str, setting: str | None) -> str | None:
    in_url = _url_password(url.split(";")[0])
    if in_url and setting and in_url != setting:
        raise RedisSettingError("REDIS_PASSWORD differs from the password in REDIS_URL: give it in one place")
    return in_url or setting


def _port(url: str, chunk: str) -> int | None:
    """The port of one server's URL (None: not given); RedisSettingError when it is not a number 1..65535."""
    try:
        port = urlsplit(chunk).port
    except ValueError:  # urllib: "Port could not be cast to integer value", "Port out of range 0-65535"
        port = 0
    if port == 0:
        netloc = urlsplit(chunk).netloc.rsplit("@", 1)[-1]
        raise RedisSettingError(f"REDIS_URL {redact(url)!r}: the port in {netloc!r} is not a number from 1 to "
                                "65535")
    return port


def _db(url: str, chunk: str) -> int:
    if chunk.lower().startswith("unix://"):
        return 0  # redis-py reads ?db= itself
    path = urlsplit(chunk).path.strip("/")
    if not path:
        return 0
    if not path.isdigit():
        raise RedisSettingError(f"REDIS_URL {redact(url)!r}: the database {path!r} is not a number")
    return int(path)


def redact(url: str) -> str:
    """The URL with every password replaced by ***."""
    out = []
    for chunk in url.split(";"):
        if "://" in chunk:
            scheme, rest = chunk.split("://", 1)
            netloc, sep, tail = rest.partition("/")
            if "@" in netloc:
                netloc = "***@" + netloc.rsplit("@", 1)[1]
            chunk = f"{scheme}://{netloc}{sep}{tail}"
        out.append(chunk)
    return ";".join(out)


def connect(url: str | None = None, *, decode_responses: bool = True) -> redis.Redis:
    """A redis-py client of the controller's Redis (REDIS_URL unless `url` is given), decoding to str.

    Under Sentinel it is `Sentinel(...).master_for(REDIS_SENTINEL_MASTER)`: every new connection asks the
    sentinels where the master is, so after a failover the next command (a task's retry) reaches the new
    master. Raises RedisSettingError for an unusable setting.
    """
    target = parse(url)
    if not target.is_sentinel:
        extra = {"password": target.password} if target.password and not _url_password(target.url) else {}
        return redis.Redis.from_url(target.url, decode_responses=decode_responses, **CLIENT_OPTIONS, **extra)
    sentinel_kwargs = {"socket_timeout": 2, "socket_connect_timeout": 2}
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.1), FAILOVER_RETRY_SECONDS)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs, **CLIENT_OPTIONS)
    return sentinel.master_for(target.master_name, password=target.password, db=target.db,
                               decode_responses=decode_responses, retry=retry,
                               retry_on_error=[redis.ConnectionError, redis.TimeoutError])


def configure_celery(app, url: str | None = None) -> RedisTarget:
    """Point a Celery app's broker and result backend at REDIS_URL (`url` overrides it): kombu's
    `sentinel://` transport and celery's sentinel result backend, with the master name and sentinel
    password in their transport options. Returns the parsed target."""
    target = parse(url)
    celery_url = target.celery_url()
    app.conf.broker_url = celery_url
    app.conf.result_backend = celery_url
    extra = target.transport_options()
    for key in ("broker_transport_options", "result_backend_transport_options"):
        opts = dict(app.conf.get(key) or {})
        for k in ("master_name", "sentinel_kwargs"):
            opts.pop(k, None)
        opts.update(extra)
        app.conf[key] = opts
    return target


def check_or_exit(program: str, url: str | None = None) -> RedisTarget:
    """Parse the Redis settings; on an unusable one print one line naming it and exit 2."""
    try:
        return parse(url)
    except RedisSettingError as e:
        print(f"{program}: refusing to start: {e}", file=sys.stderr, flush=True)
        os._exit(2)  # importers (celery's app loader, the gateway's config) would print a traceback


# ---- the eviction policy ----------------------------------------------------------------------------------
#: the one `maxmemory-policy` under which Redis never drops a key to make room
SAFE_POLICY = "noeviction"


class EvictionPolicyError(RedisSettingError):
    """The Redis server may evict keys (its `maxmemory-policy` is not `noeviction`) and REDIS_ALLOW_EVICTION is off."""


def eviction_policy(client: redis.Redis) -> str | None:
    """The server's `maxmemory_policy`, read with `INFO memory` (managed Redis allows INFO where it may refuse
    CONFIG GET); None when the server does not say. Raises redis errors."""
    return client.info("memory").get("maxmemory_policy")


def eviction_problem(policy: str | None) -> str | None:
    """The one line that names an evicting policy, or None for `noeviction` (or a server that does not say)."""
    if policy is None or policy == SAFE_POLICY:
        return None
    return (f"Redis maxmemory-policy is {policy!r}, not {SAFE_POLICY!r}: when its memory fills, Redis evicts keys the "
            f"controller needs (tombstones of deleted clusters, locks, heartbeats); set `maxmemory-policy "
            f"{SAFE_POLICY}` on the server, or REDIS_ALLOW_EVICTION=1 to run anyway")


def check_eviction(client: redis.Redis, allow: bool | None = None) -> str | None:
    """Refuse a Redis that may evict our keys: raise EvictionPolicyError (its one line) unless the policy is
    `noeviction`; with `allow` (default: REDIS_ALLOW_EVICTION) log that line as a warning instead and return it.
    Returns None when the policy is safe. Raises redis errors when Redis cannot be read."""
    problem = eviction_problem(eviction_policy(client))
    if problem is None:
        return None
    if load().redis_allow_eviction if allow is None else allow:
        log.warning("%s (REDIS_ALLOW_EVICTION=1: running anyway)", problem)
        return problem
    raise EvictionPolicyError(problem)


def check_eviction_or_exit(program: str, client: redis.Redis | None = None) -> bool:
    """At a process's start: `check_eviction`, printing a refusal as one line `<program>: refusing to start: ...`
    and exiting 2. Returns False, having checked nothing, when Redis cannot be reached now (a Celery worker and
    beat check again once it answers; the exporter's status page shows the policy at every request), else True."""
    try:
        check_eviction(client or connect())
    except EvictionPolicyError as e:
        print(f"{program}: refusing to start: {e}", file=sys.stderr, flush=True)
        os._exit(2)
    except redis.RedisError as e:
        log.info("Redis' maxmemory-policy unread (%s): %s checks it once Redis answers", e, program)
        return False
    global _eviction_checked
    _eviction_checked = True
    return True


_eviction_checked = False


def eviction_checked() -> bool:
    """True once this process's `check_eviction_or_exit` read the policy (processes that start before Redis
    answers check when it does: the worker's heartbeat, beat's scheduler)."""
    return _eviction_checked
