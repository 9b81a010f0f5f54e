"""One condor_submit per round and submit user (tasks/submissions.py): several clusters' descriptions in one
submit file, each with its own queue statement.

The descriptions go through the pool's `condor_submit -dry-run` (HTCondor's own submit-language code):
every job of a combined file gets exactly what its cluster's description alone gives it, and a command
one part assigns and another does not would carry over (which is why such parts are never combined).
End to end (real redis-server, a real Celery worker, the local pool; calls counted in calls.log): one
round of several clusters of one owner makes one condor_submit, every cluster gets exactly its jobs;
two owners make two; a cluster whose description condor_submit refuses fails alone; a short submit's
shortfall falls on the last clusters; a submit that timed out is not repeated within the round.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from htdask.domain.jobspec import WorkerJobSpec, worker_submit_description
from htdask.domain.submitdesc import CombinedDescription
from htdask.domain.validation import ValidationError
from tasks.submissions import SubmitPlan, _groups
from tests.conftest import needs, queue_of, since_start, wait_until
from tests.test_core import make_stack, module_stack, store_of  # noqa: F401 (module_stack: a fixture)
from tests.test_localpool_lib import dry_run

REPO = Path(__file__).resolve().parent.parent
ADDRESS = "tcp://10.0.0.5:8786"
VOLATILE = {"ClusterId", "ProcId", "QDate", "EnteredCurrentStatus", "GlobalJobId", "SubmitterGlobalJobId", "JobSubmitFile"}


def part(cluster: str, items, **options):
    return worker_submit_description(WorkerJobSpec(cluster=cluster, owner="alice", scheduler_address=ADDRESS,
                                                   **options), items)


def _sans_job_id(value) -> str:
    """Out/Err name the job (`<cluster>-<index>.<ClusterId>.<ProcId>.out`), which differs between files."""
    return re.sub(r"\.\d+\.\d+\.(out|err)$", r".\1", str(value))


def same_job(a: dict, b: dict) -> bool:
    keys = (set(a) | set(b)) - VOLATILE
    return all(_sans_job_id(a.get(k)) == _sans_job_id(b.get(k)) for k in keys)


def test_each_job_of_a_combined_file_is_what_its_own_description_gives(pool_env, tmp_path):
    parts = [part("small", [(0, "small-0"), (1, "small-1")], memory_limit="1GiB", log_dir="/tmp/small-logs"),
             part("big", [(5, "big-5")], memory_limit="3GiB", nthreads=2, log_dir="/tmp/big-logs",
                  environment={"X": "1"}),
             part("third", [(2, "third-2"), (3, "third-3")], memory_limit="2GiB", log_dir="/tmp/third-logs")]
    combined = CombinedDescription(parts)
    ads = dry_run(pool_env, tmp_path, combined.render(), name="combined.sub")
    assert len(ads) == combined.num_jobs == 5
    assert [a["ProcId"] for a in ads] == [0, 1, 2, 3, 4], "procs numbered in order across the queue statements"
    assert len({a["ClusterId"] for a in ads}) == 1
    alone = [ad for i, p in enumerate(parts) for ad in dry_run(pool_env, tmp_path, p.render(), name=f"{i}.sub")]
    for got, want in zip(ads, alone):
        assert same_job(got, want), {k: (got.get(k), want.get(k)) for k in set(got) | set(want)
                                     if k not in VOLATILE and _sans_job_id(got.get(k)) != _sans_job_id(want.get(k))}
    assert [(a["DaskGatewayCluster"], a["DaskWorkerName"], a["RequestMemory"]) for a in ads] == [
        ("small", "small-0", 1024), ("small", "small-1", 1024), ("big", "big-5", 3072),
        ("third", "third-2", 2048), ("third", "third-3", 2048)]


def test_a_command_one_part_assigns_would_carry_over_so_such_parts_are_not_combined(pool_env, tmp_path):
    disk = part("disk", [(0, "disk-0")], request_disk="10GiB")
    plain = part("plain", [(0, "plain-0")])
    # the hazard, shown with the submit language itself: `plain` inherits `disk`'s request_disk
    ads = dry_run(pool_env, tmp_path, disk.render() + plain.render())
    alone = dry_run(pool_env, tmp_path, plain.render(), name="plain.sub")[0]
    assert ads[1]["DaskGatewayCluster"] == "plain" and ads[1]["RequestDisk"] == ads[0]["RequestDisk"] == 10 * 2**20
    assert str(alone["RequestDisk"]) != str(ads[1]["RequestDisk"])
    with pytest.raises(ValidationError, match="same submit commands"):
        CombinedDescription([disk, plain])
    docker = part("dock", [(0, "dock-0")], universe="docker", docker_image="daskdev/dask:latest")

    def plan(desc, user):
        return SubmitPlan(SimpleNamespace(name=desc["batch_name"]), None, user, [], desc, False)
    groups = _groups([plan(disk, "a"), plan(plain, "a"), plan(docker, "a"), plan(part("p2", [(1, "p2-1")]), "a"),
                      plan(part("p3", [(0, "p3-0")]), "b")], combine=True)
    assert [[p.cluster for p in g] for g in groups] == [["disk"], ["plain", "p2"], ["dock"], ["p3"]]
    assert len(_groups([plan(plain, "a"), plan(part("p2", [(1, "p2-1")]), "a")], combine=False)) == 2


# ---- end to end ------------------------------------------------------------------------------------

ONE_ROUND = """
import json
import subprocess
import sys
from htdask.state import Store, connect
from tasks.app import app
from htdask.demo.procs import wait_until
store = Store(connect())
wanted = json.loads(%r)
for c, (n, owner, options) in wanted.items():
    store.record_new_request(c, n, schedd="local", owner=owner, options=options)
