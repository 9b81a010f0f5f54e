"""Shared pieces of the benchmarks: the stack they run on, the figure line, calls.log counting.

Every benchmark prints its figure as its LAST line:

    NAME: VALUE (goal: GOAL) ok|MISSED

`bench/run_all.py` collects those lines. Schedd calls are always counted from the local pool's
`calls.log` (one line per condor_* invocation, written by the pool's programs), never from our code.
"""
from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from htdask.demo import procs, services  # noqa: E402
from htdask.demo.procs import Process  # noqa: E402
from htdask.demo.services import POOL_BIN, Stack  # noqa: E402

BENCH_USER = "htdask-bench"
SCHEDULER = "tcp://127.0.0.1:8786"  # the fake worker never connects
VENV_BIN = REPO / ".venv" / "bin"


def bench_user() -> str:
    """A non-root Unix user (uid >= 1000) jobs are submitted as.

    As root: `htdask-bench`, created (no home, no login shell) when missing and left in place so that
    consecutive benchmarks share it. Not root: the current user (the controller runs commands as itself).
    """
    if os.geteuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name
    from htdask.demo.users import ensure_user
    ensure_user(BENCH_USER)
    return BENCH_USER


def bench_path() -> str:
    """PATH for the stack: the pool's programs first, then this venv's python3.

    The condor_* launchers are `#!/usr/bin/env python3` scripts; without this, `python3` may be a
    pyenv shim (a shell script, ~75 ms per call) or an interpreter without classad2 (re-exec). Real
    condor_* programs are native, so the benchmarks keep the launcher's own overhead as small as
    the local pool allows, identically for our path and for the baselines.
    """
    parts = [str(POOL_BIN)]
    if (VENV_BIN / "python3").exists():
        parts.append(str(VENV_BIN))
    parts.append(os.environ.get("PATH", "/usr/bin:/bin"))
    return os.pathsep.join(parts)


class BenchStack(Stack):
    """A `Stack` whose Celery workers also load `bench.noop_tasks`, with benchmark defaults.

    Defaults: jobs submitted as `bench_user()`, the fake Dask worker, no beat unless asked,
    LOCALPOOL_SLOTS=0 (jobs stay idle in the queue: the figures are about the controller and the
    schedd, not about starting processes), product defaults for everything else
    (SCHEDD_MIN_INTERVAL=0.1 included).
    """

    def __init__(self, concurrency: int = 2, **env):
        # A password on this stack's Redis: on a shared machine a Celery worker left over from another
        # stack, still retrying a port that our redis-server now has, would otherwise consume our tasks.
        kw = {"redis_password": env.pop("redis_password", secrets.token_hex(12))}
        env.setdefault("DEFAULT_OWNER", bench_user())
        env.setdefault("DASK_WORKER_COMMAND", str(services.FAKE_WORKER))
        env.setdefault("DASK_SCHEDULER_ADDRESS", SCHEDULER)
        env.setdefault("LOCALPOOL_SLOTS", "0")
        env.setdefault("POLL_INTERVAL", "3600")
        env.setdefault("PATH", bench_path())
        env.setdefault("CELERY_LOGLEVEL", "INFO")  # as the harness and the README run it
        super().__init__(concurrency=concurrency, **kw, **env)

    def start_worker(self, name: str | None = None, wait: bool = True, **extra_env) -> Process:
        """Start a Celery worker (`extra_env` over the stack's environment; its queue is SCHEDD_NAME);
        wait=False: return at once, call `wait_worker_ready(stack, proc)` later (start several at once)."""
        name = name or f"worker{len(self.workers) + 1}"
        env = {**self.env, **extra_env}
        queue = env.get("SCHEDD_NAME", "local")
        argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", queue, "-c", str(self.concurrency),
                "-n", f"{name}@%h", "--loglevel", env.get("CELERY_LOGLEVEL", "INFO"), "--without-gossip",
                "--without-mingle", "-E", "--include", "bench.noop_tasks"]
        proc = Process(argv, env=env, cwd=str(REPO), log_path=self.logdir / f"{name}.log", name=name)
        self.workers.append(proc)
        if wait:
            wait_worker_ready(self, proc)
        return proc

    # -- helpers ----------------------------------------------------------------------------------
    def activate(self) -> None:
        """Make this process a client of the stack (tasks.*, state.*, workers.* read os.environ)."""
        for key in ("REDIS_URL", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD",
                    "LOCALPOOL_DIR", "PATH", "SCHEDD_NAME", "DEFAULT_OWNER", "DASK_WORKER_COMMAND",
                    "DASK_SCHEDULER_ADDRESS", "LOCALPOOL_SLOTS", "POLL_INTERVAL", "SCHEDD_MIN_INTERVAL",
                    "MAX_WORKERS_PER_CLUSTER"):
            if key in self.env:
                os.environ[key] = self.env[key]
        from tasks import context
        context.reset()
        from htdask.state import configure_celery
        from tasks.app import app
        configure_celery(app, self.env["REDIS_URL"])

    def count(self, command: str | tuple[str, ...]) -> int:
        commands = (command,) if isinstance(command, str) else command
        return sum(1 for row in self.calls() if row[1] in commands)

    def calls_since(self, mark: float, command: str | tuple[str, ...] | None = None) -> list[list[str]]:
        commands = None if command is None else ((command,) if isinstance(command, str) else command)
        return [r for r in self.calls() if float(r[0]) >= mark and (commands is None or r[1] in commands)]


