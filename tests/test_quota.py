"""Quotas per owner through the real path: redis-server, a Celery worker, the local pool, the CLI, the
exporter; jobs run as two fresh Unix users (needs root).

Limits come from the settings of the process that enqueues (here: the stack's environment, overridden
per CLI call to lower a quota); the check is in the script that records the request.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests

from htdask.demo import services, users
from htdask.demo.services import REPO, Stack
from htdask.state import Store, connect
from tests.conftest import live, needs, wait_until
from workers.htcondor.queue_parser import parse_ads_text

#: every process enqueues with these (QUOTA_FILE gives the second owner 4 workers)
SITE_WORKERS, SITE_CLUSTERS, FILE_WORKERS = 6, 2, 4


@pytest.fixture(scope="module")
@needs("root")
def owners():
    if os.geteuid() != 0:
        pytest.skip("creating Unix users needs root (CI runs as root)")
    with users.temporary_user("htqa", home=False) as a, users.temporary_user("htqb", home=False) as b, \
            users.temporary_user("htqc", home=False) as c:
        yield a.pw_name, b.pw_name, c.pw_name


@pytest.fixture(scope="module")
@needs("stack")
def stack(owners, service_user, tmp_path_factory):
    quota_file = tmp_path_factory.mktemp("quota") / "quota.yaml"
    quota_file.write_text(f"owners:\n  {owners[1]}: {{workers: {FILE_WORKERS}}}\n")
    with Stack(DEFAULT_OWNER=service_user, DASK_WORKER_COMMAND=str(services.FAKE_WORKER), exporter=True,
               DASK_SCHEDULER_ADDRESS="tcp://127.0.0.1:8786", POLL_INTERVAL="60", SCHEDD_MIN_INTERVAL="0",
               RETIRE_TIMEOUT="0", QUOTA_MAX_WORKERS=str(SITE_WORKERS), QUOTA_MAX_CLUSTERS=str(SITE_CLUSTERS),
               QUOTA_FILE=str(quota_file)) as s:
        yield s


def cli(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], env={**stack.env, **env}, cwd=str(REPO),
                          capture_output=True, text=True, timeout=120)


def jobs_by_owner(stack: Stack) -> dict[str, int]:
    """Live (idle, running, held) worker jobs in the pool, per Owner (the pool's own condor_q)."""
    out = stack.condor("condor_q", "-allusers", "-json", "-constraint", "DaskGatewayCluster =!= undefined",
                       "-attributes", "ClusterId,ProcId,JobStatus,Owner")
    assert out.returncode == 0, out.stderr
    counts: dict[str, int] = {}
    for ad in parse_ads_text(out.stdout):
        if ad["JobStatus"] in (1, 2, 5):
            counts[ad["Owner"]] = counts.get(ad["Owner"], 0) + 1
    return counts


# Growth only (each process its own clusters, counts that only go up): a pool count over a limit could
# then only come from two requests passing it together.
HAMMER = r"""
import json, os, random, sys
from htdask.state import Store, connect
from htdask.state.quota import QuotaExceeded
from tasks import api
owner, proc = sys.argv[1], int(sys.argv[2])
store = Store(connect(os.environ["REDIS_URL"]))
rnd = random.Random(proc)
counts = {f"{owner[-6:]}-p{proc}-{i}": 0 for i in range(2)}
out = {"granted": 0, "refused": [], "cut": []}
step = 2
for _ in range(12):
    cluster = rnd.choice(sorted(counts))
    n = counts[cluster] + rnd.randint(1, step)
    try:
        got = api.enqueue_scale(store, cluster, n, owner=owner)
        counts[cluster] = got.granted
        out["granted"] += 1
        if got.note:
            out["cut"].append(got.note)
    except QuotaExceeded as e:
        out["refused"].append(str(e))
        step = 1  # then one more at a time: the quota fills up exactly
print(json.dumps(out))
"""


def test_two_owners_hammering_from_several_processes_never_pass_their_quotas(stack, owners):
    """Three processes per owner at once, one owner refused past its quota and the other granted up to it:
    the jobs in the pool never pass 2 clusters and 6 (site) / 4 (quota file) workers per owner."""
    ann, bea = owners[0], owners[1]
    limit = {ann: SITE_WORKERS, bea: FILE_WORKERS}
    procs = [subprocess.Popen([sys.executable, "-c", HAMMER, owner, str(i)], cwd=str(REPO), text=True,
                              env={**stack.env, "QUOTA_MODE": "refuse" if owner == ann else "grant"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i, owner in enumerate([ann, bea] * 3)]
    most: dict[str, int] = {}
    while any(p.poll() is None for p in procs):  # the pool sampled while the requests arrive
        for owner, n in jobs_by_owner(stack).items():
            most[owner] = max(most.get(owner, 0), n)
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    refused = [line for r in results[0::2] for line in r["refused"]]
    cut = [line for r in results[1::2] for line in r["cut"]]
    assert refused and all("refused: " in line and f"quota of owner {ann} is" in line for line in refused)
    assert cut and all(f"quota of owner {bea} is" in line for line in cut)
    store = Store(connect(stack.redis.url))
    records = [r for r in store.get_many(store.cluster_names()).values() if r and r.owner in limit]
    for owner in (ann, bea):
        mine = [r for r in records if r.owner == owner]
        assert 1 <= len(mine) <= SITE_CLUSTERS
        assert sum(r.desired for r in mine) == limit[owner]  # they asked for more than fits: all of it granted
    # the pool converges to exactly the recorded state, and never held more than the quota on the way
    wait_until(lambda: {o: n for o, n in jobs_by_owner(stack).items() if o in limit} == limit, timeout=120,
               message="the pool holds each owner's quota of jobs")
    for owner, n in jobs_by_owner(stack).items():
        most[owner] = max(most.get(owner, 0), n)
    assert most[ann] <= SITE_WORKERS and most[bea] <= FILE_WORKERS, most
    # use against quota per owner: status and the metrics
    out = cli(stack, "status", "--json")
    assert out.returncode == 0, out.stderr
    quotas = {q["owner"]: q for q in json.loads(out.stdout)["quotas"]}
    assert quotas[bea]["workers"] == FILE_WORKERS and quotas[bea]["limits"]["workers"] == FILE_WORKERS
    assert quotas[ann]["limits"] == {"clusters": 2, "workers": 6, "cores": 0, "memory": 0, "gpus": 0}
    metrics = requests.get(stack.exporter_url + "metrics", timeout=10).text
    assert f'htdask_owner_quota_used{{owner="{bea}",resource="workers"}} 4.0' in metrics
    assert f'htdask_owner_quota_limit{{owner="{bea}",resource="workers"}} 4.0' in metrics
    page = requests.get(stack.exporter_url, timeout=10).text
    assert 'id="quotas"' in page and f"<td>{bea}</td>" in page


def test_refusals_and_grants_name_the_quota_and_a_lowered_quota_kills_nothing(stack, owners):
    cat = owners[2]
    c1, c2, c3 = (f"{cat[-6:]}-{i}" for i in range(3))
    out = cli(stack, "scale", c1, "4", "--owner", cat)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: len(live(stack, c1)) == 4, timeout=60, message="4 jobs of c1")
    jobs = sorted((a["ClusterId"], a["ProcId"]) for a in live(stack, c1))
    removes = len(stack.calls("condor_rm"))

    lowered = {"QUOTA_MAX_WORKERS": "2"}
    out = cli(stack, "scale", c1, "5", "--owner", cat, **lowered)  # refused: growth past the lowered quota
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert lines == [f"error: cluster {c1}: refused: workers quota of owner {cat} is 2: 0 in use by its other "
                     f"clusters, 1 per worker; 4 of the 5 workers asked fit"], out.stderr
    store = Store(connect(stack.redis.url))
    assert store.get(c1).desired == 4  # nothing recorded
    # granted up to the quota: no growth; --wait sees the request served (a poll shows 4 jobs)
    out = cli(stack, "scale", c1, "6", "--owner", cat, "--wait", "--timeout", "60", QUOTA_MODE="grant", **lowered)
    assert out.returncode == 0, out.stderr
    assert f"note: cluster {c1}: 4 of 6 workers granted: workers quota of owner {cat} is 2" in out.stderr
    assert f"cluster {c1}: scale to 4 enqueued" in out.stdout
    out = cli(stack, "scale", c2, "1", "--owner", cat, **lowered)  # another cluster cannot grow either
    assert out.returncode == 2 and out.stderr.strip() == (
        f"error: cluster {c2}: refused: workers quota of owner {cat} is 2: 4 in use by its other clusters, 1 per "
        f"worker; 0 of the 1 workers asked fit"), out.stderr
    status = cli(stack, "status", c1)
    assert "cut down by quota: workers quota of owner" in status.stdout, status.stdout
    assert f"{cat}" in status.stdout and "1/2" in status.stdout  # use against quota: 1 of 2 clusters
    # the lowered quota killed nothing: the request was served and the same 4 jobs run
    assert sorted((a["ClusterId"], a["ProcId"]) for a in live(stack, c1)) == jobs
    assert len(stack.calls("condor_rm")) == removes

    # a scale-down always passes; then the freed workers fit another cluster
    assert cli(stack, "scale", c1, "1", "--owner", cat, **lowered).returncode == 0
    out = cli(stack, "scale", c2, "1", "--owner", cat, **lowered)
    assert out.returncode == 0, out.stderr
    out = cli(stack, "scale", c3, "0", "--owner", cat)  # a third cluster: the clusters quota
    assert out.returncode == 2 and out.stderr.strip() == (
        f"error: cluster {c3}: refused: clusters quota of owner {cat} is 2: it has 2"), out.stderr
    wait_until(lambda: len(live(stack, c1)) == 1 and len(live(stack, c2)) == 1, timeout=60,
               message="c1 and c2 at one job each")
    # a delete releases the cluster: the third one fits now
    out = cli(stack, "delete", c2, "--wait")
    assert out.returncode == 0, out.stderr
    assert c2 not in store.quota_use([cat])[cat]["members"]
    assert cli(stack, "scale", c3, "1", "--owner", cat).returncode == 0
    wait_until(lambda: len(live(stack, c3)) == 1, timeout=60, message="c3 runs")