store.add_pending("local", *wanted)
result = app.send_task("tasks.reconcile_pending", kwargs={"schedd": "local"}, queue="local").get(timeout=120)
wait_until(lambda: store.batches_done("local"), 60, 0.05, "rounds done")
print(json.dumps(result))
"""


def one_round(stack, wanted: dict) -> dict:
    """Record every cluster's request, then run ONE batched round (reconcile_pending) for all of them."""
    out = stack.python(ONE_ROUND % json.dumps(wanted), timeout=180)
    return json.loads(out.stdout.splitlines()[-1])


def memory_of(stack, cluster: str) -> list[tuple[str, int]]:
    out = stack.condor("condor_q", "-allusers", "-json", "-constraint", f'DaskGatewayCluster == "{cluster}"',
                       "-attributes", "DaskWorkerName,RequestMemory,ClusterId")
    assert out.returncode == 0, out.stderr
    return sorted((a["DaskWorkerName"], a["RequestMemory"]) for a in json.loads(out.stdout or "[]"))


@pytest.fixture
def stack(module_stack):
    """The module's stack from this test's start: its calls only (tests/conftest.py, since_start)."""
    return since_start(module_stack)


def test_one_round_of_one_owner_is_one_condor_submit_and_every_cluster_gets_its_jobs(stack):
    wanted = {f"multi{i}": [i + 1, None, {"memory_limit": f"{i + 1}GiB"}] for i in range(6)}
    result = one_round(stack, wanted)
    assert result["reconciled"] == 6 and not result["errors"], result
    assert len(stack.calls("condor_submit")) == 1, "one condor_submit for the round's six clusters"
    cluster_ids = set()
    for i in range(6):
        c = f"multi{i}"
        assert memory_of(stack, c) == [(f"{c}-{j}", (i + 1) * 1024) for j in range(i + 1)]
        jobs = queue_of(stack, c)
        assert sorted(j["DaskWorkerIndex"] for j in jobs) == list(range(i + 1))
        cluster_ids |= {j["ClusterId"] for j in jobs}
        assert result["clusters"][c] == {"did": "submitted", "submitted": i + 1, "desired": i + 1, "live": i + 1}
    assert len(cluster_ids) == 1, "all jobs of the round in one HTCondor cluster"
    store = store_of(stack)
    assert all(store.get(f"multi{i}").error is None for i in range(6))
    # a second request reads the queue and finds every cluster complete: nothing is submitted twice
    one_round(stack, wanted)
    assert len(stack.calls("condor_submit")) == 1


def test_two_owners_make_two_condor_submits(stack, service_user, unix_user):
    other = unix_user.pw_name
    wanted = {"own-a": [2, None, {}], "own-b": [1, other, {}], "own-c": [3, None, {}], "own-d": [2, other, {}]}
    result = one_round(stack, wanted)
    assert not result["errors"], result
    assert len(stack.calls("condor_submit")) == 2
    owners = {c: {j["Owner"] for j in queue_of(stack, c)} for c in wanted}
    assert owners == {"own-a": {service_user}, "own-b": {other}, "own-c": {service_user}, "own-d": {other}}
    assert {c: len(queue_of(stack, c)) for c in wanted} == {"own-a": 2, "own-b": 1, "own-c": 3, "own-d": 2}


