"""The exporter on the whole stack: a Celery worker on the local pool, beat, and `python cli.py exporter`.

One cluster is scaled to 3; then its metrics are checked as served, by `promtool`, by a real
Prometheus scraping the exporter (Debian's `prometheus`), and its row on the status page in a real
headless browser (Debian's `chromium`). Those two skip, saying why, only when the package is missing.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from htdask.demo.procs import Process, free_port, wait_for_port
from htdask.demo.services import FAKE_WORKER, Stack
from tests.conftest import SERVICE_USER, needs, wait_until
from tests.test_exporter import samples, value
from tests.test_grafana_dashboard import dashboard, for_prometheus, queries

CLUSTER = "watched"


@pytest.fixture(scope="module")
@needs("stack")
def stack(service_user):
    with Stack(beat=True, exporter=True, POLL_INTERVAL="2", SCHEDD_MIN_INTERVAL="0", DEFAULT_OWNER=service_user,
               DASK_WORKER_COMMAND=str(FAKE_WORKER), DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786") as s:
        out = s.cli("scale", CLUSTER, "3")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: running(s) == 3, timeout=90, message="3 running jobs in the exporter's metrics")
        yield s


def metrics(stack: Stack) -> dict:
    return samples(requests.get(stack.exporter_url + "metrics", timeout=10).text)


def running(stack: Stack) -> float | None:
    return value(metrics(stack), "htdask_cluster_jobs", cluster=CLUSTER, owner=SERVICE_USER, schedd="local",
                 state="running")


def test_worker_measurements_reach_the_exporter(stack):
    m = metrics(stack)
    assert value(m, "htdask_cluster_desired_workers", cluster=CLUSTER, owner=SERVICE_USER, schedd="local") == 3
    assert value(m, "htdask_cluster_stale", cluster=CLUSTER, schedd="local") == 0
    submits = len(stack.calls("condor_submit"))
    assert value(m, "htdask_schedd_command_duration_seconds_count", schedd="local", command="condor_submit") == submits
    assert value(m, "htdask_schedd_command_failures_total", schedd="local", command="condor_submit") == 0
    assert value(m, "htdask_schedd_command_duration_seconds_count", schedd="local", command="condor_q") >= 2
    # one request, served by one condor_submit: one request-to-submit observation, however many polls followed
    assert value(m, "htdask_request_to_submit_seconds_count", schedd="local") == 1
    assert 0 < value(m, "htdask_request_to_submit_seconds_sum", schedd="local") < 60
    assert value(m, "htdask_poll_duration_seconds", schedd="local") > 0
    assert value(m, "htdask_poll_age_seconds", schedd="local") < 3 * 2 + 5


@pytest.mark.external
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: apt-get install prometheus")
def test_promtool_accepts_the_live_output(stack):
    text = requests.get(stack.exporter_url + "metrics", timeout=10).text
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="Debian's prometheus is not installed (apt-get install prometheus; .ci/run does)")
@pytest.mark.external
def test_real_prometheus_scrapes_the_cluster_running_3(stack, tmp_path):
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: htdask
    static_configs:
      - targets: ["127.0.0.1:{stack.exporter_port}"]
""")
    prom = Process(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                   log_path=tmp_path / "prometheus.log", name="prometheus")
    try:
        wait_for_port(port, timeout=60)
        query = f'htdask_cluster_jobs{{state="running",cluster="{CLUSTER}"}}'

        def answer():
            r = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=10)
            result = r.json()["data"]["result"] if r.ok else []
            return result or None

        result = wait_until(answer, timeout=60, interval=0.5, message="Prometheus to have scraped the exporter")
        assert len(result) == 1
        assert result[0]["value"][1] == "3"
        assert result[0]["metric"]["job"] == "htdask" and result[0]["metric"]["schedd"] == "local"
        targets = requests.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=10).json()["data"]
        assert [t["health"] for t in targets["activeTargets"]] == ["up"]
        # every query of the Grafana dashboard is valid PromQL over what Prometheus scraped
        for expr in queries(dashboard()):
            r = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": for_prometheus(expr)},
                             timeout=10)
            assert r.status_code == 200 and r.json()["status"] == "success", (expr, r.text)
        desired = requests.get(f"http://127.0.0.1:{port}/api/v1/query", timeout=10, params={
            "query": for_prometheus(queries(dashboard())[0])}).json()["data"]["result"]
        assert desired[0]["value"][1] == "1", "the Clusters panel counts our one cluster"
    finally:
        prom.stop()
        print(prom.tail())


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None,
                    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
@pytest.mark.external
def test_status_page_in_headless_chromium_shows_the_cluster_row(stack):
    profile = Path(tempfile.mkdtemp(prefix="htdask-chromium-"))
    try:
        out = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              f"--user-data-dir={profile}", "--dump-dom", stack.exporter_url],
                             capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    # the DOM as the browser built it: the row of our cluster, with its desired and running counts
    from html.parser import HTMLParser

    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.cells, self.current = {}, None, None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "tr" and "cluster" in (attrs.get("class") or "").split():
                self.current, self.cells = attrs["data-cluster"], []
            elif tag == "td" and self.cells is not None:
                self.cells.append("")

        def handle_data(self, data):
            if self.cells:
                self.cells[-1] += data

        def handle_endtag(self, tag):
            if tag == "tr" and self.cells is not None:
                self.rows[self.current] = [c.strip() for c in self.cells]
                self.cells = None

    parser = Rows()
    parser.feed(dom)
    assert CLUSTER in parser.rows, dom[:3000]
    row = parser.rows[CLUSTER]
    assert row[0] == CLUSTER and row[2] == "local"
    assert row[3] == "3" and row[5] == "3", row  # desired, running
    assert "stale" not in row[9], row
    assert '<meta http-equiv="refresh"' in dom
