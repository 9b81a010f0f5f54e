"""The one settings model (htdask/settings/): every setting defined once with its variable, type, default, unit and
meaning; validated at start (a bad value stops each process with one line naming it); no setting read at
import time or outside the model; the README's tables generated from it."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from htdask import settings
from htdask.demo.services import REPO, base_env
from htdask.settings import Settings, SettingsError, env_names, load
from htdask.settings.doc import README, replaced, tables

#: product code, all of htdask/ (the local pool, test harness and benchmarks are apart from it)
PRODUCT = ("cli.py", "beat_schedule.py", "htdask", "tasks", "workers")


@pytest.fixture
def clean_env(monkeypatch):
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- the model ------------------------------------------------------------------------------------------

def test_every_setting_has_one_variable_a_type_a_default_and_a_meaning():
    names = env_names()
    assert len(names) == len(set(names)), "a variable is defined twice"
    for model in settings.sections():
        for attr, field in model.model_fields.items():
            if isinstance(field.validation_alias, str):
                extra = field.json_schema_extra
                assert extra["meaning"] and extra["env"] == field.validation_alias, attr
                assert field.annotation is not None, attr


def test_defaults_are_the_documented_ones(clean_env):
    s = load()
    assert (s.redis_url, s.schedd_name, s.schedds, s.poll_interval, s.condor_timeout) == (
        "redis://127.0.0.1:6379/0", "local", ("local",), 15.0, 60.0)
    assert (s.task_time_limit, s.visibility_timeout, s.lock_timeout) == (300, 3600, 150.0)
    assert s.hold_keep_codes == () and s.min_submit_uid == 1000 and s.state_prefix == "htdask"
    assert s.operator.resync_seconds == 15.0 and s.operator.max_workers == 1000
    assert s.gateway.address == "127.0.0.1:8000" and s.identity.identity_cache_ttl == 3600


def test_values_are_parsed_and_derived_defaults_follow_their_source(clean_env):
    for k, v in {"SCHEDD_NAME": "s1", "SCHEDDS": " s1, s2 ,,", "TASK_TIME_LIMIT": "1200", "HOLD_KEEP_CODES": "26,3",
                 "POLL_INTERVAL": "5", "DENY_USERS": "a, b", "GATEWAY_RUN_AS_OWNER": "yes", "MIN_SUBMIT_UID": "0",
                 "OPERATOR_PROXY_PREFIX": "/p/", "OPERATOR_PROXY_WEB_MIDDLEWARES": '[{"name": "m"}]',
                 "LOG_DIR": ""}.items():
        clean_env.setenv(k, v)
    s = load()
    assert s.schedds == ("s1", "s2") and s.hold_keep_codes == (3, 26) and s.deny_users == ("a", "b")
    assert s.visibility_timeout == 4800, "4 x TASK_TIME_LIMIT when that is above 3600"
    assert s.operator.resync_seconds == 5.0, "OPERATOR_RESYNC_SECONDS defaults to POLL_INTERVAL"
    assert s.gateway.run_as_owner is True and s.min_submit_uid == 1, "root never, whatever MIN_SUBMIT_UID"
    assert s.operator.proxy_prefix == "/p" and s.operator.proxy_web_middlewares == [{"name": "m"}]
    assert s.log_dir == "/var/tmp/htdask-logs", "an empty variable counts as unset"


@pytest.mark.parametrize("env,line", [
    ({"VISIBILITY_TIMEOUT": "5"}, "VISIBILITY_TIMEOUT=5 must be at least 4 × TASK_TIME_LIMIT (1200) s"),
    ({"TASK_TIME_LIMIT": "1000", "VISIBILITY_TIMEOUT": "3600"}, "VISIBILITY_TIMEOUT=3600 must be at least"),
    ({"POLL_INTERVAL": "abc"}, "POLL_INTERVAL='abc' is not a number"),
    ({"POLL_INTERVAL": "0"}, "POLL_INTERVAL='0' must be more than 0"),
    ({"CONDOR_TIMEOUT": "300"}, "CONDOR_TIMEOUT=300 must be below TASK_TIME_LIMIT=300 s"),
    ({"CONDOR_TIMEOUT": "5", "TASK_TIME_LIMIT": "6", "VISIBILITY_TIMEOUT": "24"},
     "CONDOR_TIMEOUT=5: the lock timeout (40 s = 2 × CONDOR_TIMEOUT + 30) must not exceed"),
    ({"CRASH_BACKOFF_BASE": "60", "CRASH_BACKOFF_MAX": "10"}, "CRASH_BACKOFF_MAX=10 must be at least"),
    ({"CONDOR_BACKEND": "slurm"}, "CONDOR_BACKEND='slurm'"),
    ({"HOLD_NO_RELEASE_CODES": "12,x"}, "HOLD_NO_RELEASE_CODES='x'"),
    ({"MAX_WORKERS_PER_CLUSTER": "-1"}, "MAX_WORKERS_PER_CLUSTER='-1'"),
    ({"GATEWAY_WORKER_PORTS": "9000:8000"}, "GATEWAY_WORKER_PORTS='9000:8000': ports must be"),
    ({"GATEWAY_ALLOW_ANY_PASSWORD": "maybe"}, "GATEWAY_ALLOW_ANY_PASSWORD='maybe'"),
    ({"OPERATOR_LEASE_SECONDS": "1"}, "OPERATOR_LEASE_SECONDS='1'"),
    ({"OPERATOR_WORKER_UNIVERSE": "grid"}, "OPERATOR_WORKER_UNIVERSE='grid'"),
    ({"OPERATOR_PROXY_WEB_MIDDLEWARES": "{}"}, "OPERATOR_PROXY_WEB_MIDDLEWARES='{}': must be a JSON list"),
    ({"OPERATOR_CREDENTIALS_DIR": "creds"}, "OPERATOR_CREDENTIALS_DIR='creds': must be an absolute path"),
    ({"OPERATOR_SCHEDULER_ADDRESS": "tls://{svc}:8786"}, "OPERATOR_SCHEDULER_ADDRESS='tls://{svc}:8786'"),
    ({"CICONNECT_RETRIES": "-1"}, "CICONNECT_RETRIES"),
])
def test_a_bad_value_is_one_line_naming_the_variable(clean_env, env, line):
    for k, v in env.items():
        clean_env.setenv(k, v)
    with pytest.raises(SettingsError) as e:
        load()
    assert str(e.value).startswith(line.split("=")[0]) and line in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_secrets_are_not_shown_in_the_error(clean_env):
    clean_env.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0")
    clean_env.setenv("TASK_TIME_LIMIT", "x")
    clean_env.setenv("GATEWAY_PASSWORD", "hunter2")
    with pytest.raises(SettingsError) as e:
        load()
    assert "hunter2" not in str(e.value)


def test_loaded_once_and_again_only_when_the_environment_changes(clean_env):
    first = load()
    assert load() is first
    clean_env.setenv("POLL_INTERVAL", "7")
    assert load() is not first and load().poll_interval == 7.0


def test_a_frozen_process_reads_its_environment_no_more_until_forgotten(clean_env):
    clean_env.setenv("POLL_INTERVAL", "7")
    try:
        frozen = settings.freeze()
        clean_env.setenv("POLL_INTERVAL", "9")
        assert load() is frozen and load().poll_interval == 7.0
    finally:
        load.cache_clear()
    assert load().poll_interval == 9.0


def test_keyword_overrides_win_over_the_environment(clean_env):
    clean_env.setenv("SCHEDD_NAME", "from-env")
    assert settings.build(schedd_name="flag").schedd_name == "flag"
    from htdask.k8s_operator.config import from_env
    clean_env.setenv("DASK_GATEWAY_INSTANCE", "env-instance")
    clean_env.setenv("DASK_GATEWAY_API_URL", "http://gw/api")
    cfg = from_env(instance="flag-instance", namespace="ns", api_url=None)
    assert (cfg.instance, cfg.namespace, cfg.api_url) == ("flag-instance", "ns", "http://gw/api")


# --- one definition: no setting is read anywhere else ---------------------------------------------------

def _environment_reads(path: Path) -> list[str]:
    """Names read with os.environ.get/[...]/os.getenv in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        target = None
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            f = node.func
            if isinstance(f, ast.Attribute) and (f.attr == "getenv" or (
                    f.attr == "get" and isinstance(f.value, ast.Attribute) and f.value.attr == "environ")):
                target = node.args[0].value
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "environ" and isinstance(node.slice, ast.Constant):
            target = node.slice.value
        if isinstance(target, str):
            found.append(target)
    return found


