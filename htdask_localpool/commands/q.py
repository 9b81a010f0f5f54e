"""condor_q: query the queue (-json, -long, -af, -attributes, -constraint, -totals, table).

Rows are pre-filtered in SQL (owner, cluster/proc), the constraint is evaluated with
classad2 on only the attributes it references, and JSON is written by our own writer,
so a 100k-job queue is answered in about a second.
"""
from __future__ import annotations

import logging
import sys
import time

from htdask_localpool import ads, classad_json, daemon, paths, store
from htdask_localpool.commands import common

log = logging.getLogger(__name__)

def main(argv: list[str] | None = None) -> int:
    return common.run_command("condor_q", _query, argv)


class Options:
    def __init__(self):
        self.json = False
        self.long = False
        self.af: list[str] | None = None
        self.attributes: list[str] | None = None
        self.constraints: list[str] = []
        self.allusers = False
        self.totals = False
        self.nobatch = False
        self.ids: list[tuple[int, int | None]] = []
        self.owners: list[str] = []
        self.limit: int | None = None
        self.target = common.Target()  # -name / -pool
        self.held = False
        self.run = False
        self.analyze = False


def _parse_args(argv: list[str]) -> Options:
    o = Options()
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("-") or a == "-":
            jid = common.parse_jobid(a)
            if jid is not None:
                o.ids.append(jid)
            else:
                o.owners.append(a)
            i += 1
            continue
        dp = common.dash_prefix
        if dp(a, "json", 2):
            o.json = o.long = True
        elif dp(a, "xml", 3):
            if o.json:
                raise common.Exit(1, "Error: Cannot print as both XML and JSON\n")
            raise common.Exit(1, "Error: -xml is not supported by this local pool\n")
        elif common.dash_colon_prefix(a, "long", 1)[0]:
            o.long = True
        elif common.dash_colon_prefix(a, "autoformat", 5)[0] or common.dash_colon_prefix(a, "af", 2)[0]:
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                raise common.Exit(1, "Error: -autoformat requires at least one attribute parameter\n")
            o.af = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                o.af.append(argv[i])
        elif dp(a, "attributes", 2):
            if i + 1 >= len(argv):
                raise common.Exit(1, "Error: -attributes requires a list of attributes to show\n")
            i += 1
            o.attributes = [x for x in argv[i].replace(",", " ").split() if x]
        elif dp(a, "constraint", 1):
            if i + 1 >= len(argv):
                raise common.Exit(1, "Error: -constraint requires another parameter\n")
            i += 1
            o.constraints.append((i, argv[i]))
        elif dp(a, "allusers", 2) or dp(a, "all-users", 2):
            o.allusers = True
        elif dp(a, "totals", 3):
            o.totals = True
        elif dp(a, "nobatch", 3):
            o.nobatch = True
        elif dp(a, "batch", 2) or dp(a, "wide", 1) or dp(a, "global", 1) or dp(a, "verbose", 2):
            pass
        elif common.dash_colon_prefix(a, "hold", 2)[0] or common.dash_colon_prefix(a, "held", 2)[0]:
            if o.run:
                raise common.Exit(1, "-run and -hold/held or -idle are incompatible\n")
            o.held = True
        elif dp(a, "run", 1):
            if o.held:
                raise common.Exit(1, "-run and -hold/held or -idle are incompatible\n")
            o.run = True
        elif common.dash_colon_prefix(a, "better-analyze", 2)[0] or common.dash_colon_prefix(a, "analyze", 2)[0]:
            o.analyze = True
        elif dp(a, "limit", 3):
            if i + 1 >= len(argv):
                raise common.Exit(1, "Error: -limit requires the max number of results as an argument.\n")
            i += 1
            try:
                o.limit = int(argv[i])
            except ValueError:
                raise common.Exit(1, f"Error: Unable to convert ({argv[i]}) to a number for -limit.\n")
            if o.limit <= 0:
                raise common.Exit(1, f"Error: {o.limit} is not a valid for -limit.\n")
        elif dp(a, "name", 1) or dp(a, "pool", 1):
            which = "name" if dp(a, "name", 1) else "pool"
            i = o.target.take(argv, i, which, "Error: -name requires the name of a schedd as an argument.\n"
                              if which == "name" else "Error: -pool requires a hostname as an argument.\n")
        else:
            raise common.Exit(1, f"Error: unrecognized argument {a}\n")
        i += 1
    return o