def test_a_cluster_whose_description_condor_submit_refuses_fails_alone(stack):
    bad = {"extra_submit": {"requirements": "((("}}  # a ClassAd syntax error only condor_submit finds
    wanted = {f"fine{i}": [2, None, bad if i == 3 else {}] for i in range(6)}
    result = one_round(stack, wanted)
    assert set(result["errors"]) == {"fine3"}, result
    store = store_of(stack)
    assert store.get("fine3").error and "condor_submit" in store.get("fine3").error
    assert {c: len(queue_of(stack, c)) for c in wanted} == {f"fine{i}": 0 if i == 3 else 2 for i in range(6)}
    for i in range(6):
        if i != 3:
            names = sorted(j["DaskWorkerName"] for j in queue_of(stack, f"fine{i}"))
            assert names == [f"fine{i}-0", f"fine{i}-1"]
            assert store.get(f"fine{i}").error is None
    # halves down to the bad cluster: 1 + 2 + 2 + 2 calls at most for six clusters, not one per cluster twice
    assert len(stack.calls("condor_submit")) <= 7


def pool_fault(stack, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "htdask_localpool", "fault", *args], env=stack.env, cwd=str(REPO), check=True,
                   capture_output=True, timeout=30)


def test_a_short_combined_submit_leaves_the_shortfall_to_the_last_clusters_which_get_another_round(stack):
    pool_fault(stack, "submit-partial", "4")  # the schedd accepts only 4 jobs of the next submit
    wanted = {f"part{i}": [3, None, {}] for i in range(3)}
    result = one_round(stack, wanted)
    assert not result["errors"], result
    # the first submit queued the first cluster's 3 jobs and the second's first (in the round's order);
    # the two short clusters were reconciled again (names from their counters, as after any short submit)
    jobs = {c: queue_of(stack, c) for c in wanted}
    for c, js in jobs.items():
        names = [j["DaskWorkerName"] for j in js]
        assert len(js) == 3 and len(set(names)) == 3 and all(n.startswith(f"{c}-") for n in names), (c, names)
    first = min(j["ClusterId"] for js in jobs.values() for j in js)
    in_first = sorted(sum(j["ClusterId"] == first for j in js) for js in jobs.values())
    assert in_first == [0, 1, 3], in_first
    assert len(stack.calls("condor_submit")) == 2


@pytest.mark.stack
def test_a_combined_submit_that_timed_out_is_not_submitted_again_in_the_round(service_user):
    # killed before it committed here; after its commit elsewhere: splitting it could queue jobs twice
    with make_stack(service_user, CONDOR_TIMEOUT="2") as stack:
        pool_fault(stack, "submit-delay", "5")
        wanted = {f"slow{i}": [2, None, {}] for i in range(4)}
        result = one_round(stack, wanted)
        assert set(result["errors"]) == set(wanted), result
        assert len(stack.calls("condor_submit")) == 1
        pool_fault(stack, "clear")
        result = one_round(stack, wanted)  # the next round reads the queue, then submits
        assert not result["errors"], result
        assert {c: len(queue_of(stack, c)) for c in wanted} == {c: 2 for c in wanted}


# ---- issue 23 item 2: a submit that committed but reported a failure -------------------------------

#: condor_submit of the local pool, and then, as a schedd that times out after the commit answers: exit 1 with
#: "Failed to commit". The mode file says what to do: "fail" (commit once, then fail), "twice" (a schedd that
#: committed the same transaction twice, then failed: duplicates that slipped through), else pass through.
FAILING_SUBMIT = r'''#!/usr/bin/env python3
import os, subprocess, sys
mode = open({mode!r}).read().strip() if os.path.exists({mode!r}) else ""
data = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
for _ in range(2 if mode == "twice" else 1):
    out = subprocess.run([{real!r}, *sys.argv[1:]], input=data, capture_output=True)
if mode in ("fail", "twice") and out.returncode == 0:
    sys.stdout.buffer.write(out.stdout)
    sys.stderr.write("\nERROR: Failed to commit job submission into the queue.\n")
    sys.exit(1)
sys.stdout.buffer.write(out.stdout)
sys.stderr.buffer.write(out.stderr)
sys.exit(out.returncode)
'''


@pytest.fixture
def failing_submit():
    """(CONDOR_BIN_DIR with condor_submit wrapped as FAILING_SUBMIT, its mode file). Outside pytest's private
    tmp dir: condor_submit runs as the service user."""
    import os
    import shutil
    import tempfile
    from htdask.demo.services import install_pool
    base = Path(tempfile.mkdtemp(prefix="htdask-commitfail-"))
    base.chmod(0o755)
    pool_bin = install_pool(base / "pool")
    bindir = base / "condor-bin"
    bindir.mkdir()
    mode = base / "mode"
    mode.write_text("")
    mode.chmod(0o644)
    for prog in os.listdir(pool_bin):
        if prog == "condor_submit":
            (bindir / prog).write_text(FAILING_SUBMIT.format(mode=str(mode), real=str(pool_bin / prog)))
            (bindir / prog).chmod(0o755)
        else:
            (bindir / prog).symlink_to(pool_bin / prog)
    yield str(bindir), mode
    shutil.rmtree(base)