def test_no_setting_of_the_model_is_read_outside_it():
    names = set(env_names())
    offenders = []
    for top in PRODUCT:
        base = REPO / top
        files = [base] if base.suffix == ".py" else sorted(base.rglob("*.py")) if base.is_dir() else []
        for path in files:
            if path.parent == REPO / "htdask" / "settings":
                continue
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in _environment_reads(path) if n in names]
    assert not offenders, offenders


def test_importing_the_app_and_the_state_keys_reads_no_setting():
    """A bad value does not break an import (only a process's start reads the settings)."""
    code = "import tasks.app, tasks.cluster_tasks, htdask.state.keys, htdask.state.store, htdask.gateway.backend, htdask.k8s_operator.config"
    res = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=120,
                         env={**base_env(Path("/tmp"), "redis://127.0.0.1:1/0"), "POLL_INTERVAL": "abc"})
    assert res.returncode == 0, res.stderr


def test_the_gateway_client_app_leaves_the_tasks_app_alone(clean_env):
    from tasks.app import app, client_app
    before = app.conf.broker_url
    other = client_app("redis://127.0.0.1:6399/3")
    assert other.conf.broker_url == other.conf.result_backend == "redis://127.0.0.1:6399/3"
    assert app.conf.broker_url == before and other is not app


