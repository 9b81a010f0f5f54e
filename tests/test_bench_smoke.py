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


def test_run_all_writes_the_table_of_one_full_run_between_the_markers(tmp_path, monkeypatch, capsys):
    """`run_all --write FILE` (make bench): the figures table of FILE is replaced by this run's, the text
    around the markers (the title, the notes) is kept; a partial run or a file without markers is refused
    before anything runs, and the file is left as it was."""
    sys.path.insert(0, str(REPO))
    from bench import run_all, table
    (tmp_path / "fig_a.py").write_text('print("fig_a: 1 call | 2 (goal: 1 call) ok")\n')
    (tmp_path / "fig_b.py").write_text('print("fig_b: 2.0x (goal: <= 1.5x) MISSED")\n')
    monkeypatch.setattr(run_all, "BENCH", tmp_path)
    monkeypatch.setattr(run_all, "SCRIPTS", [("fig_a", True), ("fig_b", True)])
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n\n{table.BEGIN}\nold table\n{table.END}\n\n## Notes\n\nkept prose\n")
    assert run_all.main(["--write", str(doc), "--note", "quiet"]) == 0
    text = doc.read_text()
    assert text.startswith(f"# Title\n\n{table.BEGIN}\n") and text.endswith(f"{table.END}\n\n## Notes\n\nkept prose\n")
    assert "old table" not in text and ", quiet;" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| fig_")]
    assert rows[0].startswith("| fig_a |") and "1 call \\| 2: ok |" in rows[0], rows
    assert rows[1].startswith("| fig_b |") and "<= 1.5x | 2.0x: **MISSED** |" in rows[1], rows
    assert "1/2 goals met." in text
    with pytest.raises(SystemExit):
        run_all.main(["fig_a", "--write", str(doc)])
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    (tmp_path / "fig_a.py").write_text("raise SystemExit('must not run')\n")
    with pytest.raises(SystemExit):
        run_all.main(["--write", str(bare)])
    assert bare.read_text() == "no markers\n" and rows[0] in doc.read_text()
    capsys.readouterr()


def test_the_benchmarks_page_has_the_markers_the_table_is_written_between():
    from bench import table
    table.check(REPO / "docs" / "benchmarks.md")
