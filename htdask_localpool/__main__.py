"""`python -m htdask_localpool status|start|stop|fault ...|seed N|install DIR` -- pool administration."""
from __future__ import annotations

import argparse
import logging
import sys

from htdask_localpool import JOB_STATUS_NAMES, ads, daemon, hosts, paths, store

log = logging.getLogger("htdask_localpool")

FAULTS = {"submit-fail": "fault_submit_fail", "submit-delay": "fault_submit_delay",
          "query-fail": "fault_query_fail", "hold-next": "fault_hold_next",
          "submit-partial": "fault_submit_partial"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_runner"]:
        from htdask_localpool import runner

        return runner.run()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m htdask_localpool", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status", help="runner pid, job counts by status, slots")
    sub.add_parser("start", help="start the runner (commands also do this on their own)")
    sub.add_parser("stop", help="stop the runner and kill every job process of the pool")
    f = sub.add_parser("fault", help="inject schedd failures")
    f.add_argument("kind", choices=sorted(FAULTS) + ["clear", "show"])
    f.add_argument("value", nargs="?")
    s = sub.add_parser("seed", help="insert N never-started jobs quickly (benchmarks)")
    s.add_argument("count", type=int)
    s.add_argument("--attr", action="append", default=[], metavar="NAME=CLASSAD_VALUE")
    s.add_argument("--status", type=int, default=1)
    s.add_argument("--owner")
    s.add_argument("--procs-per-cluster", type=int, default=1)
    i = sub.add_parser("install", help="copy the programs into DIR for every user (prints the bin dir)")
    i.add_argument("dir")
    i.add_argument("--python", help="interpreter of the launchers (default: this one)")
    a = p.parse_args(argv)
    if a.cmd == "install":
        from htdask_localpool.install import install

        print(install(a.dir, a.python))
        return 0
    files = paths.PoolFiles()

    if a.cmd == "stop":
        try:
            print(daemon.stop(files))
        except PermissionError as exc:
            print(f"localpool: cannot stop the runner: {exc}", file=sys.stderr)
            return 1
        return 0
    if a.cmd == "start":
        files = paths.PoolFiles(paths.ensure_pool_dir())
        store.connect(files).close()
        try:
            daemon.ensure_runner(files)
        except hosts.SettingError as exc:
            print(f"localpool: {exc}", file=sys.stderr)
            return 1
        print(f"runner pid {daemon.runner_pid(files)}")
        return 0
    if a.cmd == "status":
        return _status(files)
    if a.cmd == "fault":
        return _fault(a.kind, a.value)
    if a.cmd == "seed":
        from htdask_localpool import seed

        attrs = {}
        for item in a.attr:
            name, sep, text = item.partition("=")
            if not sep or not name.strip():
                p.error(f"--attr wants NAME=VALUE, got {item!r}")
            try:
                attrs[name.strip()] = ads.parse_value(text)
            except ValueError:
                p.error(f"not a ClassAd value: {text!r}")
        first, last = seed.seed(a.count, attrs, a.status, a.owner, a.procs_per_cluster)
        print(f"seeded {a.count} job(s) into clusters {first}..{last}")
        return 0
    return 2


def _status(files: paths.PoolFiles) -> int:
    running = files.root.is_dir() and daemon.runner_running(files)
    pid = daemon.runner_pid(files) if running else None
    print(f"pool dir: {files.root}")
    print(f"runner: {'pid %d' % pid if running else 'not running'}")
    if not files.db.exists():
        print("jobs: none")
        return 0
    con = store.connect(files)
    counts = store.status_counts(con)
    slots = store.get_meta(con, "runner_slots")
    busy = con.execute("SELECT count(*) FROM jobs WHERE pid IS NOT NULL").fetchone()[0]
    hist = con.execute("SELECT count(*) FROM history").fetchone()[0]
    con.close()
    parts = [f"{counts.get(s, 0)} {JOB_STATUS_NAMES[s]}" for s in (1, 2, 3, 4, 5, 6, 7)]
    print(f"jobs: {sum(counts.values())} total; " + ", ".join(parts))
    print(f"slots: {busy} busy of {slots if slots is not None else '?'}")
    print(f"history: {hist}")
    return 0


def _fault(kind: str, value: str | None) -> int:
    con = store.connect()
    try:
        if kind == "show":
            for k, meta in sorted(FAULTS.items()):
                print(f"{k}: {store.get_meta(con, meta, 0)}")
            return 0
        with store.transaction(con):
            if kind == "clear":
                for meta in FAULTS.values():
                    store.set_meta(con, meta, 0)
                print("faults cleared")
                return 0
            if value is None:
                print(f"fault {kind} needs a value", file=sys.stderr)
                return 2
            v = float(value) if kind == "submit-delay" else int(value)
            store.set_meta(con, FAULTS[kind], v)
            print(f"fault {kind} = {v}")
            return 0
    finally:
        con.close()


if __name__ == "__main__":
    sys.exit(main())
