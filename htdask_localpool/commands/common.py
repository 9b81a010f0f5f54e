"""Helpers shared by the condor_* programs: HTCondor-style option matching, job-id
arguments, output, and the "-- Schedd:" identity of the pool."""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
import time

from htdask_localpool import calls_log, hosts, paths

log = logging.getLogger(__name__)

SCHEDD_ADDR = "<127.0.0.1:9618?..."


def dash_prefix(arg: str, name: str, min_len: int = 1) -> bool:
    """HTCondor's is_dash_arg_prefix: "-con" matches "constraint" (at least min_len chars)."""
    if not arg.startswith("-"):
        return False
    a = arg[2:] if arg.startswith("--") else arg[1:]
    return len(a) >= min_len and name.startswith(a)


def dash_colon_prefix(arg: str, name: str, min_len: int = 1) -> tuple[bool, str | None]:
    """Like dash_prefix but allows "-name:opts"; returns (matched, opts)."""
    base, sep, opts = arg.partition(":")
    if dash_prefix(base, name, min_len):
        return True, (opts if sep else None)
    return False, None


_JOBID = re.compile(r"^(\d+)(?:\.(\d+))?$")


def parse_jobid(arg: str):
    """'C' -> (C, None); 'C.P' -> (C, P); anything else -> None."""
    m = _JOBID.match(arg)
    if not m:
        return None
    return int(m.group(1)), (int(m.group(2)) if m.group(2) is not None else None)


def write(text: str, stream=None) -> None:
    (stream or sys.stdout).write(text)


def schedd_name() -> str:
    return paths.hostname()


def own_schedd_names() -> set[str]:
    """The names this pool's schedd answers to (lower case): the host's name (SCHEDD_NAME's default,
    short and fully qualified) and LOCALPOOL_SCHEDD_NAMES (comma-separated; default "local")."""
    names = {schedd_name(), socket.getfqdn()}
    names.update((os.environ.get("LOCALPOOL_SCHEDD_NAMES") or "local").split(","))
    return {n.strip().lower() for n in names if n.strip()}


def own_pool(pool: str) -> bool:
    """-pool names this host's central manager: its name, localhost or 127.0.0.1, optionally :9618."""
    host, _, port = pool.rpartition(":") if pool.count(":") == 1 else (pool, "", "")
    hosts = {schedd_name().lower(), socket.getfqdn().lower(), "localhost", "127.0.0.1"}
    return host.lower() in hosts and port in ("", "9618")


class Target:
    """The -name / -pool values of a command line, checked against this pool."""

    def __init__(self):
        self.name: str | None = None
        self.pool: str | None = None

    def take(self, argv: list[str], i: int, which: str, missing: str) -> int:
        """Record argv[i+1] as the -name/-pool value (Exit(1, missing) if there is none); returns i+1."""
        if i + 1 >= len(argv):
            raise Exit(1, missing)
        setattr(self, which, argv[i + 1])
        return i + 1

    def unknown(self) -> bool:
        return ((self.pool is not None and not own_pool(self.pool))
                or (self.name is not None and self.name.lower() not in own_schedd_names()))

    @staticmethod
    def host_part(name: str) -> str:
        return name.split("@", 1)[1] if "@" in name else name


def schedd_title() -> str:
    stamp = time.strftime("%m/%d/%y %H:%M:%S")
    return f"-- Schedd: {schedd_name()} : {SCHEDD_ADDR} @ {stamp}"


def user_domain_name(owner: str) -> str:
    return f"{owner}@{schedd_name()}"


def pool_files() -> paths.PoolFiles:
    return paths.PoolFiles(paths.ensure_pool_dir())


def prog_name() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "condor"


def totals_line(label: str, counts: dict[int, int], trailing_space: bool) -> str:
    total = sum(counts.values())
    line = (f"Total for {label}: {total} jobs; {counts.get(4, 0)} completed, {counts.get(3, 0)} removed, "
            f"{counts.get(1, 0)} idle, {counts.get(2, 0)} running, {counts.get(5, 0)} held, "
            f"{counts.get(7, 0)} suspended")
    return line + (" " if trailing_space else "")


STATUS_LETTER = {1: "I", 2: "R", 3: "X", 4: "C", 5: "H", 6: ">", 7: "S"}


class Exit(Exception):
    """End a command with this exit code after printing `stderr` (HTCondor's own messages)."""

    def __init__(self, code: int, stderr: str = ""):
        super().__init__(stderr)
        self.code, self.stderr = code, stderr


def run_command(name: str, body, argv: list[str] | None) -> int:
    """A condor_* program's main: log the call, run the body guarded, turn Exit into its code."""
    argv = sys.argv[1:] if argv is None else argv
    calls_log.record(name, argv)
    try:
        return guarded(body, argv)
    except Exit as exc:
        sys.stdout.flush()
        sys.stderr.write(exc.stderr)
        return exc.code


def wall_clock(seconds: int) -> str:
    """`D+HH:MM:SS`, as HTCondor's tables print run times."""
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{d:>3}+{h:02d}:{m:02d}:{s:02d}"


def projection_names(attributes, spellings):
    """A function ad -> the sorted attribute names to print (all of the ad's, or the projection's)."""
    from htdask_localpool import classad_json
    if not attributes:
        return classad_json.sorted_names
    cands = []
    for a in attributes:
        for s in spellings.get(a.lower(), [a]):
            if s not in cands:
                cands.append(s)
    ordered = sorted(cands, key=str.lower)
    return lambda ad: ordered


def guarded(fn, *args) -> int:
    """Run a command body; a broken pool (unwritable dir, corrupt db) is one error line, exit 1."""
    import sqlite3

    try:
        return fn(*args)
    except BrokenPipeError:  # e.g. `condor_q | head`: like a C program killed by SIGPIPE, quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 1
    except (OSError, sqlite3.Error) as exc:
        sys.stdout.flush()
        sys.stderr.write(f"\nERROR: {prog_name()}: local pool failure: {exc}\n")
        return 1
    except hosts.SettingError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"ERROR: {prog_name()}: {exc}\n")
        return 1


def ids_and_owners(ids, owners) -> tuple[list[str], list]:
    """SQL terms (to be OR-ed) and their parameters selecting jobs by "C" / "C.P" ids and by owners,
    as condor_q and condor_history read their positional arguments."""
    terms: list[str] = []
    params: list = []
    for c, p in ids:
        if p is None:
            terms.append("cluster = ?")
            params.append(c)
        else:
            terms.append("(cluster = ? AND proc = ?)")
            params += [c, p]
    for owner in owners:
        terms.append("owner = ? COLLATE NOCASE")
        params.append(owner)
    return terms, params


def matching_ads(con, sql: str, params, constraints, limit: int | None):
    """The ads the query selects that match every compiled constraint, at most `limit` (None: all)."""
    from htdask_localpool import ads
    if limit is not None and limit <= 0:
        return
    n = 0
    for (text,) in con.execute(sql, params):
        ad = ads.decode(text)
        if constraints and not all(c.matches(ad) for c in constraints):
            continue
        yield ad
        n += 1
        if limit is not None and n >= limit:
            return