# --- each process stops at start ------------------------------------------------------------------------

def _run(argv: list[str], env: dict, tmp_path) -> subprocess.CompletedProcess:
    full = {**base_env(tmp_path, "redis://127.0.0.1:1/0"), **env}
    return subprocess.run(argv, env=full, cwd=str(REPO), capture_output=True, text=True, timeout=120)


def _one_line(res: subprocess.CompletedProcess, prefix: str, variable: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith(prefix) and variable in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("program,env,prefix,variable", [
    ("worker", {"VISIBILITY_TIMEOUT": "5"}, "htdask worker: bad setting: ", "VISIBILITY_TIMEOUT=5"),
    ("worker", {"POLL_INTERVAL": "abc"}, "htdask worker: bad setting: ", "POLL_INTERVAL='abc'"),
    ("beat", {"POLL_INTERVAL": "abc"}, "htdask beat: bad setting: ", "POLL_INTERVAL='abc'"),
])
def test_celery_worker_and_beat_stop_at_start(tmp_path, program, env, prefix, variable):
    argv = [sys.executable, "-m", "celery", "-A", "tasks", program]
    if program == "worker":
        argv += ["-Q", "settings-check", "-c", "1", "--without-gossip", "--without-mingle"]
    else:
        argv += ["-s", str(tmp_path / "beat-schedule")]
    _one_line(_run(argv, env, tmp_path), prefix, variable)


@pytest.mark.parametrize("argv,env,prefix,variable", [
    (["status"], {"VISIBILITY_TIMEOUT": "5"}, "error: VISIBILITY_TIMEOUT=5 must be at least", "TASK_TIME_LIMIT"),
    (["scale", "c", "1"], {"POLL_INTERVAL": "abc"}, "error: POLL_INTERVAL='abc' is not a number", ""),
    (["operator"], {"OPERATOR_LEASE_SECONDS": "1"}, "error: OPERATOR_LEASE_SECONDS='1' must be at least 3", ""),
    (["exporter"], {"POLL_INTERVAL": "0"}, "error: POLL_INTERVAL='0' must be more than 0", ""),
])
def test_cli_and_operator_stop_at_start(tmp_path, argv, env, prefix, variable):
    _one_line(_run([sys.executable, "cli.py", *argv], env, tmp_path), prefix, variable)


def test_gateway_stops_at_start(tmp_path):
    code = ("from traitlets.config.loader import PyFileConfigLoader\n"
            f"PyFileConfigLoader('config.py', path={str(REPO / 'htdask' / 'gateway')!r}).load_config()\n")
    res = _run([sys.executable, "-c", code], {"GATEWAY_PASSWORD": "pw", "GATEWAY_SCHEDULER_MODE": "pod"}, tmp_path)
    _one_line(res, "dask-gateway-server: refusing to start: bad setting: ", "GATEWAY_SCHEDULER_MODE='pod'")


# --- the README -----------------------------------------------------------------------------------------

def test_readme_configuration_tables_are_the_model():
    text = README.read_text()
    assert replaced(text) == text, "README.md differs from htdask/settings/: run python -m htdask.settings.doc --write"
    for name in env_names():
        assert f"| `{name}` |" in text, name


def test_every_type_in_the_tables_is_a_readers_word():
    """No Python repr (`<class 'pydantic.types.ByteSize'>`) in the type column; sizes say how to write one."""
    text = tables()
    assert "<class" not in text and "typing." not in text and "pydantic" not in text
    row = next(line for line in text.splitlines() if line.startswith("| `QUOTA_MAX_MEMORY` |"))
    assert "| bytes (e.g. `64GiB`) |" in row


def test_the_table_changes_when_the_model_does(monkeypatch):
    """The check above can fail: a changed meaning changes the generated text."""
    field = Settings.model_fields["poll_interval"]
    monkeypatch.setitem(field.json_schema_extra, "meaning", "something else")
    text = README.read_text()
    assert replaced(text) != text
