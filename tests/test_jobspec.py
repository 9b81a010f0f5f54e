"""htdask.domain.jobspec: the worker submit description (pinned text), quoting round trips, refusals."""
from __future__ import annotations


import classad2
import htcondor2
import pytest

from htdask.domain.jobspec import (CONSTRAINT_MAX, POLL_PROJECTION, WorkerJobSpec, cluster_constraint,
                             default_worker_command, job_id_terms, jobs_constraints, ours_constraint,
                             worker_submit_description)
from htdask.domain.pyenv import job_python
from htdask.domain.validation import ValidationError


def parse_new_syntax(value: str) -> list[str]:
    """HTCondor's "new" argument syntax (htcondor-jdl: arguments / environment), for the tests.

    Whole value in double quotes; "" is a literal "; whitespace separates words; '...' groups
    (whitespace kept), '' inside a single-quoted section is a literal '.
    """
    assert value.startswith('"') and value.endswith('"'), value
    body = value[1:-1]
    assert '"' not in body.replace('""', ""), f"lone double quote in {value!r}"
    body = body.replace('""', '"')
    words, cur, started, quoted, i = [], [], False, False, 0
    while i < len(body):
        c = body[i]
        if quoted:
            if c == "'":
                if body[i + 1:i + 2] == "'":
                    cur.append("'")
                    i += 2
                    continue
                quoted = False
            else:
                cur.append(c)
            i += 1
            continue
        if c == "'":
            quoted = started = True
        elif c.isspace():
            if started:
                words.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(c)
            started = True
        i += 1
    assert not quoted, f"unterminated single quote in {value!r}"
    if started:
        words.append("".join(cur))
    return words


def parse_new_env(value: str) -> dict[str, str]:
    return dict(w.split("=", 1) for w in parse_new_syntax(value))


def test_parser_against_the_manual_example():
    ex = "\"one=1 two=\"\"2\"\" three='spacey ''quoted'' value'\""
    assert parse_new_env(ex) == {"one": "1", "two": '"2"', "three": "spacey 'quoted' value"}


def spec(**kw) -> WorkerJobSpec:
    base = dict(cluster="demo", owner="alice", scheduler_address="tcp://10.0.0.1:8786",
                worker_command=["/opt/venv/bin/python", "-m", "distributed.cli.dask_worker"],
                nthreads=2, memory_limit="4 G", log_dir="/var/log/htdask")
    base.update(kw)
    return WorkerJobSpec(**base)


PINNED = """\
universe = vanilla
executable = /var/spool/htdask/worker-start-{digest}.sh
transfer_executable = true
arguments = "/opt/venv/bin/python -m distributed.cli.dask_worker tcp://10.0.0.1:8786 --name $(DaskWorkerName) --nthreads 2 --memory-limit 4GiB --no-dashboard --death-timeout 60"
environment = "DASK_GATEWAY_CLUSTER_NAME=demo DASK_GATEWAY_SCHEDULER_ADDRESS=tcp://10.0.0.1:8786 DASK_GATEWAY_SCHEDULER_PORT=8786 DASK_GATEWAY_WORKER_NAME=$(DaskWorkerName)"
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
on_exit_hold = ExitCode =?= 86
on_exit_hold_reason = "{reason}"
on_exit_hold_subcode = 86
request_cpus = 2
request_memory = 4096
batch_name = demo
LogDir = /var/log/htdask
output = $(LogDir)/demo-$(DaskWorkerIndex).$(Cluster).$(Process).out
error = $(LogDir)/demo-$(DaskWorkerIndex).$(Cluster).$(Process).err
stream_output = true
stream_error = true
log = $(LogDir)/demo.log
submit_event_notes = DaskWorkerName=$(DaskWorkerName)
MY.DaskGatewayCluster = "demo"
MY.DaskClusterOwner = "alice"
MY.DaskWorkerName = "$(DaskWorkerName)"
MY.DaskWorkerIndex = $(DaskWorkerIndex)
queue DaskWorkerIndex,DaskWorkerName from (
5,demo-5
6,demo-6
)
"""


