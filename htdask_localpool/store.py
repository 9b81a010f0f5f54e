"""The pool's SQLite database: schema, connections and write transactions.

Every writer uses ``BEGIN IMMEDIATE`` (one writer at a time, readers never blocked in
WAL mode) with a long busy timeout, so concurrent condor_submit / condor_rm processes
and the runner never lose or duplicate a job.  Job ads are stored as JSON text of typed
values (see htdask_localpool.ads); status, owner and ids are real columns for fast filtering.
"""
from __future__ import annotations

import contextlib
import logging
import sqlite3
import time

from htdask_localpool import ads, paths

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 120.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs(
    cluster   INTEGER NOT NULL,
    proc      INTEGER NOT NULL,
    status    INTEGER NOT NULL,
    owner     TEXT NOT NULL,
    seeded    INTEGER NOT NULL DEFAULT 0,   -- inserted by `localpool seed`: never started
    pid       INTEGER,                      -- job process (= its process group), 0 while starting
    pid_start INTEGER,                      -- /proc start time of pid (guards against pid reuse)
    ad        TEXT NOT NULL,
    PRIMARY KEY(cluster, proc)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs(seeded, status);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner);
CREATE TABLE IF NOT EXISTS history(
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster INTEGER NOT NULL,
    proc    INTEGER NOT NULL,
    status  INTEGER NOT NULL,
    owner   TEXT NOT NULL,
    ad      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_job ON history(cluster, proc);
CREATE TABLE IF NOT EXISTS attr_names(   -- every spelling of every attribute name ever stored
    lower TEXT NOT NULL,
    name  TEXT NOT NULL,
    PRIMARY KEY(lower, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(
    key   TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;
"""


def connect(files: paths.PoolFiles | None = None) -> sqlite3.Connection:
    """Open (creating and initialising if needed) the pool database."""
    files = files or paths.PoolFiles(paths.ensure_pool_dir())
    paths.ensure_dir(files.root)
    paths.touch_shared(files.db)  # 0666 so other users can write; SQLite copies the mode to -wal/-shm
    con = sqlite3.connect(str(files.db), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                          check_same_thread=False)
    con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        _initialise(con)
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def _initialise(con: sqlite3.Connection) -> None:
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            with paths.open_umask(0):
                if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    con.execute("PRAGMA journal_mode=WAL")
                with transaction(con):
                    if con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                        return
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            con.execute(stmt)
                    con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('next_cluster', 1)")
                    import secrets  # here: only a new pool needs it, and it costs every command an import

                    con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('pool_id', ?)",
                                (secrets.token_hex(8),))
                    con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextlib.contextmanager
def transaction(con: sqlite3.Connection):
    """A write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


# ---------------------------------------------------------------- meta / faults

def get_meta(con: sqlite3.Connection, key: str, default=None):
    row = con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return default if row is None else row[0]


def set_meta(con: sqlite3.Connection, key: str, value) -> None:
    con.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))


def take_fault(con: sqlite3.Connection, name: str) -> bool:
    """Atomically consume one unit of a counted fault knob; True if one was taken."""
    if not get_meta(con, name, 0):  # cheap read first: no write transaction in the common case
        return False
    with transaction(con):
        left = get_meta(con, name, 0) or 0
        if left <= 0:
            return False
        set_meta(con, name, left - 1)
        return True


def allocate_cluster(con: sqlite3.Connection) -> int:
    """Next ClusterId; call inside a write transaction."""
    cluster = int(get_meta(con, "next_cluster", 1))
    set_meta(con, "next_cluster", cluster + 1)
    return cluster


# ---------------------------------------------------------------- jobs

def register_names(con: sqlite3.Connection, names) -> None:
    con.executemany("INSERT OR IGNORE INTO attr_names(lower, name) VALUES(?, ?)",
                    [(n.lower(), n) for n in names])


def name_spellings(con: sqlite3.Connection) -> dict[str, list[str]]:
    """lower-case attribute name -> the spellings stored in ads (usually one)."""
    out: dict[str, list[str]] = {}
    for lower, name in con.execute("SELECT lower, name FROM attr_names"):
        out.setdefault(lower, []).append(name)
    return out


def insert_jobs(con: sqlite3.Connection, job_ads: list[dict], seeded: bool = False) -> None:
    """Insert new job ads (inside a transaction)."""
    names = set()
    rows = []
    for ad in job_ads:
        names.update(ad)
        rows.append((ad["ClusterId"], ad["ProcId"], ad["JobStatus"], ad["Owner"], int(seeded),
                     ads.encode(ad)))
    register_names(con, names)
    con.executemany("INSERT INTO jobs(cluster, proc, status, owner, seeded, ad) VALUES(?,?,?,?,?,?)",
                    rows)


def load_job(con: sqlite3.Connection, cluster: int, proc: int):
    """(status, pid, ad dict) or None."""
    row = con.execute("SELECT status, pid, ad FROM jobs WHERE cluster=? AND proc=?",
                      (cluster, proc)).fetchone()
    if row is None:
        return None
    return row[0], row[1], ads.decode(row[2])


def save_job(con: sqlite3.Connection, ad: dict, **cols) -> None:
    """Write back a job ad (JobStatus mirrored into the status column) and extra columns."""
    sets = ["status=?", "ad=?"]
    vals = [ad["JobStatus"], ads.encode(ad)]
    for k, v in cols.items():
        sets.append(f"{k}=?")
        vals.append(v)
    vals += [ad["ClusterId"], ad["ProcId"]]
    con.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE cluster=? AND proc=?", vals)


def move_to_history(con: sqlite3.Connection, ad: dict) -> None:
    """The job leaves the queue (inside a transaction)."""
    c, p = ad["ClusterId"], ad["ProcId"]
    con.execute("DELETE FROM jobs WHERE cluster=? AND proc=?", (c, p))
    register_names(con, ad)
    con.execute("INSERT INTO history(cluster, proc, status, owner, ad) VALUES(?,?,?,?,?)",
                (c, p, ad["JobStatus"], ad.get("Owner", ""), ads.encode(ad)))


def set_status(ad: dict, status: int, now: int | None = None) -> None:
    """JobStatus change with HTCondor's bookkeeping attributes."""
    now = int(time.time()) if now is None else now
    if ad.get("JobStatus") != status:
        ad["LastJobStatus"] = ad.get("JobStatus", 0)
    ad["JobStatus"] = status
    ad["EnteredCurrentStatus"] = now


def status_counts(con: sqlite3.Connection, owner: str | None = None) -> dict[int, int]:
    if owner is None:
        rows = con.execute("SELECT status, count(*) FROM jobs GROUP BY status")
    else:
        rows = con.execute("SELECT status, count(*) FROM jobs WHERE owner=? COLLATE NOCASE "
                           "GROUP BY status", (owner,))
    return {s: n for s, n in rows}


def pool_id(con: sqlite3.Connection) -> str:
    return str(get_meta(con, "pool_id", "unknown"))
