"""README "Using it › Quick start" runs as written: its shell blocks, in order, in one bash, at the top of
the checkout (the last block, which stops everything, runs even when one before it fails).

Only the ports and HTDASK_HOME come from the test (free ports, a fresh world-readable directory), through
the variables the README itself reads with defaults. Uses the checkout's .venv (`make test` made it).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from htdask.demo.procs import free_port
from htdask.demo.services import REPO, have_redis


def quick_start_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("### Quick start", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_quick_start_blocks_exist():
    blocks = quick_start_blocks()
    assert len(blocks) >= 5 and "kill" in blocks[-1], "the last block stops everything"
    assert any("redis-server" in b and "requirepass" in b for b in blocks), "Redis with a password"
    assert any(". .venv/bin/activate" in b for b in blocks), "the venv"
    assert any("localpool install" in b and "PATH" in b for b in blocks), "the pool's programs on PATH"


@pytest.mark.stack
@pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")
def test_quick_start_runs_as_written():
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("needs the checkout's .venv (make test creates it)")
    *steps, stop = quick_start_blocks()
    home = Path(tempfile.mkdtemp(prefix="htdask-readme-"))
    os.chmod(home, 0o755)
    script = "set -euo pipefail\ntrap 'set +e\n" + stop.replace("'", "'\\''") + "' EXIT\n" + "\n".join(steps)
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "LOCALPOOL_DIR", "DEFAULT_OWNER", "VIRTUAL_ENV", "PYTHONPATH",
                        "DASK_SCHEDULER_ADDRESS", "SCHEDD_NAME", "SCHEDDS", "CONDOR_BIN_DIR")}
    env.update(HTDASK_HOME=str(home), REDIS_PORT=str(free_port()), FLOWER_PORT=str(free_port()),
               DASK_PORT=str(free_port()))
    try:
        res = subprocess.run(["bash", "-c", script], cwd=str(REPO), env=env, capture_output=True, text=True,
                             timeout=600)
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in home.glob("*.log"))
        assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}\n{logs}"
        out = res.stdout
        assert "cluster mycluster: scale to 2 enqueued" in out and "cluster mycluster: deleted" in out, out
        assert re.search(r"^CLUSTER\s+OWNER\s+SCHEDD", out, flags=re.M), out
        assert "Flower: http://127.0.0.1:" in out
        # the stop block stopped every process the blocks started
        pids = [int(p.read_text()) for p in home.glob("*.pid") if p.read_text().strip().isdigit()]
        assert len(pids) >= 4, pids  # worker, beat, Flower, scheduler (redis-server removes its pid file)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        assert not [p for p in pids if _alive(p)], "a process of the quick start outlived its stop block"
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(env["REDIS_PORT"]))) != 0, "redis-server was stopped"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