def test_two_items_pinned_text(monkeypatch):
    """The executable is the start script from the spool; nothing is read from a submit-side path on the
    execute host (the worker command is the script's argument, looked up there)."""
    from htdask.domain import jobfiles, spool
    monkeypatch.setenv("SPOOL_DIR", "/var/spool/htdask")
    desc = worker_submit_description(spec(), [(5, "demo-5"), (6, "demo-6")])
    assert desc.render() == PINNED.replace("{digest}", spool._digest()).replace("{reason}", jobfiles.MISSING_REASON)
    assert desc.num_jobs == 2


def test_htcondor_reads_it_the_same_way():
    desc = worker_submit_description(spec(), [(5, "demo-5"), (6, "demo-6")])
    sub = htcondor2.Submit(desc.render())
    assert dict(sub) == desc.commands()
    assert list(sub.itemdata()) == [{"DaskWorkerIndex": "5", "DaskWorkerName": "demo-5"},
                                    {"DaskWorkerIndex": "6", "DaskWorkerName": "demo-6"}]


def test_full_spec_with_tls_ports_dashboard_docker_and_extras(monkeypatch):
    monkeypatch.delenv("DASK_WORKER_COMMAND", raising=False)
    s = spec(universe="docker", docker_image="ghcr.io/dask/dask:2026.8.0", worker_command=None,
             tls_cert="/etc/dask/dask.crt", tls_key="/etc/dask/dask.pem",
             scheduler_address="tls://sched.example.org:8786", api_url="https://gw.example.org/api",
             api_token="/etc/dask/api-token", worker_port_range="40000:40100",
             nanny_port_range="40200:40300", dashboard=True, dashboard_port=8787, death_timeout=30.5,
             extra_args=["--resources", "GPU=1 MEM=2"], request_cpus=4, request_memory="6GiB",
             request_disk="10G", extra_submit={"+ProjectName": '"physics"', "requirements": "HasDocker"},
             environment={"OMP_NUM_THREADS": "1", "NOTE": "it's \"fine\""})
    desc = worker_submit_description(s, [(0, "w0")])
    assert desc["universe"] == "docker"
    assert desc["docker_image"] == "ghcr.io/dask/dask:2026.8.0"
    assert desc["executable"].endswith(".sh") and desc["transfer_executable"] == "true"
    # on the bridge network: no --worker-port/--nanny-port (the container ports, published by HTCondor, see below)
    assert parse_new_syntax(desc["arguments"]) == [
        "dask", "worker", "tls://sched.example.org:8786", "--name", "$(DaskWorkerName)", "--nthreads", "2",
        "--memory-limit", "4GiB",
        "--dashboard-address", ":8787", "--death-timeout", "30.5", "--resources", "GPU=1 MEM=2"]
    assert (desc["container_service_names"], desc["dask_container_port"], desc["nanny_container_port"]) == \
        ("dask,nanny", "8788", "8789")
    # the secrets come by file transfer, encrypted, named by their sandbox names
    files = "/etc/dask/api-token,/etc/dask/dask.crt,/etc/dask/dask.pem"
    assert desc["should_transfer_files"] == "YES"
    assert desc["transfer_input_files"] == files and desc["encrypt_input_files"] == files
    env = parse_new_env(desc["environment"])
    assert env["DASK_GATEWAY_API_URL"] == "https://gw.example.org/api"
    assert env["DASK_GATEWAY_API_TOKEN"] == "./api-token"
    assert env["DASK_GATEWAY_DASHBOARD_PORT"] == "8787"
    assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == "dask.crt"
    assert env["DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT"] == "dask.crt"
    assert env["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"] == "dask.pem"
    assert (env["HTDASK_SERVICE"], env["HTDASK_PROTOCOL"]) == ("dask:8788", "tls")
    assert env["HTDASK_NANNY_SERVICE"] == "nanny:8789"
    assert env["NOTE"] == "it's \"fine\"" and env["OMP_NUM_THREADS"] == "1"
    assert desc["request_cpus"] == "4"
    assert desc["request_memory"] == "6144"
    assert desc["request_disk"] == str(10 * 2**20)
    assert desc["MY.ProjectName"] == '"physics"'
    assert desc["requirements"] == "HasDocker"


