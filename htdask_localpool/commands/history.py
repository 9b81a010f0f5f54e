"""condor_history: jobs that left the queue, newest first (-json, -af, -long, table)."""
from __future__ import annotations

import logging
import sys
import time

from htdask_localpool import ads, classad_json, daemon, store
from htdask_localpool.commands import common

log = logging.getLogger(__name__)

def main(argv: list[str] | None = None) -> int:
    return common.run_command("condor_history", _history, argv)


def _history(argv: list[str]) -> int:
    fmt = None
    af: list[str] | None = None
    attributes: list[str] | None = None
    constraints: list[str] = []
    limit: int | None = None
    ids: list[tuple[int, int | None]] = []
    owners: list[str] = []
    dp = common.dash_prefix
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("-"):
            jid = common.parse_jobid(a)
            (ids.append(jid) if jid is not None else owners.append(a))
        elif dp(a, "jsonl", 5) or dp(a, "json", 2) or dp(a, "xml", 3):
            want = "jsonl" if dp(a, "jsonl", 5) else ("json" if dp(a, "json", 2) else "xml")
            if fmt in ("json", "jsonl", "xml") and fmt != want:
                raise common.Exit(1, "Error: -xml, -json and -jsonl are mutually exclusive\n")
            if want == "xml":
                raise common.Exit(1, "Error: -xml is not supported by this local pool\n")
            fmt = want
        elif common.dash_colon_prefix(a, "long", 1)[0]:
            fmt = fmt or "long"
        elif common.dash_colon_prefix(a, "autoformat", 5)[0] or common.dash_colon_prefix(a, "af", 2)[0]:
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                raise common.Exit(1, "Error: -autoformat requires at least one attribute parameter\n")
            af = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                af.append(argv[i])
        elif dp(a, "attributes", 2):
            i += 1
            if i >= len(argv):
                raise common.Exit(1, "Error: -attributes requires a list of attributes to show\n")
            attributes = [x for x in argv[i].replace(",", " ").split() if x]
        elif dp(a, "constraint", 1):
            i += 1
            if i >= len(argv):
                raise common.Exit(1, "Error: -constraint requires another parameter\n")
            constraints.append(argv[i])
        elif dp(a, "limit", 3) or dp(a, "match", 1):
            i += 1
            if i >= len(argv):
                raise common.Exit(1, f"Error: {a} requires another parameter\n")
            try:
                limit = int(argv[i])
            except ValueError:
                raise common.Exit(1, f"Error: {a} requires a number\n")
        elif dp(a, "forwards", 1) or dp(a, "backwards", 1) or dp(a, "wide", 1):
            pass
        elif dp(a, "name", 1) or dp(a, "pool", 1) or dp(a, "file", 1):
            i += 1
        else:
            raise common.Exit(1, f"Error: unrecognized argument {a}\n")
        i += 1

    files = common.pool_files()
    con = store.connect(files)
    spellings = store.name_spellings(con)
    compiled = []
    if constraints:
        from htdask_localpool import match

        for text in constraints:
            try:
                compiled.append(match.Constraint(text, spellings))
            except ValueError:
                raise common.Exit(1, f"Error: Invalid constraint expression: {text}\n")
    where, params = common.ids_and_owners(ids, owners)
    sql = "SELECT ad FROM history" + (" WHERE " + " OR ".join(where) if where else "") + " ORDER BY seq DESC"

    def matching():
        return common.matching_ads(con, sql, params, compiled, limit)

    out = sys.stdout
    if af is not None:
        from htdask_localpool.commands.q import _autoformat

        _autoformat(out, matching(), af)
    elif fmt in ("json", "jsonl"):
        names = common.projection_names(attributes, spellings)
        if fmt == "json":
            w = classad_json.ListWriter(out, empty_brackets=True)
            for ad in matching():
                w.write(classad_json.ad(ad, names=names(ad)))
            w.close()
        else:
            import json

            for ad in matching():
                text = classad_json.ad(ad, names=names(ad))
                out.write(json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False) + "\n")
    elif fmt == "long":
        names = common.projection_names(attributes, spellings)
        out.write("".join(ads.format_old(ad, names(ad)) + "\n" for ad in matching()))
    else:
        lines = [" ID     OWNER          SUBMITTED   RUN_TIME     ST COMPLETED   CMD            "]
        for ad in matching():
            lines.append(_row(ad))
        out.write("\n".join(lines) + "\n")
    out.flush()
    con.close()
    daemon.ensure_runner(files)  # every command brings the pool up, as the first one must
    return 0




def _date(ts) -> str:
    if not isinstance(ts, int) or ts <= 0:
        return "     ---    "
    t = time.localtime(ts)
    return f"{t.tm_mon:>2}/{t.tm_mday:<2} {t.tm_hour:02d}:{t.tm_min:02d}"


def _row(ad: dict) -> str:
    wall = ad.get("RemoteWallClockTime", 0.0)
    wall = int(wall) if isinstance(wall, (int, float)) else 0
    cmd = ad.get("Cmd", "") if isinstance(ad.get("Cmd"), str) else ""
    args = ad.get("Arguments", ad.get("Args", ""))
    text = cmd + (f" {args}" if isinstance(args, str) and args else "")
    jid = f"{ad.get('ClusterId')}.{ad.get('ProcId')}"
    return (f"{jid:>7} {str(ad.get('Owner', ''))[:14]:<14} {_date(ad.get('QDate')):<11} "
            f"{common.wall_clock(wall)} {common.STATUS_LETTER.get(ad.get('JobStatus'), '?'):<2} "
            f"{_date(ad.get('CompletionDate')):<11} {text}")
