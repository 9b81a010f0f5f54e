"""Every benchmark runs end to end with tiny sizes and ends with its figure line.

Not a measurement (tiny sizes miss some goals on purpose): it only keeps the scripts working.
`make bench` runs them at full size.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from htdask.demo.services import REPO, have_redis


FIGURE = re.compile(r"^(?P<name>[\w.-]+): .* \(goal: .*\) (ok|MISSED)$")

TINY = {
    "submit_calls": ["--workers", "3", "--rounds", "1"],
    "poll_calls": ["--clusters", "3", "--per-cluster", "1", "--ticks", "1", "--repeat", "1"],
    "burst": ["--requests", "10", "--max", "3", "--last", "2", "--rounds", "1"],
    "poll_100k": ["--jobs", "1000", "--per-cluster", "100", "--repeat", "1"],
    "task_throughput": ["--tasks", "20"],
    "lone_request_latency": ["--requests", "3", "--burst", "10"],
    "scale_10k": ["--workers", "20", "--rounds", "1"],
    "schedds_4": ["--clusters", "4", "--workers", "2", "--schedds", "2"],
    "poll_1m": ["--jobs", "3000", "--ours", "1000", "--per-cluster", "100", "--repeat", "1"],
}


@pytest.mark.stack
@pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")
@pytest.mark.parametrize("name", sorted(TINY))
def test_bench_script_prints_its_figure(name):
    out = subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), *TINY[name]], cwd=str(REPO),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    m = FIGURE.match(last)
    assert m and m["name"] == name, out.stdout[-2000:]


def test_run_all_summarizes_and_counts_goals(tmp_path, monkeypatch, capsys):
    """run_all echoes each script, tabulates the figure lines and ends with N/M goals met."""
    sys.path.insert(0, str(REPO))
    from bench import run_all
    scripts = {"fig_a": 'print("fig_a: 1 call (goal: 1 call) ok")',
               "fig_b": 'print("noise"); print("fig_b: 2.0x (goal: <= 1.5x) MISSED")'}
    for name, code in scripts.items():
        (tmp_path / f"{name}.py").write_text(code + "\n")
    monkeypatch.setattr(run_all, "BENCH", tmp_path)
    monkeypatch.setattr(run_all, "SCRIPTS", [("fig_a", True), ("fig_b", True), ("absent", False)])
    assert run_all.main([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "1/2 goals met"
    assert any("fig_b" in ln and "MISSED" in ln and ln.startswith("|") for ln in lines)

    (tmp_path / "fig_a.py").write_text("raise SystemExit(3)\n")
    assert run_all.main([]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == "0/2 goals met"