def wait_worker_ready(stack: Stack, proc: Process, timeout: float = 60.0) -> None:
    """Wait until the worker answers a ping (works whatever its log level)."""
    from celery import Celery
    from htdask.state import configure_celery
    probe = Celery("probe")
    configure_celery(probe, stack.env["REDIS_URL"])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"Celery worker {proc.name} exited:\n{proc.tail(40)}")
            replies = probe.control.ping(timeout=0.5)
            if any(proc.name + "@" in list(r)[0] for r in replies or []):
                return
        raise TimeoutError(f"Celery worker {proc.name} not ready after {timeout}s:\n{proc.tail(40)}")
    finally:
        probe.close()


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    return procs.wait_until(predicate, timeout, interval, what)


def results_and_rounds(store, task_ids: list[str], schedd: str = "local", timeout: float = 600.0) -> list[dict]:
    """Every task's result, once the batched rounds reconciling their clusters have ended too (a scale
    task whose cluster is left to a round returns {"state": "queued"} before that round runs)."""
    from tasks.app import app
    results = [app.AsyncResult(t).get(timeout=timeout) for t in task_ids]
    wait_until(lambda: store.batches_done(schedd), timeout=timeout, interval=0.005, what="batched rounds done")
    return results


def against_faster_baseline(times: dict[str, list[float]]) -> tuple[dict[str, float], str, float, float]:
    """Medians of the "ours", "sequential" and "concurrent" rounds, and ours against the faster baseline:
    (medians, that baseline's name, our median, its median)."""
    import statistics
    med = {k: statistics.median(v) for k, v in times.items()}
    base = min(("sequential", "concurrent"), key=lambda k: med[k])
    return med, base, med["ours"], med[base]


def figure(name: str, value: str, goal: str, ok: bool) -> str:
    """Print the figure line (the benchmark's last line) and return it."""
    line = f"{name}: {value} (goal: {goal}) {'ok' if ok else 'MISSED'}"
    print(line, flush=True)
    return line


def say(*args) -> None:
    print(*args, flush=True)


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), {mem} RAM, Python {sys.version.split()[0]}"


# -- bare HTCondor baselines (what a site's script would run by hand) ---------------------------------------
def bare_description(cluster: str, owner: str, items: list[tuple[int, str]]) -> str:
    """The submit description our reconcile writes for `items` [(index, name)] of `cluster`, rendered:
    the same `htdask.domain.jobspec.worker_submit_description` with the same site defaults and log directory
    (tasks/reconcile.py), so a bare `condor_submit` of it does exactly the HTCondor-side work ours does."""
    from tasks import worker_logs
    from tasks.config import settings
    from tasks.options import job_options
    from htdask.domain.jobspec import WorkerJobSpec, worker_submit_description
    options = job_options({})
    options["log_dir"] = worker_logs.cluster_dir(settings().log_dir, cluster)
    worker_logs.ensure_dir(options["log_dir"], owner)
    return worker_submit_description(WorkerJobSpec(cluster=cluster, owner=owner, **options), items).render()


