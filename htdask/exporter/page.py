"""The status page: one server-rendered HTML table of clusters (and one of schedds), no JavaScript.

The page reloads itself every poll interval (`<meta http-equiv="refresh">`). Each cluster row is
`<tr class="cluster" data-cluster="NAME">`, so scripts and tests can find it. Every value is escaped.
"""
from __future__ import annotations

from html import escape

from htdask.exporter.snapshot import STALE_POLLS, Snapshot

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; }
td.num small { display: block; text-align: left; max-width: 24em; }
tr.stale td { background: #fff4e0; }
.bad { color: #b00020; }
small { color: #666; }
"""


def duration(seconds: float | None) -> str:
    """`42s`, `3m12s`, `2h5m`, `3d4h`; `never` for None."""
    if seconds is None:
        return "never"
    s = int(round(seconds))
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit}{(s % size) // subsize}{sub}"
    return f"{s}s"


def render(snap: Snapshot) -> str:
    refresh = max(5, int(round(snap.poll_interval)))
    rows = "\n".join(_cluster_row(c) for c in snap.clusters) or \
        '<tr><td colspan="14">no clusters</td></tr>'
    schedds = "\n".join(_schedd_row(snap, s) for _, s in sorted(snap.schedds.items())) or \
        '<tr><td colspan="5">no schedd polled yet</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<title>htdask clusters</title>
<style>{STYLE}</style>
</head>
<body>
<h1>htdask clusters</h1>
{_eviction(snap)}<p><small>From Redis at {escape(_utc(snap.taken_at))}; reloads every {refresh}s. A summary older than
{STALE_POLLS} &times; POLL_INTERVAL ({duration(STALE_POLLS * snap.poll_interval)}) is stale.
<a href="/metrics">metrics</a></small></p>
<table id="clusters">
<thead><tr><th>cluster</th><th>owner</th><th>schedd</th><th>desired</th><th>idle</th><th>running</th>
<th>connected</th><th>held</th><th>suspended</th><th>transferring output</th><th>completed</th><th>removed</th>
<th>polled</th><th>notes</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
{_quotas(snap)}{_culled(snap)}<h2>schedds</h2>
<table id="schedds">
<thead><tr><th>schedd</th><th>last good poll</th><th>poll took</th><th>failures in a row</th><th>error</th></tr></thead>
<tbody>
{schedds}
</tbody>
</table>
</body>
</html>
"""


def _culled(snap: Snapshot) -> str:
    """Clusters an idle or lifetime limit deleted within a day: why and when (tasks/limits.py)."""
    if not snap.culled:
        return ""
    rows = "\n".join(
        f'<tr class="culled" data-cluster="{escape(name)}"><td>{escape(name)}</td>'
        f'<td>{escape(str(doc.get("owner") or "-"))}</td><td>{escape(str(doc.get("reason")))}</td>'
        f'<td>{escape(str(doc.get("detail")))}</td><td>{duration(snap.taken_at - float(doc.get("at") or 0))} ago</td></tr>'
        for name, doc in sorted(snap.culled.items()))
    return f"""<h2>deleted by a limit (last day)</h2>
<table id="culled">
<thead><tr><th>cluster</th><th>owner</th><th>limit</th><th>why</th><th>deleted</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
"""


def _eviction(snap: Snapshot) -> str:
    """A warning while Redis may evict the controller's keys (REDIS_ALLOW_EVICTION=1 let it run)."""
    if not snap.eviction:
        return ""
    return f'<p id="eviction" class="bad">Warning: {escape(snap.eviction)}</p>\n'


def _cluster_row(c) -> str:
    jobs = c.jobs or {}

    def num(state: str) -> str:
        return "-" if c.jobs is None else str(jobs.get(state, 0))

    held = num("held")  # the reasons are in the notes, with "left alone" for a person's hold
    polled = duration(c.age) + (" ago" if c.age is not None else "")
    if c.stale:
        polled += ' <span class="bad">(stale)</span>'
    # tasks.status.notes: the words `htdask status` shows; errors and crash loops in red
    notes = [f'<span class="bad">{escape(n)}</span>' if n.startswith(("error:", "crash loop:")) else escape(n)
             for n in c.notes]
    connected = "-" if c.connected is None else str(c.connected)
    cells = [escape(c.name), escape(c.owner or "-"), escape(c.schedd),
             "-" if c.desired is None else str(c.desired), num("idle"), num("running"), connected, held,
             num("suspended"), num("transferring_output"), num("completed"), num("removed"), polled,
             "<br>".join(notes)]
    classes = "cluster stale" if c.stale else "cluster"
    tds = "".join(f'<td class="num">{v}</td>' if 3 <= i <= 11 else f"<td>{v}</td>" for i, v in enumerate(cells))
    return f'<tr class="{classes}" data-cluster="{escape(c.name)}">{tds}</tr>'


def _schedd_row(snap: Snapshot, s) -> str:
    age = None if s.ok_at is None else snap.taken_at - s.ok_at
    took = s.poll.get("duration")
    took = f"{float(took):.2f}s" if took else "-"
    error = f'<span class="bad">{escape(s.error)}</span>' if s.error else ""
    return (f'<tr class="schedd" data-schedd="{escape(s.name)}"><td>{escape(s.name)}</td>'
            f"<td>{duration(age)}{' ago' if age is not None else ''}</td><td>{took}</td>"
            f'<td class="num">{escape(str(s.poll.get("failures") or 0))}</td><td>{error}</td></tr>')


def _utc(epoch: float) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


BAD = ' class="bad"'


def _quotas(snap: Snapshot) -> str:
    """Use against quota per owner (used/limit; - = unlimited; at or over a limit: marked)."""
    if not snap.quotas:
        return ""
    rows = []
    for q in snap.quotas:
        cells = "".join(f'<td{BAD if r in q["over"] else ""}>{q[r]}/{q["limits"][r] or "-"}</td>'
                        for r in ("clusters", "workers", "cores", "memory", "gpus"))
        rows.append(f"<tr><td>{escape(q['owner'])}</td>{cells}</tr>")
    return ('<h2>quotas per owner</h2>\n<table id="quotas">\n<thead><tr><th>owner</th><th>clusters</th>'
            '<th>workers</th><th>cores</th><th>memory (MiB)</th><th>gpus</th></tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody>\n</table>\n")
