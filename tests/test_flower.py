"""Flower shows our tasks with their arguments and states, behind basic auth."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest
import requests

from tests.conftest import needs, wait_until
from tests.conftest import live
from tests.test_core import FAKE_WORKER
from htdask.demo.services import REPO, Stack


@pytest.fixture(scope="module")
@needs("stack")
def stack(service_user):
    """One stack (with Flower and the exporter) for the module: each test works on clusters of its own names
    and leaves no fault set."""
    with Stack(flower_auth="admin:s3cret-pw", exporter=True, DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=FAKE_WORKER, DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786",
               SCHEDD_MIN_INTERVAL="0") as s:
        yield s


def test_flower_api_lists_our_tasks_with_arguments(stack):
    base = f"http://127.0.0.1:{stack.flower_port}"
    assert requests.get(f"{base}/api/tasks", timeout=10).status_code == 401
    assert requests.get(f"{base}/api/tasks", auth=("admin", "wrong"), timeout=10).status_code == 401
    out = stack.cli("scale", "flowery", "2")
    assert out.returncode == 0, out.stderr
    wait_until(lambda: len(live(stack, "flowery")) == 2, message="2 jobs")

    def scale_task():
        tasks = requests.get(f"{base}/api/tasks", auth=("admin", "s3cret-pw"), timeout=10).json()
        return [t for t in tasks.values()
                if t.get("name") == "tasks.scale_cluster" and t.get("state") == "SUCCESS"]

    found = wait_until(scale_task, timeout=30, message="the scale task in Flower")
    task = found[0]
    assert '"cluster":"flowery"' in task["kwargs"] and '"n":2' in task["kwargs"]  # the typed request, as JSON
    assert "submitted" in (task.get("result") or "")
    workers = requests.get(f"{base}/api/workers", auth=("admin", "s3cret-pw"), timeout=10,
                           params={"refresh": "true"}).json()
    assert any(name.startswith("worker1@") for name in workers)



def test_demo_keep_prints_what_answers_and_how_to_stop(stack, capsys):
    """`make demo KEEP=1` prints URLs and passwords that work, the shell lines to use it, how to stop; its
    Dask scheduler keeps running, and the scheduler's address and dashboard URL are printed (and answer)."""
    from htdask.demo.run import _print_keep, start_scheduler
    scheduler, address, dashboard = start_scheduler(stack)
    try:
        _print_keep(stack, "s3cret-pw", address, dashboard)
        out = capsys.readouterr().out
        assert dashboard in out and requests.get(dashboard, timeout=30).status_code == 200
        assert f"htdask scale mine 2 --scheduler {address} --wait" in out
    finally:
        scheduler.stop()
    import inspect
    from htdask.demo.run import run_demo
    source = inspect.getsource(run_demo)  # the demo's own scheduler is stopped at the end only, not before KEEP
    assert source.count("scheduler.stop()") == 1 and source.index("finally:") < source.index("scheduler.stop()")
    flower = next(w for line in out.splitlines() if "Flower" in line for w in line.split() if w.startswith("http"))
    assert requests.get(f"{flower}api/workers", auth=("admin", "s3cret-pw"), timeout=10).status_code == 200
    assert "password s3cret-pw" in out and stack.redis.url in out
    assert f"kill {os.getpid()}" in out and "Ctrl-C" in out
    assert stack.exporter_url in out, "the status page's URL is printed"
    assert requests.get(stack.exporter_url, timeout=10).status_code == 200
    exports = [line.strip() for line in out.splitlines() if line.strip().startswith("export ")]
    # `logs` from that shell reads the worker jobs' LOG_DIR, not the controller's log directory
    assert any(f"LOG_DIR='{stack.env['LOG_DIR']}'" in line for line in exports), exports
    script = "\n".join(exports + [f"exec {shlex.quote(sys.executable)} cli.py status --json"])
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LOCALPOOL_DIR")}
    res = subprocess.run(["bash", "-c", script], cwd=str(REPO), env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and '"clusters"' in res.stdout, res.stderr


def test_flower_traces_every_request_to_the_round_that_handled_it(stack):
    """With slow submits, requests arrive while a round runs: each queued scale task names the task whose
    round handled its cluster, and that task's result, as Flower shows it, says what it did to it."""
    base, auth = f"http://127.0.0.1:{stack.flower_port}", ("admin", "s3cret-pw")
    subprocess.run([sys.executable, "-m", "htdask_localpool", "fault", "submit-delay", "1.5"], env=stack.env, cwd=str(REPO),
                   check=True, capture_output=True, timeout=60)
    try:
        _trace_requests(stack, base, auth)
    finally:  # the module's other tests share the stack
        subprocess.run([sys.executable, "-m", "htdask_localpool", "fault", "clear"], env=stack.env, cwd=str(REPO),
                       check=True, capture_output=True, timeout=60)


def _trace_requests(stack, base: str, auth: tuple[str, str]) -> None:
    import ast
    import json

    clusters = ["trace-a", "trace-b", "trace-c", "trace-d"]
    # the first request's task runs a round; the others are made once that round has taken its batch (its
    # lease held, the next round named in the queued mark), so they are left to the round after it
    out = stack.python("import json, time\nfrom htdask.state import Store, connect, keys\nfrom tasks import api\n"
                       "store = Store(connect())\n"
                       f"ids = {{{clusters[0]!r}: api.enqueue_scale(store, {clusters[0]!r}, 1).task_id}}\n"
                       "deadline = time.time() + 30\n"
                       "while not (store.r.exists(keys.batch_lock('local'))\n"
                       "           and (store.r.get(keys.round_queued('local')) or '').startswith('r:')):\n"
                       "    assert time.time() < deadline, 'the first round never took its batch'\n"
                       "    time.sleep(0.01)\n"
                       f"ids.update({{c: api.enqueue_scale(store, c, 1).task_id for c in {clusters[1:]!r}}})\n"
                       "print(json.dumps(ids))")
    assert out.returncode == 0, out.stderr
    ids = json.loads(out.stdout.strip().splitlines()[-1])

    def finished(task_id):
        def get():
            r = requests.get(f"{base}/api/task/info/{task_id}", auth=auth, timeout=10)
            return r.json() if r.ok and r.json().get("state") == "SUCCESS" else None
        task = wait_until(get, timeout=60, message=f"task {task_id} done in Flower")
        return task, ast.literal_eval(task["result"])

    queued = 0
    for cluster in clusters:
        _, result = finished(ids[cluster])
        if result.get("state") != "queued":
            assert result["submitted"], result  # ran the round that submitted its own job
            continue
        queued += 1
        task, round_result = finished(result["handled_by"])
        assert task["name"] in ("tasks.reconcile_pending", "tasks.scale_cluster"), task
        named = round_result.get("clusters") or round_result.get("round") or {}
        assert named[cluster]["did"] == "submitted" and named[cluster]["submitted"] == 1, round_result
    assert queued, "some requests arrived while another task's round ran"
    # every reconcile_pending result names its clusters and what it did to them
    tasks = requests.get(f"{base}/api/tasks", auth=auth, timeout=10, params={"taskname": "tasks.reconcile_pending"}).json()
    rounds = [ast.literal_eval(t["result"]) for t in tasks.values() if t.get("state") == "SUCCESS"]
    assert rounds and all(set(r["clusters"]) and all(c["did"] for c in r["clusters"].values())
                          for r in rounds if r["state"] == "ok" and r["reconciled"])
    wait_until(lambda: all(len(live(stack, c)) == 1 for c in clusters), timeout=60, message="one job per cluster")


def test_polls_run_on_their_own_queue(stack):
    out = stack.cli("poll")
    assert out.returncode == 0, out.stderr
    auth = ("admin", "s3cret-pw")
    tasks = requests.get(f"http://127.0.0.1:{stack.flower_port}/api/tasks", auth=auth, timeout=10,
                         params={"taskname": "tasks.poll_queue"}).json()
    assert tasks
    info = [requests.get(f"http://127.0.0.1:{stack.flower_port}/api/task/info/{tid}", auth=auth, timeout=10).json()
            for tid in tasks]
    assert {t.get("routing_key") for t in info} == {"local.poll"}, info


def test_flower_takes_its_password_from_a_config_file_out_of_ps(stack, tmp_path):
    """The README's second way: `--conf` names a Python file (mode 0600) holding basic_auth; the
    password is then on no command line."""
    from htdask.demo.procs import Process, free_port, wait_for_port
    conf = tmp_path / "flowerconfig.py"
    conf.touch(mode=0o600)
    conf.write_text('basic_auth = ["admin:from-a-file"]\n')
    port = free_port()
    env = {k: v for k, v in stack.env.items() if not k.startswith("FLOWER_")}
    flower = Process([sys.executable, "-m", "celery", "-A", "tasks", "flower", f"--conf={conf}",
                      "--address=127.0.0.1", f"--port={port}"], env=env, cwd=str(REPO),
                     log_path=tmp_path / "flower.log", name="flower-conf")
    try:
        wait_for_port(port, timeout=60)
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/api/workers", timeout=10).status_code == 401
        assert requests.get(f"{base}/api/workers", auth=("admin", "from-a-file"), timeout=30).status_code == 200
        with open(f"/proc/{flower.pid}/cmdline", "rb") as f:
            assert b"from-a-file" not in f.read()
    finally:
        flower.stop()