@pytest.mark.parametrize("args", [
    ["plain"], ["with space"], ["it's"], ['say "hi"'], ["''"], [""], ["a'b c\"d"],
    ["two  spaces"], ["x=1 y=2", "--flag", "'quoted'"], ["\\back\\slash\\"],
])
def test_arguments_quoting_round_trip(args):
    desc = worker_submit_description(spec(extra_args=args), [(0, "w0")])
    words = parse_new_syntax(desc["arguments"])
    assert words[-len(args):] == args


@pytest.mark.parametrize("value", [
    "plain", "with space", "it's", 'say "hi"', "''", "", "a'b c\"d", "\\", "=x=y=", "ünïcode",
])
def test_environment_quoting_round_trip(value):
    desc = worker_submit_description(spec(environment={"V": value}), [(0, "w0")])
    assert parse_new_env(desc["environment"])["V"] == value


def test_default_worker_command(monkeypatch):
    monkeypatch.delenv("DASK_WORKER_COMMAND", raising=False)
    assert default_worker_command() == [job_python()[0], "-m", "distributed.cli.dask_worker"]
    assert WorkerJobSpec("c", "o", "tcp://h:1").worker_command == [job_python()[0], "-m",
                                                                   "distributed.cli.dask_worker"]
    assert default_worker_command("docker") == ["dask", "worker"]
    monkeypatch.setenv("DASK_WORKER_COMMAND", "/usr/local/bin/dask worker --preload 'my mod'")
    assert WorkerJobSpec("c", "o", "tcp://h:1").worker_command == [
        "/usr/local/bin/dask", "worker", "--preload", "my mod"]


def test_image_default_from_env(monkeypatch):
    monkeypatch.setenv("DASK_WORKER_IMAGE", "registry.example.org/dask:1")
    assert WorkerJobSpec("c", "o", "tcp://h:1").docker_image == "registry.example.org/dask:1"
    monkeypatch.delenv("DASK_WORKER_IMAGE")
    assert WorkerJobSpec("c", "o", "tcp://h:1").docker_image == "ghcr.io/dask/dask:latest"


def test_no_log_dir_no_output_lines():
    desc = worker_submit_description(spec(log_dir=None), [(0, "w0")])
    assert "output" not in desc and "log" not in desc and "LogDir" not in desc


