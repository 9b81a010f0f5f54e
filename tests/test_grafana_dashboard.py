"""deploy/grafana's dashboard is a dashboard Grafana imports, and asks only for metrics the exporter serves.

No Grafana here: the checks are those of Grafana's dashboard model (schema version, unique panel ids,
panels on the 24-column grid without overlap, datasource and variables that resolve, one refId per
query). tests/test_exporter_e2e.py also runs every query against a real Prometheus.
"""
from __future__ import annotations

import json
import re
import time

import pytest
import requests

from htdask.demo.services import REPO
from tests.test_exporter import served, write_state  # noqa: F401  (fixture)

DASHBOARD = REPO / "deploy" / "grafana" / "htdask-dashboard.json"
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}
METRIC = re.compile(r"\b(htdask_[a-z0-9_]+)\b")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


# Quotas count per owner over every schedd (htdask/state/quota.py): they have no schedd to be labelled with.
SITE_WIDE = {"htdask_owner_quota_used", "htdask_owner_quota_limit"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(dash: dict) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def for_prometheus(expr: str) -> str:
    """A panel's query as Grafana sends it, variables replaced by their All value."""
    return expr.replace("$__rate_interval", "1m").replace('"$schedd"', '".*"')


def test_dashboard_model():
    dash = dashboard()
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert p["type"] in ("timeseries", "stat", "table", "bargauge") and p["title"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0 and g["y"] >= 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            for var in re.findall(r"\$\{?(\w+)", t["expr"]):
                assert var in variables or var in BUILTIN_VARIABLES, f"undefined variable ${var} in {t['expr']}"


def test_dashboard_shows_what_the_issue_asks_for():
    titles = " | ".join(p["title"].lower() for p in dashboard()["panels"])
    for wanted in ("clusters", "held", "poll age", "schedd command latency", "request to condor_submit",
                   "crash loop", "jobs ended"):
        assert wanted in titles, wanted


def test_every_query_follows_the_schedd_variable():
    """The `schedd` variable filters every panel: each metric selector of every query has the matcher
    (but the site-wide quota metrics', which have no schedd)."""
    for expr in queries(dashboard()):
        for m in re.finditer(r"\b(htdask_[a-z0-9_]+)(\{[^}]*\})?", expr):
            if m[1] in SITE_WIDE:
                continue
            assert m[2] and 'schedd=~"$schedd"' in m[2], f"{m[1]} is not filtered by $schedd in {expr}"


def served_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("htdask_"):
            names.add(re.split(r"[{ ]", line, 1)[0])
    return names


def test_every_query_uses_a_metric_the_exporter_serves(served):  # noqa: F811
    base, store = served
    write_state(store, polled_at=time.time())
    names = served_names(requests.get(f"{base}/metrics", timeout=10).text)
    used = {m for expr in queries(dashboard()) for m in METRIC.findall(expr)}
    assert used, "the dashboard queries htdask metrics"
    assert used <= names, f"not served by the exporter: {sorted(used - names)}"


def test_readme_documents_every_metric(served):  # noqa: F811
    base, store = served
    write_state(store, polled_at=time.time())
    text = requests.get(f"{base}/metrics", timeout=10).text
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE htdask_")}
    readme = (REPO / "README.md").read_text()
    missing = sorted(f for f in families if f not in readme and f + "_total" not in readme)
    assert not missing, f"README does not document {missing}"


def test_every_cluster_metric_is_on_a_panel_and_has_the_schedd_label(served):  # noqa: F811
    base, store = served
    write_state(store, polled_at=time.time())
    store.set_backoff("alpha", time.time() + 80, "4 workers exited within 2 min (exit code 1)")
    text = requests.get(f"{base}/metrics", timeout=10).text
    used = {m for expr in queries(dashboard()) for m in METRIC.findall(expr)}
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE htdask_")}
    for family in families - {"htdask_redis_up"}:
        names = {family, family + "_total", family + "_bucket", family + "_count"}
        assert names & used, f"{family} is on no panel of the dashboard"
        samples = [ln for ln in text.splitlines() if re.match(rf"{family}(_total|_bucket|_count|_sum)?{{", ln)]
        assert samples, f"{family}: no sample to check"
        if family in SITE_WIDE:
            continue
        assert all('schedd="' in ln for ln in samples), f"{family} has no schedd label: {samples[:2]}"
