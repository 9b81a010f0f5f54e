"""condor_submit: parse a submit description, queue its jobs in one transaction.

Output, error texts and exit codes follow HTCondor's condor_submit (submit.cpp); the
ClusterId is allocated inside the same BEGIN IMMEDIATE transaction that inserts the
jobs, so concurrent submits never share or lose ids.
"""
from __future__ import annotations

import logging
import math
import os
import re
import sys
import time

from localpool import ads, calls_log, daemon, envargs, paths, store, submitfile
from localpool.commands import common
from localpool.submitfile import SubmitError

log = logging.getLogger(__name__)

UNIVERSES = {"vanilla": 5, "docker": 5, "container": 5, "local": 12, "scheduler": 7}
DEFAULT_REQUIREMENTS = ('(TARGET.Arch == "X86_64") && (TARGET.OpSys == "LINUX") && '
                        '(TARGET.Disk >= RequestDisk) && (TARGET.Memory >= RequestMemory) && '
                        '(TARGET.HasFileTransfer)')
DEFAULT_REQUEST_MEMORY = "ifthenelse(MemoryUsage isnt undefined,MemoryUsage,(ImageSize + 1023) / 1024)"
DEFAULT_REQUEST_DISK = "DiskUsage"

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.I)
_UNITS = {"": None, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


class Usage(Exception):
    """Command-line problem: message printed as is on stderr, exit 1."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    calls_log.record("condor_submit", argv)
    try:
        return common.guarded(_submit, argv)
    except Usage as exc:
        sys.stderr.write(str(exc))
        return 1
    except SubmitError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"\nERROR: {exc}\n")
        return 1


class Options:
    def __init__(self):
        self.file: str | None = None
        self.terse = False
        self.verbose = False
        self.batch_name: str | None = None
        self.appended: list[str] = []
        self.preset: list[tuple[str, str]] = []


def _parse_args(argv: list[str]) -> Options:
    o = Options()
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-":
            o.file = "-"
        elif a.startswith("-") and len(a) > 1:
            if common.dash_prefix(a, "terse", 3):
                o.terse = True
            elif common.dash_prefix(a, "verbose", 1):
                o.verbose = True
            elif common.dash_prefix(a, "batch-name", 3):
                i += 1
                if i >= len(argv):
                    raise Usage("condor_submit: -batch-name requires another argument\n")
                o.batch_name = argv[i]
            elif common.dash_prefix(a, "append", 1):
                i += 1
                if i >= len(argv):
                    raise Usage("condor_submit: -append requires another argument\n")
                o.appended.append(argv[i])
            elif common.dash_prefix(a, "queue", 1):
                i += 1
                if i >= len(argv):
                    raise Usage("condor_submit: -queue requires another argument\n")
                o.appended.append("queue " + argv[i])
            elif common.dash_prefix(a, "disable", 1) or common.dash_prefix(a, "spool", 2):
                pass  # accepted, no meaning for a local pool
            elif common.dash_prefix(a, "name", 1) or common.dash_prefix(a, "remote", 1) \
                    or common.dash_prefix(a, "pool", 1):
                i += 1  # schedd selection: there is only one
            else:
                raise Usage(f"condor_submit: unknown option {a}\n")
        elif "=" in a:
            key, _, value = a.partition("=")
            o.preset.append((key.strip(), value.strip()))
        elif o.file is None:
            o.file = a
        else:
            raise Usage(f"condor_submit: unexpected argument {a}\n")
        i += 1
    if o.batch_name is not None:
        v = o.batch_name if o.batch_name.startswith('"') else f'"{o.batch_name}"'
        o.appended.append(f"MY.JobBatchName = {v}")
    return o


def _submit(argv: list[str]) -> int:
    o = _parse_args(argv)
    from_stdin = o.file in (None, "-")
    if o.file is None and (o.preset and any(l.lower().startswith("queue") for l in o.appended)):
        text, label = "", "(command line)"
        from_stdin = False
    elif from_stdin:
        text, label = sys.stdin.read(), "(stdin)"
    else:
        try:
            with open(o.file, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as exc:
            raise SubmitError(f"Failed to open command file ({o.file}) ({exc.strerror})")
        label = o.file
    verbose = (o.verbose or from_stdin) and not o.terse
    show_progress = not o.terse and not verbose
    if show_progress:
        sys.stdout.write("Submitting job(s)")
        sys.stdout.flush()

    cwd = os.getcwd()
    desc = submitfile.parse(text, base_dir=cwd, appended=o.appended, preset=o.preset,
                            expand_queue_line=_expand_queue_line)
    queues = desc.queues
    if not queues:
        raise SubmitError(f'"{label}" doesn\'t contain any "queue" commands -- no jobs queued')
    total = sum(q.count * (len(q.items) if q.items is not None else 1) for q in queues)
    if total == 0:
        if show_progress:
            sys.stdout.write("\n")
        sys.stdout.flush()
        sys.stderr.write(f'\nWARNING: "{label}" has only empty "queue" commands -- no jobs queued\n')
        return 0

    files = common.pool_files()
    con = store.connect(files)
    if store.take_fault(con, "fault_submit_fail"):
        raise SubmitError("Failed to connect to local queue manager\n"
                          f"CEDAR:6001:Failed to connect to {common.SCHEDD_ADDR.split('?')[0]}>")
    delay = float(store.get_meta(con, "fault_submit_delay", 0) or 0)
    if delay > 0:
        time.sleep(delay)  # a process killed here has queued nothing

    owner = paths.current_user()
    builder = AdBuilder(owner=owner, cwd=cwd, submit_file=label)
    with store.transaction(con):
        cluster = store.allocate_cluster(con)
        job_ads = builder.build_all(desc, cluster)
        keep = int(store.get_meta(con, "fault_submit_partial", 0) or 0)
        if keep > 0:  # the schedd accepted only the first `keep` jobs (one-shot knob)
            store.set_meta(con, "fault_submit_partial", 0)
            job_ads = job_ads[:keep]
        store.insert_jobs(con, job_ads)
    con.close()
    daemon.ensure_runner(files)
    daemon.wake(files)

    out = []
    if o.terse:
        out.append(f"{cluster}.{job_ads[0]['ProcId']} - {cluster}.{job_ads[-1]['ProcId']}\n")
    elif verbose:
        for ad in job_ads:
            out.append(f"\n** Proc {cluster}.{ad['ProcId']}:\n")
            out.append(ads.format_old(ad))
        out.append(f"\n{len(job_ads)} job(s) submitted to cluster {cluster}.\n")
    else:
        out.append("." * len(job_ads) + "\n")
        out.append(f"{len(job_ads)} job(s) submitted to cluster {cluster}.\n")
    sys.stdout.write("".join(out))
    sys.stdout.flush()
    sys.stderr.write(f"To monitor your job(s), run: condor_watch_q -clusters {cluster}\n")
    return 0


def _expand_queue_line(text: str, variables: dict) -> str:
    return submitfile.expand(text, lambda n: variables.get(n.lower()))


# ---------------------------------------------------------------- job ads

class AdBuilder:
    """Turns submit commands (+ macros for one proc) into an HTCondor job ad."""

    def __init__(self, owner: str, cwd: str, submit_file: str):
        self.owner = owner
        self.cwd = cwd
        self.submit_file = submit_file
        self.qdate = int(time.time())
        self.host = common.schedd_name()
        self.env_snapshot = dict(os.environ)

    def build_all(self, desc: submitfile.Description, cluster: int) -> list[dict]:
        out = []
        variables: dict[str, tuple[str, str]] = {}
        proc = 0
        for step in desc.steps:
            if step[0] == "set":
                variables[step[1].lower()] = (step[1], step[2])
                continue
            q = step[1]
            items = q.items if q.items is not None else [None]
            for row, item in enumerate(items):
                for st in range(q.count):
                    out.append(self.build(dict(variables), item, cluster, proc, st, row))
                    proc += 1
        return out

    def build(self, variables: dict, item: dict | None, cluster: int, proc: int, step: int, row: int) -> dict:
        item_low = {k.lower(): v for k, v in (item or {}).items()}
        special = {"cluster": str(cluster), "clusterid": str(cluster), "joblistid": str(cluster),
                   "process": str(proc), "procid": str(proc), "jobid": f"{cluster}.{proc}",
                   "step": str(step), "itemindex": str(row), "row": str(row),
                   "node": "#pArAlLeLnOdE#", "submit_file": self.submit_file,
                   "submit_time": str(self.qdate), "arch": "X86_64", "opsys": "LINUX",
                   "uid_domain": self.host, "filesystem_domain": self.host, "hostname": self.host,
                   "full_hostname": self.host}

        def lookup(name: str):
            low = name.lower()
            if low in special and low not in ("submit_file", "arch", "opsys", "uid_domain",
                                              "filesystem_domain", "hostname", "full_hostname"):
                return special[low]
            if low in item_low:
                return item_low[low]
            if low in variables:
                return variables[low][1]
            if low.startswith("my.") and "my." + low[3:] in variables:
                return variables["my." + low[3:]][1]
            return special.get(low)

        def get(*names: str) -> str | None:
            for n in names:
                low = n.lower()
                if low in variables:
                    return submitfile.expand(variables[low][1], lookup).strip()
            return None

        ad: dict = {}
        ad["MyType"] = "Job"
        ad["TargetType"] = "Machine"
        ad["ClusterId"] = cluster
        ad["ProcId"] = proc
        ad["Owner"] = self.owner
        ad["User"] = f"{self.owner}@{self.host}"
        hold = _truthy(get("hold") or "false")
        ad["JobStatus"] = 5 if hold else 1
        ad["QDate"] = self.qdate
        ad["EnteredCurrentStatus"] = self.qdate
        ad["GlobalJobId"] = f"{self.host}#{cluster}.{proc}#{self.qdate}"

        universe = (get("universe") or "vanilla").lower()
        if universe not in UNIVERSES:
            raise SubmitError(f"I don't know about the '{universe}' universe.")
        ad["JobUniverse"] = UNIVERSES[universe]
        if universe == "docker":
            image = get("docker_image")
            if not image:
                raise SubmitError("docker jobs require a docker_image")
            if any(c.isspace() for c in image):
                raise SubmitError(f"'{image}' is not a valid docker_image")
            ad["WantDocker"] = True
            ad["DockerImage"] = image
        elif universe == "container":
            image = get("container_image") or get("docker_image")
            if not image:
                raise SubmitError("container jobs require a container_image or docker_image")
            ad["WantContainer"] = True
            ad["ContainerImage"] = image

        iwd = get("initialdir", "initial_dir", "iwd")
        iwd = os.path.normpath(os.path.join(self.cwd, iwd)) if iwd else self.cwd
        if not os.path.isdir(iwd):
            raise SubmitError(f"No such directory: {iwd}")
        ad["Iwd"] = iwd

        exe = get("executable")
        if not exe:
            if universe != "docker":
                raise SubmitError("No 'executable' parameter was provided")
            exe = ""
        ad["Cmd"] = exe if (not exe or os.path.isabs(exe)) else os.path.normpath(os.path.join(iwd, exe))

        args = get("arguments", "args")
        if args:
            try:
                attr, value, _argv = envargs.parse_arguments(args)
            except envargs.SyntaxProblem as exc:
                raise SubmitError(str(exc))
            ad[attr] = value

        env: dict[str, str] = {}
        getenv = get("getenv")
        if getenv:
            env.update(_getenv(getenv, self.env_snapshot))
        env_text = get("environment", "env")
        if env_text:
            try:
                env.update(envargs.parse_environment(env_text))
            except envargs.SyntaxProblem as exc:
                raise SubmitError(str(exc))
        if env or env_text is not None:
            ad["Environment"] = envargs.environment_to_ad(env)

        ad["In"] = get("input") or "/dev/null"
        ad["Out"] = get("output") or "/dev/null"
        ad["Err"] = get("error") or "/dev/null"
        user_log = get("log")
        if user_log:
            ad["UserLog"] = user_log if os.path.isabs(user_log) else os.path.normpath(os.path.join(iwd, user_log))

        ad["RequestCpus"] = _int_or_expr(get("request_cpus") or "1", "request_cpus")
        mem = get("request_memory")
        ad["RequestMemory"] = _size(mem, "M", "request_memory") if mem else ads.Expr(DEFAULT_REQUEST_MEMORY)
        disk = get("request_disk")
        ad["RequestDisk"] = _size(disk, "K", "request_disk") if disk else ads.Expr(DEFAULT_REQUEST_DISK)
        req = get("requirements")
        ad["Requirements"] = _value_or_error(req, "requirements") if req else ads.Expr(DEFAULT_REQUIREMENTS)
        batch = get("batch_name")
        if batch:
            ad["JobBatchName"] = batch.strip('"')
        prio = get("priority", "prio")
        ad["JobPrio"] = _int_or_expr(prio, "priority") if prio else 0

        ad["NumJobStarts"] = 0
        ad["NumRestarts"] = 0
        ad["NumSystemHolds"] = 0
        ad["JobRunCount"] = 0
        ad["CompletionDate"] = 0
        ad["ExitBySignal"] = False
        ad["ExitStatus"] = 0
        ad["RemoteWallClockTime"] = 0.0
        ad["CumulativeSlotTime"] = 0
        ad["ImageSize"] = 0
        ad["LeaveJobInQueue"] = False
        ad["OnExitRemove"] = True
        ad["OnExitHold"] = False
        ad["PeriodicHold"] = False
        ad["PeriodicRelease"] = False
        ad["PeriodicRemove"] = False
        ad["Rank"] = 0.0
        ad["RootDir"] = "/"
        ad["JobNotification"] = 0
        ad["SubmitterGlobalJobId"] = ad["GlobalJobId"]
        if hold:
            ad["HoldReason"] = "submitted on hold at user's request"
            ad["HoldReasonCode"] = 15
            ad["HoldReasonSubCode"] = 0

        for low, (key, raw) in variables.items():
            if not low.startswith("my."):
                continue
            name = key[3:]
            text = submitfile.expand(raw, lookup).strip()
            ad[_canonical(ad, name)] = _value_or_error(text, key)
        return ad


def _canonical(ad: dict, name: str) -> str:
    """An attribute set twice with different case keeps one entry (ClassAds are case-insensitive)."""
    low = name.lower()
    for k in ad:
        if k.lower() == low:
            del ad[k]
            break
    return name


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "t", "y")


def _value_or_error(text: str, key: str):
    try:
        return ads.parse_value(text)
    except ValueError:
        raise SubmitError(f"Parse error in expression: \n\t{key} = {text}\n\t")


def _int_or_expr(text: str, key: str):
    t = text.strip()
    if re.fullmatch(r"[+-]?\d+", t):
        return int(t)
    return _value_or_error(t, key)


def _size(text: str, default_unit: str, key: str):
    """request_memory (MiB) / request_disk (KiB) with K/M/G/T suffixes, as an int."""
    m = _SIZE.match(text)
    if not m:
        return _value_or_error(text, key)
    number = float(m.group(1))
    unit = (m.group(2) or default_unit).upper()
    scale = 1024.0 ** (_UNITS[unit] - _UNITS[default_unit])
    return int(math.ceil(number * scale))


def _getenv(spec: str, environ: dict) -> dict[str, str]:
    """getenv = true | false | list of names/globs (HTCondor 10+)."""
    import fnmatch

    environ = {k: v for k, v in environ.items() if not k.startswith("_LOCALPOOL")}
    s = spec.strip()
    if s.lower() in ("true", "yes", "1", "t"):
        return dict(environ)
    if s.lower() in ("false", "no", "0", "f"):
        return {}
    out = {}
    for pat in re.split(r"[,\s]+", s):
        if not pat or pat.startswith("!"):
            continue
        for k, v in environ.items():
            if fnmatch.fnmatchcase(k, pat):
                out[k] = v
    return out