def bare_submit(stack: Stack, text: str, owner: str, pool_dir: str | None = None) -> list[str]:
    """`condor_submit -terse FILE` of `text` as `owner` (when root) through the stack's pool (or the pool at
    `pool_dir`); returns the job ids. The file is written before, the clock is the caller's."""
    import subprocess
    import tempfile
    tmpdir = stack.workdir / "bare-submit"
    tmpdir.mkdir(exist_ok=True)
    os.chmod(tmpdir, 0o755)
    fd, path = tempfile.mkstemp(suffix=".sub", dir=tmpdir)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    env = dict(stack.env)
    if pool_dir:
        env["LOCALPOOL_DIR"] = pool_dir
    kw = {}
    if os.geteuid() == 0:
        user = pwd.getpwnam(owner)
        kw = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "cwd": str(tmpdir)}
    try:
        out = subprocess.run([str(stack.pool_bin / "condor_submit"), "-terse", path], env=env,
                             capture_output=True, text=True, timeout=600, **kw)
    finally:
        os.unlink(path)
    if out.returncode != 0:
        raise RuntimeError(f"bare condor_submit exited {out.returncode}: {out.stderr[-2000:]}")
    from workers.htcondor.queue_parser import parse_terse_submit
    return parse_terse_submit(out.stdout)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list: p99 of 30 samples is the largest."""
    import math
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def calls_in(pool_dir: str | Path, since: float = 0.0, command: str | None = None) -> list[list[str]]:
    """calls.log rows [time, command, argv-json] of the pool at `pool_dir` since `since`."""
    path = Path(pool_dir) / "calls.log"
    if not path.exists():
        return []
    rows = [ln.split("\t") for ln in path.read_text().splitlines() if ln.strip()]
    return [r for r in rows if float(r[0]) >= since and (command is None or r[1] == command)]


# ---- the poll benchmarks (poll_100k, poll_1m) ---------------------------------------------------------

def bare_query(stack: BenchStack) -> float:
    """Seconds of a bare `condor_q -json` of our jobs with the poll's projection, output discarded."""
    from htdask.domain.jobspec import POLL_PROJECTION, ours_constraint
    argv = ["condor_q", "-json", "-allusers", "-constraint", ours_constraint(),
            "-attributes", ",".join(POLL_PROJECTION)]
    t0 = time.perf_counter()
    subprocess.run(argv, env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def poll_changer(stack: BenchStack, names: list[str]):
    """Each call holds 50 jobs in each of 10 clusters and releases the 10 held by the previous call."""
    step = [0]

    def constraint(i: int) -> str:
        picks = [names[(i * 10 + k) % len(names)] for k in range(10)]
        return "(" + " || ".join(f'DaskGatewayCluster == "{n}"' for n in picks) + ") && ProcId < 50"

    def change() -> None:
        i = step[0]
        step[0] += 1
        for cmd, c in [("condor_hold", constraint(i))] + ([("condor_release", constraint(i - 1))] if i else []):
            out = stack.condor(cmd, "-constraint", c)
            if out.returncode != 0:
                raise RuntimeError(f"{cmd}: {out.stderr}")
    return change


def steady_polls(stack: BenchStack, store, names: list[str], jobs: int,
                 repeat: int) -> tuple[list[tuple[float, float, float]], Callable[[], None]]:
    """`repeat` steady polls of this process's Poller, each after a change (`poll_changer`) and right after a
    bare condor_q: [(ours / bare, ours s, bare s)], and the change function (for one more steady poll).
    RuntimeError if a poll fails or does not see `jobs` jobs of ours."""
    from tasks import context
    from tasks.config import settings
    from tasks.poll import Poller
    os.environ["PATH"] = stack.env["PATH"]
    poller = Poller(store, context.schedd(), "local", settings())
    change = poll_changer(stack, names)
    change()
    poller.poll(force=True)  # this process's own first poll (imports, caches)
    pairs = []
    for _ in range(repeat):
        change()
        b = bare_query(stack)
        t = time.perf_counter()
        result = poller.poll(force=True)
        o = time.perf_counter() - t
        if result.state != "ok" or result.jobs != jobs:
            raise RuntimeError(f"poll: {result}")
        pairs.append((o / b, o, b))
    return pairs, change
