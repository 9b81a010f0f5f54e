"""What every `htdask` command shares: one-line errors, the Redis store, JSON and table output.

Bad input: one line on stderr, exit 2, nothing enqueued. Runtime failure (Redis down, timeout): one line
on stderr, exit 1. No arguments: the help.
"""
from __future__ import annotations

import json
import os
import re
import sys

import click
import redis

from htdask.settings import SettingsError
from htdask.state.connection import RedisSettingError, check_eviction
from htdask.domain import validation
from workers.runas import UserRefused

BAD_INPUT = (validation.ValidationError, UserRefused)
_NEGATIVE_NUMBER = re.compile(r"^-\d+(\.\d*)?$")


class Failure(Exception):
    """A runtime failure the user should see as one line (exit 1)."""


class BadInput(click.UsageError):
    """Bad input found after parsing (exit 2), e.g. scaling a cluster another entry point manages."""


def examples(*lines: str) -> str:
    """An epilog of examples for --help (\\b keeps click from re-wrapping the lines)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


class Command(click.Command):
    """A command whose positional arguments may be negative numbers ("scale c -1" is refused by the
    count's validation, not by the parser as an unknown option), while real unknown options still get
    click's "No such option ... Did you mean ...?"."""

    def parse_args(self, ctx, args):
        if "--" not in args and any(_NEGATIVE_NUMBER.match(a) for a in args):
            numbers = [a for a in args if _NEGATIVE_NUMBER.match(a)]
            args = [a for a in args if not _NEGATIVE_NUMBER.match(a)] + ["--"] + numbers
        return super().parse_args(ctx, args)


class Group(click.Group):
    """Turns every error into one line on stderr: exit 2 for bad input, 1 for runtime failures."""

    command_class = Command

    def main(self, args=None, prog_name=None, **extra):
        args = list(sys.argv[1:] if args is None else args)
        if not args and "_HTDASK_COMPLETE" not in os.environ:  # no arguments: the help (not for completion)
            with click.Context(self, info_name=prog_name or "htdask") as ctx:
                click.echo(ctx.get_help())
            sys.exit(0)
        try:
            rv = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.UsageError as e:
            lines = [ln for ln in e.format_message().splitlines() if ln.strip()]
            fail(" ".join(lines) if lines else str(e), 2)
        except BAD_INPUT as e:
            fail(str(e), 2)
        except (SettingsError, RedisSettingError) as e:
            fail(str(e), 2)
        except (click.Abort, KeyboardInterrupt):
            fail("aborted", 1)
        except (redis.exceptions.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError,
                redis.exceptions.NoPermissionError) as e:  # reached, but the password (or ACL user) was refused
            fail(f"Redis ({redacted_url()}) refused the login: {e} (check REDIS_PASSWORD or the URL's password)", 1)
        except redis.exceptions.RedisError as e:
            fail(f"cannot reach Redis ({redacted_url()}): {e}", 1)
        except (Failure, TimeoutError) as e:
            fail(str(e), 1)
        sys.exit(rv if isinstance(rv, int) else 0)


def fail(message: str, code: int):
    click.echo(f"error: {message}", err=True)
    sys.stderr.flush()
    sys.exit(code)


def redacted_url() -> str:
    from htdask.state.connection import redact
    from tasks.config import settings
    return redact(settings().redis_url)


def store():
    from htdask.state import Store, connect
    from tasks.config import settings
    config = settings()
    s = Store(connect(config.redis_url), settings=config)
    s.r.ping()
    check_eviction(s.r)  # a Redis that may evict our keys: one line, exit 2 (REDIS_ALLOW_EVICTION=1: a warning)
    return s


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (one document) instead of text.")(f)


def emit_json(doc) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


def table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, trailing blanks stripped."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def duration(seconds: float | None) -> str:
    """A human duration: 42s, 3m12s, 5h3m, 2d4h (two units at most; '-' for None)."""
    if seconds is None:
        return "-"
    s = max(int(round(seconds)), 0)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"
