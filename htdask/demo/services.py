"""Start the controller's services as real processes: Celery worker, beat, Flower.

`Stack` bundles a private redis-server, a fresh local pool and the Celery processes with one
environment; tests, the demo and the benchmarks use it and stop every process by its pid.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from htdask.demo.procs import Process, Started, free_port, wait_for_port
from htdask.demo.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]
POOL_BIN = REPO / "htdask_localpool" / "bin"  # the sources; processes use an installed copy (install_pool)
FAKE_WORKER = Path(__file__).resolve().parent / "fake_dask_worker"  # a stand-in `dask worker` (tests, bench)


def install_pool(dest: Path) -> Path:
    """The pool's condor_* programs installed under `dest` for every user; returns their bin directory.

    The Celery worker runs them as the jobs' owners, who may not enter the checkout (a clone under
    /root is 0700): they run a copy whose launchers name an interpreter every user can run."""
    from htdask_localpool.install import install
    from htdask.domain.pyenv import job_python
    return install(dest, job_python()[0])


def base_env(workdir: Path, redis_url: str, pool_bin: Path | None = None, **extra: str) -> dict:
    """Environment for every process of a stack: Redis, the pool (installed under workdir/code unless
    `pool_bin` is given) first on PATH, the repo importable (for root's processes only)."""
    env = dict(os.environ)
    env.update({
        "REDIS_URL": redis_url,
        "LOCALPOOL_DIR": str(workdir / "pool"),
        "LOG_DIR": str(workdir / "joblogs"),  # the worker jobs' output, error and event logs
        "SPOOL_DIR": str(workdir / "spool"),  # what jobs get by file transfer (start script, TLS files)
        "PYTHONPATH": str(REPO),
        "SCHEDD_NAME": env.get("SCHEDD_NAME", "local"),
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    pool_bin = pool_bin or install_pool(workdir / "code")
    env["PATH"] = f"{pool_bin}{os.pathsep}{env.get('PATH', '')}"
    return env


def celery_worker(env: dict, logdir: Path, *, queue: str | None = None, concurrency: int = 2,
                  name: str = "worker", extra_env: dict | None = None, prefix: list[str] | None = None) -> Process:
    """A Celery worker; `prefix` runs it under another program (tests: `faketime -f -30` for a skewed clock)."""
    env = {**env, **(extra_env or {})}
    queue = queue or env.get("SCHEDD_NAME", "local")
    argv = [*(prefix or []), sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", queue, "-c", str(concurrency),
            "-n", f"{name}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "-E"]
    return Process(argv, env=env, cwd=str(REPO), log_path=logdir / f"{name}.log", name=name)


def celery_beat(env: dict, logdir: Path, name: str = "beat") -> Process:
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "beat", "--loglevel", "INFO",
            "-s", str(logdir / f"{name}-schedule")]
    return Process(argv, env=env, cwd=str(REPO), log_path=logdir / f"{name}.log", name=name)


def flower(env: dict, logdir: Path, port: int, basic_auth: str) -> Process:
    """Flower behind basic auth (`user:password`, passed in the environment, not argv), on loopback only."""
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "flower", f"--port={port}", "--address=127.0.0.1",
            "--persistent=False", "--max_tasks=10000"]
    return Process(argv, env={**env, "FLOWER_BASIC_AUTH": basic_auth}, cwd=str(REPO),
                   log_path=logdir / "flower.log", name="flower")


def exporter(env: dict, logdir: Path, port: int) -> Process:
    """The Prometheus exporter and status page (`python cli.py exporter`) on loopback."""
    argv = [sys.executable, str(REPO / "cli.py"), "exporter", "--address", "127.0.0.1", "--port", str(port)]
    return Process(argv, env=env, cwd=str(REPO), log_path=logdir / "exporter.log", name="exporter")


def wait_for_worker(env: dict, timeout: float = 30.0, logfile: Path | None = None) -> None:
    """Wait until a Celery worker's log says it is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if logfile and logfile.exists() and "ready." in logfile.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"Celery worker not ready after {timeout}s (log {logfile})")


def stop_pool(env: dict) -> None:
    subprocess.run([sys.executable, "-m", "htdask_localpool", "stop"], env=env, cwd=str(REPO),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


class Stack(Started):
    """redis-server + local pool + Celery worker(s) [+ beat] [+ Flower] [+ exporter], one environment."""

    def __init__(self, workdir: Path | None = None, *, beat: bool = False, flower_auth: str | None = None,
                 concurrency: int = 2, redis_password: str | None = None, appendonly: bool = False,
                 exporter: bool = False, redis=None, **env_extra):
        # Jobs run as other Unix users, who must reach the pool's state directory: not under a
        # private (0700) pytest tmp dir.
        self.owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="htdask-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self.logdir = self.workdir / "logs"
        self.logdir.mkdir(exist_ok=True)
        # `redis`: another Redis to start and stop with the stack, e.g. a harness.sentinel.SentinelSet (tests) (its
        # `env` names the master); default a private redis-server.
        self.redis = redis or RedisServer(self.workdir / "redis", appendonly=appendonly, password=redis_password)
        self.with_beat = beat
        self.flower_auth = flower_auth
        self.flower_port: int | None = None
        self.with_exporter = exporter
        self.exporter_port: int | None = None
        self.concurrency = concurrency
        if env_extra.get("DASK_WORKER_COMMAND") == str(FAKE_WORKER):
            # Jobs run as other users, who may not reach the checkout (e.g. under /root): use a copy.
            copy = self.workdir / "fake_dask_worker"
            shutil.copy(FAKE_WORKER, copy)
            os.chmod(copy, 0o755)
            env_extra["DASK_WORKER_COMMAND"] = str(copy)
        self.pool_bin = install_pool(self.workdir / "code")
        self.env_extra = env_extra
        self.env: dict = {}
        self.workers: list[Process] = []
        self.others: list[Process] = []

    def start(self) -> "Stack":
        # shown with a failing test's output
        print(f"stack workdir {self.workdir} (removed when the stack stops; KEEP_STACK=1 keeps its files)")
        self.redis.start()
        self.env = base_env(self.workdir, self.redis.url, self.pool_bin,
                            **{**getattr(self.redis, "env", {}), **self.env_extra})
        self.start_worker()
        if self.with_beat:
            self.others.append(celery_beat(self.env, self.logdir))
        if self.flower_auth:
            self.flower_port = free_port()
            self.others.append(flower(self.env, self.logdir, self.flower_port, self.flower_auth))
            wait_for_port(self.flower_port, timeout=30)
        if self.with_exporter:
            self.exporter_port = free_port()
            self.others.append(exporter(self.env, self.logdir, self.exporter_port))
            wait_for_port(self.exporter_port, timeout=30)
        return self

    @property
    def exporter_url(self) -> str | None:
        return f"http://127.0.0.1:{self.exporter_port}/" if self.exporter_port else None

    def start_worker(self, name: str | None = None, prefix: list[str] | None = None, **extra_env) -> Process:
        name = name or f"worker{len(self.workers) + 1}"
        proc = celery_worker(self.env, self.logdir, concurrency=self.concurrency, name=name, extra_env=extra_env,
                             prefix=prefix)
        self.workers.append(proc)
        wait_for_worker(self.env, logfile=self.logdir / f"{name}.log")
        return proc

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], env=self.env, cwd=str(REPO),
                              capture_output=True, text=True, timeout=timeout)

    def python(self, code: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run a Python snippet with the stack's environment (a client of this stack's Redis)."""
        out = subprocess.run([sys.executable, "-c", code], env=self.env, cwd=str(REPO), capture_output=True,
                             text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"snippet failed ({out.returncode}): {out.stderr[-2000:]}")
        return out

    def condor(self, command: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.pool_bin / command), *args], env=self.env, capture_output=True, text=True,
                              timeout=60)

    def calls(self, command: str | None = None) -> list[list[str]]:
        """The pool's calls.log as [time, command, argv-json] rows, optionally of one command."""
        path = Path(self.env["LOCALPOOL_DIR"]) / "calls.log"
        if not path.exists():
            return []
        rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
        return [r for r in rows if command is None or r[1] == command]

    def stop(self) -> None:
        for proc in self.others + self.workers:
            proc.stop()
        if self.env:
            stop_pool(self.env)
        self.redis.stop()
        if self.owns_workdir and not os.environ.get("KEEP_STACK"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(60)}" for p in self.workers + self.others)


def have_redis() -> bool:
    return shutil.which("redis-server") is not None