BAD_SPECS = [
    (dict(cluster="Demo"), "cluster name"),
    (dict(cluster='demo"\nqueue'), "cluster name"),
    (dict(owner='al"ice\nMY.Owner = "root"'), "cluster owner"),
    (dict(owner="$(Owner)"), "cluster owner"),
    (dict(owner=""), "cluster owner"),
    (dict(scheduler_address="tcp://x:1 --evil"), "scheduler address"),
    (dict(scheduler_address='tcp://x":1'), "scheduler address"),
    (dict(environment={"A": 'x" \n queue'}), "worker environment"),
    (dict(environment={"A": "$(Cluster)"}), "worker environment"),
    (dict(environment={"A": "a\x00b"}), "worker environment"),
    (dict(environment={"DASK_GATEWAY_CLUSTER_NAME": "other"}), "overridden"),
    (dict(extra_args=["--x", "a\nqueue 100"]), "extra worker argument"),
    (dict(extra_args=["$(Cluster)"]), "extra worker argument"),
    (dict(extra_args=["tab\there"]), "control character"),
    (dict(extra_args="--oops"), "list of words"),
    (dict(worker_command=["/bin/py thon"]), "worker command"),
    (dict(worker_command=["-c"]), "worker command"),
    (dict(worker_command=[]), "worker command"),
    (dict(nthreads=0), "nthreads"),
    (dict(nthreads=True), "nthreads"),
    (dict(nthreads=1.5), "nthreads"),
    (dict(memory_limit="lots"), "memory limit"),
    (dict(memory_limit=10), "memory limit"),
    (dict(universe="grid"), "universe"),
    (dict(universe="docker", docker_image="Bad Image"), "docker image"),
    (dict(worker_port_range="9:8"), "worker port range"),
    (dict(dashboard="yes"), "dashboard"),
    (dict(death_timeout=-1), "death timeout"),
    (dict(log_dir="relative"), "log directory"),
    (dict(log_dir="/tmp/a b"), "log directory"),
    (dict(tls_cert="/etc/c.crt"), "TLS"),
    (dict(api_url="ftp://x"), "API URL"),
    (dict(api_token="tok\nqueue"), "API token"),
    (dict(api_token="a-token-value"), "API token"),
    (dict(tls_cert="rel.crt", tls_key="/k.pem"), "TLS certificate"),
    (dict(tls_cert="/a/x.pem", tls_key="/b/x.pem"), "same file name"),
    (dict(universe="container", container_image="/cvmfs/x.sif"), "allowed prefix"),
    (dict(container_image="/cvmfs/x.sif"), "universe 'container'"),
    (dict(docker_network="none"), "docker network"),
    (dict(request_gpus=0, gpu_capability=7.0), "need request_gpus"),
    (dict(request_gpus=1, gpu_capability="high"), "GPU capability"),
    (dict(extra_submit={"executable": "/bin/evil"}), "set by the controller"),
    (dict(extra_submit={"+DaskGatewayCluster": '"other"'}), "set by the controller"),
    (dict(extra_submit={"queue": "5"}), "queue"),
    (dict(extra_submit={"requirements": "true\nqueue 100"}), "line break"),
    (dict(extra_submit={"+X": '"$(Owner)"'}), "macro"),
    (dict(request_cpus=0), "request_cpus"),
]


@pytest.mark.parametrize("kw,word", BAD_SPECS)
def test_bad_spec_values_rejected(kw, word):
    with pytest.raises(ValidationError) as e:
        worker_submit_description(spec(**kw), [(0, "w0")])
    assert word in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("items", [
    [], [(0, "a b")], [(0, "a,b")], [(-1, "w")], [(True, "w")], [("1", "w")], [(0, "w"), (0, "x")],
    [(0, "w"), (1, "w")], [(0, "$(Cluster)")], [(0,)], ["w0"],
])
def test_bad_items_rejected(items):
    with pytest.raises(ValidationError):
        worker_submit_description(spec(), items)


def test_constraints():
    assert cluster_constraint("demo") == 'DaskGatewayCluster == "demo"'
    assert ours_constraint() == "DaskGatewayCluster =!= undefined"
    assert jobs_constraints("demo", ["12.3", "12.1", "13.0", "12.1"]) == \
        ['DaskGatewayCluster == "demo" && ((ClusterId == 12 && member(ProcId, {1,3})) || '
         '(ClusterId == 13 && member(ProcId, {0})))']
    # runs of three or more ProcIds are one range: a 25,900-job scale-down is one short constraint
    assert jobs_constraints("big", [f"12.{p}" for p in range(100, 26000)]) == \
        ['DaskGatewayCluster == "big" && ((ClusterId == 12 && ProcId >= 100 && ProcId <= 25999))']
    for bad in ('de"mo', "Demo", "x\ny"):
        with pytest.raises(ValidationError):
            cluster_constraint(bad)
    for bad_ids in ([], ["1) || true || member(1, {1"], ["12"], [3]):
        with pytest.raises(ValidationError):
            jobs_constraints("demo", bad_ids)


