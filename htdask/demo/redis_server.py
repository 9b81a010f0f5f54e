"""A private redis-server on a free loopback port, for tests, the demo and benchmarks."""
from __future__ import annotations

import shutil
from pathlib import Path

from htdask.demo.procs import Process, free_port, installed_program, wait_for_port, work_directory


class RedisServer:
    """Debian's redis-server on 127.0.0.1:<free port>, data under `workdir`.

    `appendonly` turns AOF on (reliability tests restart Redis and expect data back);
    `password` sets requirepass so the password-in-URL path is exercised (and masterauth, so that
    servers of a Sentinel set, `harness.sentinel`, replicate whichever of them is the master);
    `replica_of` makes it a replica of the server on that loopback port; `extra` are more redis-server
    options (e.g. `["--maxmemory", "10mb", "--maxmemory-policy", "volatile-lru"]`).
    """

    def __init__(self, workdir: str | Path | None = None, *, port: int | None = None,
                 appendonly: bool = False, password: str | None = None, replica_of: int | None = None,
                 extra: list[str] | None = None):
        self.exe = installed_program("redis-server")
        self.workdir = work_directory(workdir, "redis-")
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.replica_of = replica_of  # port of the master on 127.0.0.1 this server replicates
        self.extra = list(extra or [])
        self.proc: Process | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        argv = [self.exe]
        if self.password:
            # The password goes into a private config file, not onto the command line (ps shows argv).
            conf = self.workdir / "redis.conf"
            conf.touch(mode=0o600)
            conf.write_text(f"requirepass {self.password}\nmasterauth {self.password}\n")
            argv.append(str(conf))
        argv += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--daemonize", "no", "--protected-mode", "yes",
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always"]
        if self.replica_of:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return argv + self.extra

    def start(self) -> "RedisServer":
        self.proc = Process(self.argv(), log_path=self.workdir / "redis.log", name="redis-server")
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None

    def restart(self, wipe: bool = False) -> None:
        """Stop and start again on the same port; `wipe` deletes its data first (total loss)."""
        self.stop()
        if wipe:
            for p in self.workdir.iterdir():
                if p.name not in ("redis.log", "redis.conf"):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
