"""The figures table of docs/benchmarks.md, written from one `make bench` run (`bench/run_all.py --write FILE`).

The file keeps everything outside two marker lines (its title, and the notes below the table: what limits a
figure, how it was profiled); between them this module writes the run's header (date, machine, total time),
one row per figure and the count of goals met. A file without the markers is refused (one line), never
rewritten whole.
"""
from __future__ import annotations

import datetime
import re
import shutil
import subprocess
from pathlib import Path

BEGIN = "<!-- figures: written by `bench/run_all.py --write`; edit the notes below the end marker only -->"
END = "<!-- end of figures -->"

#: figure -> (full size: the script's defaults, anchor measured in the same run); a figure not listed gets "?"
DESCRIBE = {
    "submit_calls": ("100 workers", "one `condor_submit` per worker (dask-jobqueue)"),
    "poll_calls": ("50 clusters × 2 workers", "one `condor_q` per cluster"),
    "burst": ("200 requests, one cluster", "one call per request"),
    "poll_100k": ("100,000 jobs", "bare `condor_q -json`"),
    "task_throughput": ("1,000 tasks", "1,000 no-op Celery tasks on the same worker"),
    "lone_request_latency": ("30 lone requests + a 200-request burst", "no-op task: enqueue → start"),
    "gateway_scale": ("new_cluster + scale(8), 3 rounds", "dask-gateway's UnsafeLocalBackend"),
    "scale_10k": ("0 → 10,000 idle workers, 2 rounds", "bare `condor_submit` of the same description"),
    "schedds_4": ("1,000 clusters × 3 workers on 4 schedds",
                  "one bare `condor_submit` per cluster, one stream per schedd"),
    "poll_1m": ("10,000 of ours in a 1,000,000-job queue", "bare `condor_q -json`, same constraint"),
    "parse_queue": ("a 100,000-ad `condor_q -json`", "`json.loads` of the same bytes"),
    "soak": ("120 s of random requests under faults", "—"),
    "soak_sentinel": ("60 s, Redis master SIGKILLed half-way", "—"),
}


class TableError(Exception):
    """The file cannot take the table (missing, or without the markers)."""


def minutes(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list[tuple[str, str, str, str, float]], machine: str, total_s: float,
           when: datetime.datetime | None = None, note: str = "") -> str:
    """The text between the markers (markers included) for `rows`: (figure, value, goal, ok|MISSED|CRASHED,
    seconds) as run_all collects them."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    met = sum(1 for r in rows if r[3] == "ok")
    lines = [
        BEGIN,
        f"`make bench` (bench/run_all.py, {minutes(total_s)} in all), {when:%Y-%m-%d %H:%M} UTC, on {machine}"
        f"{', ' + note if note else ''}; {_redis_version()}, the local pool. Each figure is a ratio measured "
        "side by side in one run against its anchor, and ends `ok` or `MISSED`.",
        "",
        "| figure | full size (script defaults) | anchor, same run | goal | value | time |",
        "|---|---|---|---|---|---|",
    ]
    for name, value, goal, result, seconds in rows:
        size, anchor = DESCRIBE.get(name, ("?", "?"))
        verdict = "ok" if result == "ok" else f"**{result}**"
        lines.append(f"| {name} | {_cell(size)} | {_cell(anchor)} | {_cell(goal) or '—'} | "
                     f"{_cell(value)}: {verdict} | {seconds:.0f} s |")
    lines += ["", f"{met}/{len(rows)} goals met.", END]
    return "\n".join(lines) + "\n"


def check(path: Path) -> tuple[str, re.Match]:
    """The text of `path` and where its table is; TableError when it cannot take one."""
    try:
        text = path.read_text()
    except OSError as e:
        raise TableError(f"{path}: {e.strerror}") from None
    m = re.search(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", text, re.S)
    if m is None:
        raise TableError(f"{path}: no figures markers ({BEGIN!r} ... {END!r}); add them where the table goes")
    return text, m


def write(path: Path, table: str) -> None:
    """Replace the text between the markers of `path` with `table` (from `render`); the rest is kept."""
    text, m = check(path)
    path.write_text(text[:m.start()] + table + text[m.end():])


def _redis_version() -> str:
    exe = shutil.which("redis-server")
    if not exe:
        return "no redis-server"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "redis-server"
    m = re.search(r"v=(\S+)", out)
    return f"redis-server {m[1]}" if m else "redis-server"