def test_job_constraints_are_bounded_and_match_exactly_the_jobs_named():
    """Issue 23 item 5: any list of jobs (here every other ProcId of 60,000, which no range shortens) is
    split into constraints of at most CONSTRAINT_MAX characters (one argv word each; Linux refuses a word
    over 128 KiB), which together match exactly those jobs of that cluster."""
    ids = [f"7.{p}" for p in range(0, 60000, 2)] + [f"9.{p}" for p in range(50)] + ["8.5", "8.6"]
    parts = jobs_constraints("demo", ids)
    assert len(parts) > 1 and all(len(c) <= CONSTRAINT_MAX for c in parts)
    terms = job_id_terms(ids)
    assert "ClusterId == 9 && ProcId >= 0 && ProcId <= 49" in terms
    assert "ClusterId == 8 && member(ProcId, {5,6})" in terms

    def matches(expr, c, p, cluster="demo"):
        ad = classad2.ClassAd({"DaskGatewayCluster": cluster, "ClusterId": c, "ProcId": p})
        ad["Q"] = classad2.ExprTree(expr)
        return ad.eval("Q") is True

    exprs = [classad2.ExprTree(c) for c in parts]  # each parses
    assert exprs
    for c, p, want in [(7, 0, True), (7, 1, False), (7, 59998, True), (7, 60000, False), (9, 0, True),
                       (9, 49, True), (9, 50, False), (8, 5, True), (8, 7, False), (10, 0, False)]:
        assert sum(matches(e, c, p) for e in parts) == int(want), (c, p)
        assert not any(matches(e, c, p, "other") for e in parts)


def test_constraints_evaluate_in_classads():
    ours = classad2.ClassAd({"DaskGatewayCluster": "demo", "DaskWorkerIndex": 2})
    other = classad2.ClassAd({"DaskGatewayCluster": "demo2", "DaskWorkerIndex": 2})
    foreign = classad2.ClassAd({"Owner": "bob"})

    def matches(ad, expr):
        ad["Q"] = classad2.ExprTree(expr)
        return ad.eval("Q") is True

    assert matches(ours, cluster_constraint("demo"))
    assert not matches(other, cluster_constraint("demo"))
    ours["ClusterId"], ours["ProcId"] = 4, 2
    assert matches(ours, jobs_constraints("demo", ["4.1", "4.2"])[0])
    assert not matches(ours, jobs_constraints("demo", ["4.1", "4.3", "5.2"])[0])
    assert matches(ours, ours_constraint()) and not matches(foreign, ours_constraint())


def test_poll_projection():
    for a in ("ClusterId", "ProcId", "JobStatus", "DaskGatewayCluster", "DaskWorkerName", "DaskWorkerIndex",
              "DaskClusterOwner", "EnteredCurrentStatus", "HoldReason", "HoldReasonCode", "ExitCode",
              "NumJobStarts", "QDate", "Owner"):
        assert a in POLL_PROJECTION


def test_a_token_value_is_refused_without_echoing_it():
    with pytest.raises(ValidationError) as e:
        worker_submit_description(spec(api_token="s3cr3t-token-value"), [(0, "w0")])
    assert "s3cr3t" not in str(e.value) and "file on the submit node" in str(e.value)


def test_apptainer_image_gpus_host_network_and_packed_env(monkeypatch):
    monkeypatch.setenv("ALLOWED_IMAGE_PREFIXES", "/cvmfs/unpacked.cern.ch/")
    image = "/cvmfs/unpacked.cern.ch/registry.hub.docker.com/coffeateam/coffea-dask:latest"
    desc = worker_submit_description(spec(universe="container", container_image=image, worker_command=None,
                                          request_gpus=2, gpu_capability=7.5, gpu_memory="16GiB"), [(0, "w0")])
    assert (desc["universe"], desc["container_image"]) == ("container", image)
    assert parse_new_syntax(desc["arguments"])[:2] == ["dask", "worker"]
    assert desc["request_gpus"] == "2" and desc["require_gpus"] == "Capability >= 7.5 && GlobalMemoryMb >= 16384"
    assert htcondor2.Submit(desc.render())["require_gpus"] == desc["require_gpus"]
    monkeypatch.setenv("APPTAINER_AS_ATTRIBUTE", "1")  # OSG style: vanilla + SingularityImage
    desc = worker_submit_description(spec(universe="container", container_image=image), [(0, "w0")])
    assert desc["universe"] == "vanilla" and desc["MY.SingularityImage"] == f'"{image}"'
    desc = worker_submit_description(spec(universe="docker", docker_network="host", worker_port_range="40000:40100"),
                                     [(0, "w0")])
    assert desc["docker_network_type"] == "host" and desc.get("container_service_names") is None
    assert "--worker-port" in parse_new_syntax(desc["arguments"])  # port ranges stay on the host's network
    desc = worker_submit_description(spec(universe="docker", extra_args=["--no-nanny"]), [(0, "w0")])
    assert desc["container_service_names"] == "dask" and "nanny_container_port" not in desc.commands()
    assert "HTDASK_NANNY_SERVICE" not in parse_new_env(desc["environment"])  # no nanny: one published port
    desc = worker_submit_description(spec(worker_command=None, packed_env="/srv/envs/dask.tar.gz"), [(0, "w0")])
    assert parse_new_syntax(desc["arguments"])[0] == "env/bin/python"
    assert desc["transfer_input_files"] == "/srv/envs/dask.tar.gz"
    assert parse_new_env(desc["environment"])["HTDASK_PACKED_ENV"] == "dask.tar.gz"
    desc = worker_submit_description(spec(worker_command=None, worker_python="/cvmfs/sft.cern.ch/bin/python3"),
                                     [(0, "w0")])
    assert parse_new_syntax(desc["arguments"])[0] == "/cvmfs/sft.cern.ch/bin/python3"