def _query(argv: list[str]) -> int:
    o = _parse_args(argv)
    t = o.target
    if t.pool is not None and not common.own_pool(t.pool):  # queue.cpp: printNoCollectorContact
        raise common.Exit(1, f"Error: Couldn't contact the condor_collector on {t.pool}.\n")
    if t.unknown():  # -name: the collector has no schedd ad of that Name
        raise common.Exit(1, "Error: Collector has no record of schedd/submitter\n")
    files = common.pool_files()
    con = store.connect(files)
    if store.take_fault(con, "fault_query_fail"):
        host = common.schedd_name()
        raise common.Exit(1, f"\n-- Failed to fetch ads from: {common.SCHEDD_ADDR} : {host}\n"
                      f"SECURITY:2:Failed to connect to schedd {host}\n")
    me = paths.current_user()
    spellings = store.name_spellings(con)
    constraints = []
    if o.constraints:
        from htdask_localpool import match  # classad2 only when needed

        for idx, text in o.constraints:
            try:
                constraints.append(match.Constraint(text, spellings))
            except ValueError:
                raise common.Exit(1, f"Error: Argument {idx + 1} ({text}) is not a valid constraint\n")
    my_jobs_only = not o.allusers and not o.owners

    where, params = [], []
    if my_jobs_only:
        where.append("owner = ? COLLATE NOCASE")
        params.append(me)
    ors, more = common.ids_and_owners(o.ids, o.owners)
    params += more
    if ors:
        where.append("(" + " OR ".join(ors) + ")")
    if o.held:
        where.append("status = 5")
    if o.run:
        where.append("status IN (2, 6, 7)")
    sql = "SELECT ad FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY cluster, proc"

    def matching():
        return common.matching_ads(con, sql, params, constraints, o.limit)

    out = sys.stdout
    if o.analyze:
        from htdask_localpool.commands import analyze

        analyze.write(out, con, list(matching()))
    elif o.af is not None:
        _autoformat(out, matching(), o.af)
    elif o.json:
        counts = {}
        w = classad_json.ListWriter(out, empty_brackets=False)
        if o.attributes:
            fmt = classad_json.Projection(common.projection_names(o.attributes, spellings)(None)).ad
        else:
            fmt = classad_json.ad
        for ad in matching():
            if o.totals:
                counts[ad.get("JobStatus")] = counts.get(ad.get("JobStatus"), 0) + 1
            w.write(fmt(ad))
        if o.totals:
            w.write(classad_json.ad(_summary_ad(counts)))
        w.close()
    elif o.long:
        names = common.projection_names(o.attributes, spellings)
        buf = []
        for ad in matching():
            buf.append(ads.format_old(ad, names(ad)) + "\n")
        out.write("".join(buf))
    else:
        _table(out, con, list(matching()), o, me)
    out.flush()
    con.close()
    daemon.ensure_runner(files)
    return 0




def _summary_ad(counts: dict) -> dict:
    return {"MyType": "Summary", "Jobs": sum(counts.values()), "Idle": counts.get(1, 0),
            "Running": counts.get(2, 0), "Removed": counts.get(3, 0), "Completed": counts.get(4, 0),
            "Held": counts.get(5, 0), "Suspended": counts.get(7, 0)}


def _autoformat(out, ads_iter, attrs: list[str]) -> None:
    from htdask_localpool import match

    cache: dict = {}
    lines = []
    for ad in ads_iter:
        vals = []
        for a in attrs:
            key, v = ads.lookup(ad, a)
            if key is None:
                vals.append("undefined")
                continue
            if type(v) is ads.Expr:
                v = match.evaluate(ad, key, cache)
            vals.append("undefined" if v is None else ads.autoformat(v))
        lines.append(" ".join(vals) + "\n")
    out.write("".join(lines))


def _table(out, con, rows: list[dict], o: Options, me: str) -> None:
    counts: dict[int, int] = {}
    for ad in rows:
        counts[ad.get("JobStatus")] = counts.get(ad.get("JobStatus"), 0) + 1
    lines = ["", "", common.schedd_title()]
    if o.held and not o.totals:
        lines += _held_rows(rows)
    elif o.run and not o.totals:
        lines += _run_rows(rows)
        out.write("\n".join(lines) + "\n")  # SUMMARY NONE
        return
    elif not o.totals:
        if o.nobatch:
            lines.append(" ID      OWNER            SUBMITTED     RUN_TIME ST PRI SIZE CMD")
            for ad in rows:
                lines.append(_nobatch_row(ad))
        else:
            lines += _batch_rows(rows)
    lines.append("")
    lines.append(common.totals_line("query", counts, True))
    if not o.allusers:
        lines.append(common.totals_line(common.user_domain_name(me), store.status_counts(con, me), True))
    lines.append(common.totals_line("all users", store.status_counts(con), False))
    out.write("\n".join(lines) + "\n")


def _date(ts) -> str:
    t = time.localtime(ts if isinstance(ts, int) else 0)
    return f"{t.tm_mon}/{t.tm_mday} {t.tm_hour:02d}:{t.tm_min:02d}"


