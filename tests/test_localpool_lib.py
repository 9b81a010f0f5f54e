"""Helpers for the localpool tests (no tests here): run the condor_* programs, wait, parse."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(env: dict, *argv: str, cwd=None, input: str | None = None, user=None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a program (argv list, no shell) with the pool's environment; text output captured."""
    kw = {}
    if user is not None:
        kw = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    return subprocess.run(list(argv), env=env, cwd=cwd, input=input, capture_output=True, text=True,
                          timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL, **kw)


def pool(env: dict, *args: str, check: bool = True, user=None) -> subprocess.CompletedProcess:
    """python -m htdask_localpool ..."""
    res = run(env, sys.executable, "-m", "htdask_localpool", *args, cwd=REPO, user=user)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def submit(env: dict, workdir: Path, text: str, *args: str, name: str = "job.sub", user=None) -> list[str]:
    """condor_submit -terse a submit file written into workdir; returns the job ids."""
    path = Path(workdir) / name
    path.write_text(text)
    res = run(env, "condor_submit", "-terse", *args, str(path), cwd=workdir, user=user)
    assert res.returncode == 0, res.stderr
    first, _, last = res.stdout.strip().partition(" - ")
    cluster, p0 = first.split(".")
    p1 = last.split(".")[1]
    return [f"{cluster}.{p}" for p in range(int(p0), int(p1) + 1)]


def q(env: dict, *args: str, user=None) -> list[dict]:
    """condor_q -json -allusers ... parsed (empty output = no ads)."""
    res = run(env, "condor_q", "-json", "-allusers", *args, user=user)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout) if res.stdout else []


def history(env: dict, *args: str) -> list[dict]:
    res = run(env, "condor_history", "-json", *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def read_pids(paths) -> list[int]:
    return [int(Path(p).read_text().strip()) for p in paths]


def job_status(env: dict, job_id: str) -> int | None:
    c, p = job_id.split(".")
    ads = q(env, "-constraint", f"ClusterId == {c} && ProcId == {p}", "-attributes", "JobStatus")
    return ads[0]["JobStatus"] if ads else None


def status_map(env: dict) -> dict[str, int]:
    return {f"{a['ClusterId']}.{a['ProcId']}": a["JobStatus"]
            for a in q(env, "-attributes", "ClusterId,ProcId,JobStatus")}


def env_with(env: dict, **extra) -> dict:
    out = dict(env)
    out.update({k: str(v) for k, v in extra.items()})
    return out


def calls(env: dict) -> list[str]:
    p = Path(env["LOCALPOOL_DIR"]) / "calls.log"
    return p.read_text().splitlines() if p.exists() else []


def me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def dry_run(env: dict, workdir: Path, text: str, *args: str, name: str = "job.sub") -> list[dict]:
    """`condor_submit -dry-run - FILE`: the job ads it prints, one dict per job (attributes of the
    cluster ad included in each), values as classad2 reads them (expressions as classad2.ExprTree)."""
    import classad2

    path = Path(workdir) / name
    path.write_text(text)
    res = run(env, "condor_submit", "-terse", "-dry-run", "-", *args, str(path), cwd=workdir)
    assert res.returncode == 0, res.stderr
    jobs, cluster_lines, current = [], [], None
    for line in res.stdout.splitlines():
        if not line or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if key == "ProcId":
            current = []
            jobs.append(current)
        (cluster_lines if current is None else current).append(f"{key} = {value}")
    out = []
    for lines in jobs:
        ad = classad2.parseOne("\n".join(cluster_lines + lines) + "\n", classad2.ParserType.Old)
        out.append(dict(ad.items()))
    return out