def test_workers_reach_a_scheduler_through_the_gateway_proxy():
    """gateway://proxy:port/<cluster>: dask-gateway's comm in nanny and worker, which listen on TLS."""
    desc = worker_submit_description(spec(scheduler_address="gateway://10.0.0.1:8000/c0ffee", universe="docker",
                                          tls_cert="/s/dask.crt", tls_key="/s/dask.pem"), [(0, "w0")])
    argv = parse_new_syntax(desc["arguments"])
    assert argv[argv.index("--protocol") + 1] == "tls" and argv.count("dask_gateway.comm") == 2
    assert parse_new_env(desc["environment"])["HTDASK_PROTOCOL"] == "tls"
    # dask-gateway's KubeBackend names a cluster `<namespace>.<name>` (its SNI route: daskgateway-<that>)
    desc = worker_submit_description(spec(scheduler_address="gateway://10.0.0.1:8786/dask-users.0f3a9c", tls_cert=
                                          "/s/dask.crt", tls_key="/s/dask.pem"), [(0, "w0")])
    assert "gateway://10.0.0.1:8786/dask-users.0f3a9c" in parse_new_syntax(desc["arguments"])
    for bad in ("gateway://10.0.0.1:8000", "gateway://10.0.0.1:8000/Bad_Name", "udp://x:1",
                "gateway://10.0.0.1:8000/a.b.c", "gateway://10.0.0.1:8000/ns."):
        with pytest.raises(ValidationError):
            worker_submit_description(spec(scheduler_address=bad), [(0, "w0")])


def test_dry_run_masks_secret_looking_environment_values(monkeypatch, tmp_path):
    """`htdask scale --dry-run`: the reconciler's own rendering; values of secret-looking variables masked."""
    from htdask import scaleopts
    from htdask.settings import load

    class NoRecords:
        def get(self, cluster):
            return None

        def summaries(self, names):
            return {}
    monkeypatch.setenv("SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    text = scaleopts.dry_run(NoRecords(), "demo", 2, "alice",
                             {"scheduler_address": "tcp://10.0.0.1:8786",
                              "environment": {"S3_SECRET_KEY": "hunter2", "MY_TOKEN": "t0k", "OMP_NUM_THREADS": "1"}},
                             load())
    assert "hunter2" not in text and "t0k" not in text
    assert "S3_SECRET_KEY=***" in text and "MY_TOKEN=***" in text and "OMP_NUM_THREADS=1" in text
    assert text.startswith("# cluster demo is new: 2 jobs to submit\n")
    assert "queue DaskWorkerIndex,DaskWorkerName from (\n0,demo-0\n1,demo-1\n)" in text
    assert not (tmp_path / "spool").exists() and not (tmp_path / "logs").exists(), "a dry run creates nothing"