def names_of(stack, cluster: str) -> list[str]:
    return sorted(j["DaskWorkerName"] for j in queue_of(stack, cluster) if j["JobStatus"] in (1, 2, 5))


def test_of_live_jobs_sharing_a_name_every_one_but_the_oldest_goes():
    from htdask.domain.workerjobs import Job, newer_duplicates
    jobs = [Job("10.0", 1, 0, "c-0"), Job("9.1", 2, 0, "c-0"), Job("9.0", 2, 1, "c-1"), Job("12.3", 1, 0, "c-0"),
            Job("11.0", 1, 2, "c-2"), Job("13.0", 1, -1, "")]
    assert [j.job_id for j in newer_duplicates(jobs)] == ["10.0", "12.3"], "by (ClusterId, ProcId), not as text"
    assert newer_duplicates(jobs[2:3] + jobs[4:]) == []


def test_a_combined_submit_that_committed_but_reported_failure_is_not_submitted_again(service_user,
                                                                                       failing_submit):
    bindir, mode = failing_submit
    with make_stack(service_user, CONDOR_BIN_DIR=bindir) as stack:
        mode.write_text("fail")
        wanted = {"ca": [2, None, {}], "cb": [3, None, {}]}
        result = one_round(stack, wanted)
        assert len(stack.calls("condor_submit")) == 1, "the queue was read, not submitted to again"
        assert not result["errors"], result
        assert result["clusters"]["ca"]["submitted"] == 2 and result["clusters"]["cb"]["submitted"] == 3
        assert names_of(stack, "ca") == ["ca-0", "ca-1"] and names_of(stack, "cb") == ["cb-0", "cb-1", "cb-2"]
        log = (stack.logdir / "worker1.log").read_text()
        assert "condor_submit reported a failure" in log and "they are kept, not submitted again" in log
        mode.write_text("")
        one_round(stack, wanted)  # the next round finds both complete
        assert len(stack.calls("condor_submit")) == 1 and not stack.calls("condor_rm")
        assert names_of(stack, "ca") == ["ca-0", "ca-1"] and names_of(stack, "cb") == ["cb-0", "cb-1", "cb-2"]


def test_duplicates_that_slip_through_lose_the_newer_job_by_id_never_both(service_user, failing_submit):
    bindir, mode = failing_submit
    with make_stack(service_user, CONDOR_BIN_DIR=bindir) as stack:
        mode.write_text("twice")  # every job queued twice (two HTCondor clusters), then "Failed to commit"
        result = one_round(stack, {"ca": [2, None, {}], "cb": [1, None, {}]})
        assert not result["errors"], result
        assert len(stack.calls("condor_submit")) == 2, "the wrapper's two commits; the controller's one call"
        jobs = {c: [j for j in queue_of(stack, c) if j["JobStatus"] in (1, 2, 5)] for c in ("ca", "cb")}
        assert sorted(j["DaskWorkerName"] for j in jobs["ca"]) == ["ca-0", "ca-1"]
        assert [j["DaskWorkerName"] for j in jobs["cb"]] == ["cb-0"]
        kept = {f"{j['ClusterId']}.{j['ProcId']}" for js in jobs.values() for j in js}
        rm = [json.loads(r[2]) for r in stack.calls("condor_rm")]
        constraints = [argv[argv.index("-constraint") + 1] for argv in rm]
        assert rm and not any("DaskWorkerIndex" in c or "DaskWorkerName" in c for c in constraints), "by job id"
        removed = _job_ids_of(constraints)
        assert len(removed) == 3 and not removed & kept, (removed, kept)
        # the older job of each name stays: the first commit's HTCondor cluster, the second's removed
        assert len({k.split(".")[0] for k in kept}) == 1 and len({r.split(".")[0] for r in removed}) == 1
        assert int(min(kept).split(".")[0]) < int(min(removed).split(".")[0])
        log = (stack.logdir / "worker1.log").read_text()
        assert "carry a worker name an older live job has" in log


def _job_ids_of(constraints: list[str]) -> set[str]:
    """The job ids 'C.P' that removal constraints name (htdask.domain.jobspec.job_id_terms: ranges and members)."""
    out = set()
    for c in constraints:
        for cid, first, last in re.findall(r"ClusterId == (\d+) && ProcId >= (\d+) && ProcId <= (\d+)", c):
            out |= {f"{cid}.{p}" for p in range(int(first), int(last) + 1)}
        for cid, procs in re.findall(r"ClusterId == (\d+) && member\(ProcId, \{([\d,]+)\}\)", c):
            out |= {f"{cid}.{p}" for p in procs.split(",")}
    return out
