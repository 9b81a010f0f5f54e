"""compose/docker-compose.yml as Debian's docker-compose resolves it (`docker-compose config`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "compose" / "docker-compose.yml"
ENV_EXAMPLE = REPO / "compose" / ".env.example"

pytestmark = [pytest.mark.external,
              pytest.mark.skipif(shutil.which("docker-compose") is None,
                                 reason="docker-compose is not installed (apt-get install docker-compose; "
                                        ".ci/run installs it)")]


# what a site with Kubernetes adds to .env (commented out in .env.example)
OPERATOR = dict(DASK_GATEWAY_INSTANCE="dask-gateway", DASK_GATEWAY_API_URL="http://api-dask-gateway.dask-gateway:8000/api",
                KUBECONFIG_FILE="/etc/htdask/kubeconfig",
                OPERATOR_PROXY_WEB_MIDDLEWARES="'[{\"name\": \"clusters-prefix-dask-gateway\", \"namespace\": \"dask-gateway\"}]'")


def compose_config(tmp_path, **env) -> subprocess.CompletedProcess:
    """`docker-compose config` with a copy of .env.example plus `env` as the env file."""
    env_file = tmp_path / "env"
    lines = ENV_EXAMPLE.read_text().splitlines()
    lines = [ln for ln in lines if not any(ln.startswith(f"{k}=") for k in env)]
    lines += [f"{k}={v}" for k, v in env.items() if v is not None]
    env_file.write_text("\n".join(lines) + "\n")
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(["docker-compose", "-f", str(COMPOSE), "--env-file", str(env_file), "config"],
                          capture_output=True, text=True, timeout=60, env=clean, cwd=tmp_path)


@pytest.fixture
def config(tmp_path):
    out = compose_config(tmp_path, REDIS_PASSWORD="s3cret-redis", FLOWER_USER="ops", FLOWER_PASSWORD="s3cret-flower",
                         SCHEDD_NAME="schedd-a", **OPERATOR)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_has_the_six_services(config):
    assert set(config["services"]) == {"redis", "worker", "beat", "flower", "exporter", "operator"}
    for name in ("worker", "beat", "flower", "exporter", "operator"):
        svc = config["services"][name]
        assert svc["build"]["context"] == str(REPO) and svc["build"]["dockerfile"] == "Dockerfile"
        assert svc["environment"]["REDIS_URL"] == "redis://:s3cret-redis@redis:6379/0"
        assert svc["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_redis_keeps_an_append_only_file_behind_a_password(config):
    redis = config["services"]["redis"]
    cmd = redis["command"]
    assert cmd[0] == "redis-server"
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--requirepass") + 1] == "s3cret-redis"
    assert any(v.endswith(":/data:rw") for v in redis["volumes"]), "the AOF outlives the container"
    assert "ports" not in redis, "Redis is only on the compose network"


def test_worker_consumes_its_schedd_queue_with_the_hosts_htcondor_configuration(config):
    worker = config["services"]["worker"]
    cmd = worker["command"]
    assert cmd[:4] == ["celery", "-A", "tasks", "worker"] and cmd[cmd.index("-Q") + 1] == "schedd-a"
    assert worker["environment"]["SCHEDD_NAME"] == "schedd-a"
    assert "/etc/condor:/etc/condor:ro" in worker["volumes"]
    assert {"/etc/passwd:/etc/passwd:ro", "/etc/group:/etc/group:ro"} <= set(worker["volumes"])


def test_beat_and_flower(config):
    assert config["services"]["beat"]["command"][:4] == ["celery", "-A", "tasks", "beat"]
    flower = config["services"]["flower"]
    assert flower["command"][:4] == ["celery", "-A", "tasks", "flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "ops:s3cret-flower"
    assert not any("s3cret-flower" in arg for arg in flower["command"]), "the password is not in argv"
    assert flower["ports"] == ["127.0.0.1:5555:5555/tcp"]


def test_exporter_serves_metrics_on_loopback_with_scrape_labels(config):
    exporter = config["services"]["exporter"]
    assert exporter["command"][:2] == ["htdask", "exporter"]  # the installed program (Dockerfile)
    assert exporter["command"][exporter["command"].index("--port") + 1] == "9808"
    assert exporter["ports"] == ["127.0.0.1:9808:9808/tcp"]
    assert exporter["labels"]["prometheus.io/scrape"] == "true" and exporter["labels"]["prometheus.io/port"] == "9808"
    assert "/healthz" in " ".join(exporter["healthcheck"]["test"])


def test_operator_runs_the_cli_command_with_a_kubeconfig(config):
    op = config["services"]["operator"]
    assert op["command"][:2] == ["htdask", "operator"]
    assert "/etc/htdask/kubeconfig:/etc/htdask/kubeconfig:ro" in op["volumes"]
    assert op["environment"]["DASK_GATEWAY_INSTANCE"] == "dask-gateway"
    assert op["environment"]["DASK_GATEWAY_API_URL"].startswith("http")
    # as .env.example writes it (single-quoted): the operator gets the JSON list itself
    assert json.loads(op["environment"]["OPERATOR_PROXY_WEB_MIDDLEWARES"]) == [
        {"name": "clusters-prefix-dask-gateway", "namespace": "dask-gateway"}]


@pytest.mark.parametrize("missing", ["REDIS_PASSWORD", "FLOWER_PASSWORD", "DEFAULT_OWNER"])
def test_secrets_and_settings_are_required(tmp_path, missing):
    values = dict(REDIS_PASSWORD="x", FLOWER_USER="u", FLOWER_PASSWORD="p", DEFAULT_OWNER="htdask")
    values[missing] = None
    out = compose_config(tmp_path, **values)
    assert out.returncode != 0 and f"set {missing}" in out.stderr


def test_a_site_without_kubernetes_sets_no_operator_setting(tmp_path):
    """.env.example as it is (its operator lines commented out): the file resolves, and the operator is
    a profile of its own, the only one: `up` without `--profile operator` starts the other five."""
    text = ENV_EXAMPLE.read_text()
    assert not [ln for ln in text.splitlines() if ln.startswith(("DASK_GATEWAY_", "KUBECONFIG_FILE=", "OPERATOR_"))]
    out = compose_config(tmp_path, REDIS_PASSWORD="x", FLOWER_PASSWORD="p")
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert services["operator"]["profiles"] == ["operator"]
    assert not [name for name, svc in services.items() if name != "operator" and svc.get("profiles")]


def test_worker_is_restarted_when_it_stops_answering_a_ping(config):
    """The kombu wedge defence: the health check pings the worker (htdask worker-health: by default the
    workers of this host consuming the schedd's queue, here the -n worker@%h it is started with) and kills
    it by its pid file; init + restart policy bring a fresh one."""
    worker = config["services"]["worker"]
    cmd = worker["command"]
    assert cmd[cmd.index("-n") + 1] == "worker@%h"
    pidfile = cmd[cmd.index("--pidfile") + 1]
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "htdask worker-health" in test[1]
    assert f"kill -KILL $(cat {pidfile})" in test[1].replace("$$", "$")  # `config` prints the file's escape
    assert worker["init"] is True and worker["restart"] == "unless-stopped"
    assert worker["environment"]["REDIS_SENTINEL_MASTER"] == "mymaster"
