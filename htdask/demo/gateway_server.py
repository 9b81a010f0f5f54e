"""Start and stop a `dask-gateway-server` process (our config or any other), for tests, demo and bench.

    server = GatewayServer(stack.env, workdir, overrides={"HTCondorBackend.cluster_heartbeat_period": 2})
    server.start()            # waits until the proxy answers
    gateway = server.client("alice")
    ...
    server.stop()             # SIGTERM, then SIGKILL of its process group; by pid only

The config file written is `load_subconfig(<config>)` followed by one line per override, so tests set
short periods without touching `htdask/gateway/config.py`.

Every process of this server (the gateway, its schedulers, its clusters' worker and scheduler jobs)
carries `HTDASK_RUN_MARK=<random>` in its environment: `server.processes()` finds exactly those, so a
"nothing is left" check never counts another test's or user's Dask processes.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
import urllib.request
from pathlib import Path

from htdask.demo.procs import Process, free_port, wait_for_port

CONFIG = Path(__file__).resolve().parents[2] / "htdask" / "gateway" / "config.py"  # the shipped gateway config


def gateway_program() -> str:
    exe = Path(sys.executable).parent / "dask-gateway-server"
    return str(exe) if exe.exists() else "dask-gateway-server"


class GatewayServer:
    """One dask-gateway-server process with its own proxy port; stopped by pid."""

    def __init__(self, env: dict, workdir: Path, *, config: Path | str | None = CONFIG,
                 overrides: dict | None = None, code: str = "", password: str = "test-password",
                 port: int | None = None, name: str = "gateway"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        self.name = name
        self.config = config
        self.overrides = dict(overrides or {})
        self.code = code  # extra config code, after the overrides
        self.mark = secrets.token_hex(8)
        self.env = {**env, "GATEWAY_ADDRESS": f"127.0.0.1:{self.port}", "GATEWAY_PASSWORD": password,
                    MARK_VAR: self.mark}
        self.proc: Process | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def write_config(self) -> Path:
        lines = ["c = get_config()  # noqa: F821"]
        if self.config:
            lines.append(f"load_subconfig({str(self.config)!r})  # noqa: F821")
        for key, value in self.overrides.items():
            section, attr = key.split(".", 1)
            lines.append(f"c.{section}.{attr} = {value!r}")
        if self.config:  # schedulers and jobs carry the mark (the cluster environment reaches both)
            lines.append(f"c.HTCondorClusterConfig.environment = {{**c.HTCondorClusterConfig.environment, "
                         f"{MARK_VAR!r}: {self.mark!r}}}")
        if self.code:
            lines.append(self.code)
        path = self.workdir / f"{self.name}_config.py"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 60.0) -> "GatewayServer":
        path = self.write_config()
        self.starts += 1
        with open(self.log_path, "a") as f:
            f.write(f"\n===== start {self.starts} =====\n")
        self.proc = Process([gateway_program(), "-f", str(path)], env=self.env, cwd=str(self.workdir),
                            log_path=self.log_path, name=self.name)
        deadline = time.monotonic() + timeout
        wait_for_port(self.port, timeout=timeout)
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError(f"dask-gateway-server exited:\n{self.proc.tail(60)}")
            try:
                with urllib.request.urlopen(f"{self.address}/api/health", timeout=2) as resp:
                    if json.load(resp).get("status") == "pass":
                        return self
            except Exception:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"dask-gateway-server not healthy after {timeout}s:\n{self.proc.tail(60)}")

    def stop(self, timeout: float = 90.0) -> None:
        """SIGTERM (the gateway stops its clusters unless told to keep them), then SIGKILL."""
        if self.proc is not None:
            self.proc.stop(timeout=timeout)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is cleaned up by the gateway."""
        if self.proc is not None:
            self.proc.kill(signal.SIGKILL)
            self.proc.popen.wait(10)
            self.proc = None

    def processes(self) -> list[str]:
        """`pid args` of the live processes this server started (gateway, schedulers, jobs), by their mark."""
        return marked_processes(self.mark)

    def client(self, user: str = "alice", **kwargs):
        from dask_gateway import BasicAuth, Gateway
        return Gateway(self.address, auth=BasicAuth(user, self.password), **kwargs)

    def tail(self, n: int = 80) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


MARK_VAR = "HTDASK_RUN_MARK"


def marked_processes(mark: str) -> list[str]:
    """`pid args` of live processes (not zombies) whose environment holds MARK_VAR=mark (needs root
    for other users' processes, as the tests that run jobs as other users are)."""
    needle = f"{MARK_VAR}={mark}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found.append(f"{entry.name} {args}")
    return found


def close_client(gw) -> None:
    """Close a dask_gateway.Gateway for good (upstream's __del__ would close it again and raise)."""
    gw.close()
    gw.__dict__.pop("_loop_runner", None)  # __del__ only closes a Gateway that still has a loop runner