def _batch_rows(rows: list[dict]) -> list[str]:
    groups: dict = {}
    for ad in rows:
        name = ad.get("JobBatchName")
        key = (ad.get("Owner", ""), name if isinstance(name, str) else f"ID: {ad.get('ClusterId')}")
        groups.setdefault(key, []).append(ad)
    any_held = any(ad.get("JobStatus") == 5 for ad in rows)
    owner_w = max([5] + [len(k[0]) for k in groups])
    name_w = max([10] + [len(k[1]) for k in groups])
    head = f"{'OWNER':<{owner_w}} {'BATCH_NAME':<{name_w}}    SUBMITTED   DONE   RUN    IDLE"
    head += "   HOLD  TOTAL JOB_IDS" if any_held else "  TOTAL JOB_IDS"
    out = [head]
    for (owner, name), group in groups.items():
        st = [a.get("JobStatus") for a in group]
        def n(x):
            c = st.count(x)
            return str(c) if c else "_"
        ids = sorted((a.get("ClusterId", 0), a.get("ProcId", 0)) for a in group)
        if len(ids) == 1:
            idtext = f"{ids[0][0]}.{ids[0][1]}"
        else:
            first, last = ids[0], ids[-1]
            idtext = (f"{first[0]}.{first[1]}-{last[1]}" if first[0] == last[0]
                      else f"{first[0]}.{first[1]} ... {last[0]}.{last[1]}")
        line = (f"{owner:<{owner_w}} {name:<{name_w}} {_date(min(a.get('QDate', 0) for a in group)):>12} "
                f"{n(4):>6} {n(2):>6} {n(1):>7}")
        if any_held:
            line += f" {n(5):>6}"
        line += f" {len(group):>6} {idtext}"
        out.append(line)
    return out


def _id(ad: dict) -> str:
    """' ID' WIDTH 5 '%4d.' then ProcId WIDTH 3 '%-3d' (queue.cpp print formats)."""
    c, p = ad.get("ClusterId"), ad.get("ProcId")
    return f"{c if isinstance(c, int) else 0:4d}.{p if isinstance(p, int) else 0:<3d}"


def _held_rows(rows: list[dict]) -> list[str]:
    """jobHold_PrintFormat: ID OWNER HELD_SINCE CODE/SUB HOLD_REASON."""
    out = [f"{' ID':<8} {'OWNER':<14} {'HELD_SINCE':<11} {'CODE':<4}{'/SUB':<4} HOLD_REASON"]
    for ad in rows:
        code, sub = ad.get("HoldReasonCode"), ad.get("HoldReasonSubCode")
        code = f"{code:4d}" if isinstance(code, int) else "   ?"
        sub = f"/{sub:<3d}" if isinstance(sub, int) else " " * 4
        reason = ad.get("HoldReason") if isinstance(ad.get("HoldReason"), str) else ""
        out.append(f"{_id(ad)} {str(ad.get('Owner', '??')):<14} {_date(ad.get('EnteredCurrentStatus', 0)):>11} "
                   f"{code}{sub} {reason}")
    return out


def _run_rows(rows: list[dict]) -> list[str]:
    """jobRuntime_PrintFormat: ID OWNER SUBMITTED RUN_TIME HOST(S)."""
    out = [f"{' ID':<8} {'OWNER':<14} {'  SUBMITTED':<11} {'    RUN_TIME':<12} HOST(S)"]
    now = int(time.time())
    for ad in rows:
        wall = ad.get("RemoteWallClockTime", 0.0)
        wall = int(wall) if isinstance(wall, (int, float)) else 0
        if isinstance(ad.get("JobCurrentStartDate"), int):
            wall += max(0, now - ad["JobCurrentStartDate"])
        host = ad.get("RemoteHost") if isinstance(ad.get("RemoteHost"), str) else "??"
        out.append(f"{_id(ad)} {str(ad.get('Owner', '??')):<14} {_date(ad.get('QDate', 0)):>11} "
                   f"{common.wall_clock(wall):>12} {host}")
    return out


def _nobatch_row(ad: dict) -> str:
    cmd = ad.get("Cmd", "") if isinstance(ad.get("Cmd"), str) else ""
    args = ad.get("Arguments", ad.get("Args", ""))
    text = cmd.rsplit("/", 1)[-1] + (f" {args}" if isinstance(args, str) and args else "")
    wall = ad.get("RemoteWallClockTime", 0.0)
    wall = int(wall) if isinstance(wall, (int, float)) else 0
    if ad.get("JobStatus") == 2 and isinstance(ad.get("JobCurrentStartDate"), int):
        wall += max(0, int(time.time()) - ad["JobCurrentStartDate"])
    jid = f"{ad.get('ClusterId')}.{ad.get('ProcId')}"
    size = ad.get("ImageSize", 0)
    size = size / 1024.0 if isinstance(size, (int, float)) else 0.0
    return (f"{jid:>8} {str(ad.get('Owner', ''))[:14]:<14} {_date(ad.get('QDate', 0)):>11} "
            f"{common.wall_clock(wall)} {common.STATUS_LETTER.get(ad.get('JobStatus'), '?'):<2} "
            f"{ad.get('JobPrio', 0) if isinstance(ad.get('JobPrio'), int) else 0:<3} {size:<4.1f} {text[:18]}")
