"""A private Redis Sentinel set on loopback: one master, replicas, sentinels, for tests and the soak.

Debian's `redis-server` and `redis-sentinel` binaries run directly on free ports with config files in a
temporary directory, and are stopped by pid; no system service is used or touched.

    with SentinelSet(password="s3cret") as s:
        s.url            # sentinel://:s3cret@127.0.0.1:P1;sentinel://...;sentinel://.../0 (REDIS_URL)
        s.env            # REDIS_URL, REDIS_SENTINEL_MASTER (what a process needs to find the master)
        s.kill_master()  # SIGKILL; the sentinels promote the replica (down-after DOWN_AFTER_MS)
        s.wait_failover(old_port)   # -> seconds until the sentinels name another master
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

from htdask.demo.procs import Process, Started, free_port, installed_program, wait_for_port, work_directory
from htdask.demo.redis_server import RedisServer

MASTER_NAME = "htdaskmaster"
#: how long a silent master counts as up (ms); short, so a test's failover takes seconds
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelSet(Started):
    """`replicas` + 1 redis-servers (the first starts as master) and `sentinels` redis-sentinels with
    quorum 2, all on 127.0.0.1, data and configs under `workdir`."""

    def __init__(self, workdir: str | Path | None = None, *, replicas: int = 1, sentinels: int = 3,
                 password: str | None = None, master_name: str = MASTER_NAME):
        self.exe = installed_program("redis-sentinel")
        self.workdir = work_directory(workdir, "sentinel-")
        self.password = password
        self.master_name = master_name
        master = RedisServer(self.workdir / "redis-0", password=password)
        self.servers = [master] + [RedisServer(self.workdir / f"redis-{i + 1}", password=password,
                                               replica_of=master.port) for i in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinel_procs: list[Process] = []

    # ---- what clients are given ------------------------------------------------------------------
    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return ";".join(f"sentinel://{auth}127.0.0.1:{p}" for p in self.sentinel_ports) + "/0"

    @property
    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url, "REDIS_SENTINEL_MASTER": self.master_name}

    # ---- life cycle --------------------------------------------------------------------------------
    def start(self) -> "SentinelSet":
        for server in self.servers:
            server.start()
        for i, port in enumerate(self.sentinel_ports):
            conf = self.workdir / f"sentinel-{i}.conf"  # sentinels rewrite their config: a file of their own
            lines = [f"port {port}", "bind 127.0.0.1", "daemonize no", f"dir {self.workdir}",
                     f"sentinel monitor {self.master_name} 127.0.0.1 {self.servers[0].port} 2",
                     f"sentinel down-after-milliseconds {self.master_name} {DOWN_AFTER_MS}",
                     f"sentinel failover-timeout {self.master_name} {FAILOVER_TIMEOUT_MS}",
                     f"sentinel parallel-syncs {self.master_name} 1"]
            if self.password:
                lines.append(f"sentinel auth-pass {self.master_name} {self.password}")
            conf.touch(mode=0o600)
            conf.write_text("\n".join(lines) + "\n")
            self.sentinel_procs.append(Process([self.exe, str(conf)], log_path=self.workdir / f"sentinel-{i}.log",
                                               name=f"redis-sentinel-{i}"))
        for port in self.sentinel_ports:
            wait_for_port(port)
        self.wait_ready()
        return self

    def stop(self) -> None:
        for proc in self.sentinel_procs:
            proc.stop()
        self.sentinel_procs = []
        for server in self.servers:
            server.stop()

    # ---- inspection and faults -----------------------------------------------------------------
    def _sentinel(self, port: int):
        import redis
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1,
                           decode_responses=True)

    def master_port(self) -> int | None:
        """The master's port as most sentinels answer it (None when they disagree or do not answer)."""
        import redis
        answers = []
        for port in self.sentinel_ports:
            try:
                addr = self._sentinel(port).sentinel_get_master_addr_by_name(self.master_name)
            except redis.RedisError:
                continue
            if addr:
                answers.append(int(addr[1]))
        for candidate in set(answers):
            if answers.count(candidate) * 2 > len(self.sentinel_ports):
                return candidate
        return None

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every replica is in sync with the master and every sentinel knows the master, its replicas
        and the other sentinels."""
        import redis
        deadline = time.monotonic() + timeout
        want_sentinels, want_replicas = len(self.sentinel_ports) - 1, len(self.servers) - 1
        while time.monotonic() < deadline:
            try:
                ok = True
                for port in self.sentinel_ports:
                    info = self._sentinel(port).sentinel_master(self.master_name)
                    ok &= (int(info.get("num-other-sentinels", 0)) >= want_sentinels
                           and int(info.get("num-slaves", 0)) >= want_replicas)
                for replica in self.servers[1:]:
                    client = redis.Redis(host="127.0.0.1", port=replica.port, password=self.password,
                                         socket_timeout=1, decode_responses=True)
                    ok &= client.info("replication").get("master_link_status") == "up"
                if ok:
                    return
            except redis.RedisError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"sentinels not ready after {timeout}s (logs under {self.workdir})")

    def kill_master(self) -> int:
        """SIGKILL the current master (no shutdown, no last write); returns its port."""
        port = self.master_port()
        if port is None:
            raise RuntimeError("the sentinels do not agree on a master")
        server = self.server(port)
        server.proc.kill(signal.SIGKILL)
        server.proc.popen.wait(10)
        server.proc = None
        return port

    def wait_failover(self, old_port: int, timeout: float = 60.0) -> float:
        """Seconds until a majority of sentinels name a master other than `old_port` that answers as one."""
        import redis
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            port = self.master_port()
            if port is not None and port != old_port:
                try:
                    client = redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=1)
                    if client.info("replication").get("role") == "master":
                        return time.monotonic() - start
                except redis.RedisError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"no failover after {timeout}s (logs under {self.workdir})")
