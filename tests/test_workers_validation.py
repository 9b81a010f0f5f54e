"""htdask.domain.validation: a table of hostile inputs, each refused with one clear line; good inputs pass."""
from __future__ import annotations

import classad2
import pytest

from workers import runas
from htdask.domain.validation import (ValidationError, validate_address, validate_cluster_name, validate_count,
                               validate_docker_image, validate_email, validate_job_id, validate_memory,
                               validate_port_range, validate_schedd_name, validate_unix_user_name,
                               validate_worker_name)
from htdask.domain.submitvalues import (quote_arguments, quote_environment, validate_classad_string, validate_constraint,
                                 validate_env, validate_path, validate_submit_key, validate_submit_value)

BAD = [
    # counts
    (validate_count, -1, "negative"),
    (validate_count, 10**6, "maximum"),
    (validate_count, 1001, "maximum"),
    (validate_count, 2.0, "float"),
    (validate_count, True, "boolean"),
    (validate_count, "3.0", "plain"),
    (validate_count, "1e3", "plain"),
    (validate_count, " 5", "plain"),
    (validate_count, "-1", "plain"),
    (validate_count, "five", "plain"),
    (validate_count, None, "NoneType"),
    # cluster names
    (validate_cluster_name, "My-Cluster", "lowercase"),
    (validate_cluster_name, 'de"mo', "lowercase"),
    (validate_cluster_name, "demo\nqueue", "lowercase"),
    (validate_cluster_name, "$(Cluster)", "lowercase"),
    (validate_cluster_name, "has space", "lowercase"),
    (validate_cluster_name, "clüster", "lowercase"),
    (validate_cluster_name, "a" * 64, "63"),
    (validate_cluster_name, "-demo", "lowercase"),
    (validate_cluster_name, "demo-", "lowercase"),
    (validate_cluster_name, "", "empty"),
    (validate_cluster_name, 5, "string"),
    # e-mail
    (validate_email, "alice", "name@example.org"),
    (validate_email, "alice@", "name@example.org"),
    (validate_email, "@example.org", "name@example.org"),
    (validate_email, "a b@example.org", "before '@'"),
    (validate_email, 'a"b@example.org', "before '@'"),
    (validate_email, "alice@localhost", "domain"),
    (validate_email, "alice@example..org", "domain"),
    (validate_email, "alice@example.org\n", "domain"),
    (validate_email, "alice..x@example.org", "before '@'"),
    # unix user names
    (validate_unix_user_name, "-rf", "POSIX"),
    (validate_unix_user_name, "al ice", "POSIX"),
    (validate_unix_user_name, 'ro"ot', "POSIX"),
    (validate_unix_user_name, "x" * 33, "32"),
    (validate_unix_user_name, "1000", "digits"),
    (validate_unix_user_name, "", "empty"),
    # users we must never submit as
    (runas.check_user, "root", "deny list"),
    (runas.check_user, "daemon", "MIN_SUBMIT_UID"),
    (runas.check_user, "nobody", "deny list"),
    (runas.check_user, "nobody-here-xyz", "no such"),
    (runas.check_user, "bad name", "POSIX"),
    # environment values trying to break out of the submit description
    (validate_env, {"A": 'x" \n queue'}, "line break"),
    (validate_env, {"A": "$(Cluster)"}, "macro"),
    (validate_env, {"A": "$ENV(HOME)"}, "macro"),
    (validate_env, {"A": "a\x00b"}, "NUL"),
    (validate_env, {"A": "a\rb"}, "line break"),
    (validate_env, {"A": "a\x1bb"}, "control"),
    (validate_env, {"1A": "x"}, "[A-Za-z_]"),
    (validate_env, {"A-B": "x"}, "[A-Za-z_]"),
    (validate_env, {"A B": "x"}, "[A-Za-z_]"),
    (validate_env, {"A": 1.5}, "string"),
    (validate_env, ["A=1"], "mapping"),
    # ClassAd strings
    (validate_classad_string, "a\nb", "line break"),
    (validate_classad_string, 'x"\nMY.Evil = 1', "line break"),
    (validate_classad_string, "$(Owner)", "macro"),
    (validate_classad_string, "$$(Memory)", "macro"),
    (validate_classad_string, "a\tb", "control"),
    (validate_classad_string, "a\x07b", "control"),
    # addresses, schedds, images, sizes, misc
    (validate_address, "http://10.0.0.1:8786", "tcp://"),
    (validate_address, "tcp://10.0.0.1", "tcp://"),
    (validate_address, "tcp://10.0.0.1:99999", "65535"),
    (validate_address, "tcp://a b:8786", "host"),
    (validate_address, "tcp://x:1\nqueue", "tcp://"),
    (validate_address, "tcp://host\":8786", "host"),
    (validate_schedd_name, "a b", "letters"),
    (validate_schedd_name, "x" * 65, "64"),
    (validate_schedd_name, "", "64"),
    (validate_docker_image, "Ubuntu", "image reference"),
    (validate_docker_image, "img:tag with space", "image reference"),
    (validate_docker_image, "img;rm -rf /", "image reference"),
    (validate_memory, "-1", "size"),
    (validate_memory, "lots", "size"),
    (validate_memory, "5 XB", "size"),
    (validate_memory, True, "boolean"),
    (validate_memory, 0, "at least"),
    (validate_memory, "2iB", "size"),
    (validate_port_range, "40100:40000", "below"),
    (validate_port_range, "1:70000", "65535"),
    (validate_port_range, "a:b", "low:high"),
    (validate_job_id, "1.2.3", "cluster.proc"),
    (validate_job_id, "-1.0", "cluster.proc"),
    (validate_job_id, "42.0 43.0", "cluster.proc"),
    (validate_path, "relative/dir", "absolute"),
    (validate_path, "/tmp/a b", "absolute"),
    (validate_path, "/tmp/../etc", ".."),
    (validate_submit_key, "queue", "queue"),
    (validate_submit_key, "a=b", "submit command"),
    (validate_submit_key, "+My Attr", "submit command"),
    (validate_submit_value, "x\nqueue", "line break"),
    (validate_submit_value, "x \\", "backslash"),
    (validate_worker_name, "demo 1", "letters"),
    (validate_worker_name, "demo,1", "letters"),
    (validate_constraint, "JobStatus ==", "ClassAd expression"),
    (validate_constraint, "true\n|| true", "line break"),
]


@pytest.mark.parametrize("fn,value,word", BAD, ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(BAD)])
def test_bad_inputs_refused_with_one_clear_line(fn, value, word):
    with pytest.raises(ValidationError) as e:
        fn(value)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("invalid ")
    if isinstance(value, dict):  # the offending entry is named, not the whole mapping
        assert any(repr(k) in msg or f"variable {k} " in msg for k in value), msg
    else:
        assert repr(value)[:60] in msg, msg
    assert word in msg, msg
    assert isinstance(e.value, ValueError)


def test_table_is_big_enough():
    assert len(BAD) >= 20


def test_refused_user_is_a_validation_error():
    with pytest.raises(runas.UserRefused):
        runas.check_user("root")
    assert issubclass(runas.UserRefused, ValidationError)


def test_deny_list_and_min_uid_from_env(monkeypatch):
    import pwd
    some = next(p for p in pwd.getpwall() if 0 < p.pw_uid < 1000)
    monkeypatch.setenv("MIN_SUBMIT_UID", "1")
    assert runas.check_user(some.pw_name).pw_uid == some.pw_uid
    monkeypatch.setenv("DENY_USERS", f"x, {some.pw_name} ,y")
    with pytest.raises(runas.UserRefused, match="deny list"):
        runas.check_user(some.pw_name)
    monkeypatch.setenv("MIN_SUBMIT_UID", "0")  # root stays refused whatever the floor
    monkeypatch.setenv("DENY_USERS", "")
    with pytest.raises(runas.UserRefused):
        runas.check_user("root")


def test_max_workers_from_env(monkeypatch):
    monkeypatch.setenv("MAX_WORKERS_PER_CLUSTER", "5")
    assert validate_count(5) == 5
    with pytest.raises(ValidationError, match="maximum of 5"):
        validate_count(6)


GOOD = [
    (validate_count, 0, 0),
    (validate_count, 1000, 1000),
    (validate_count, "17", 17),
    (validate_cluster_name, "demo", "demo"),
    (validate_cluster_name, "a", "a"),
    (validate_cluster_name, "x" * 63, "x" * 63),
    (validate_cluster_name, "0f3a9c-demo-2", "0f3a9c-demo-2"),
    (validate_email, "alice.smith+dask@physics.example.org", "alice.smith+dask@physics.example.org"),
    (validate_unix_user_name, "alice", "alice"),
    (validate_unix_user_name, "svc_dask.01-x", "svc_dask.01-x"),
    (validate_address, "tcp://10.0.0.1:8786", "tcp://10.0.0.1:8786"),
    (validate_address, "tls://sched.example.org:443", "tls://sched.example.org:443"),
    (validate_address, "tcp://[::1]:8786", "tcp://[::1]:8786"),
    (validate_schedd_name, "schedd01.example.org", "schedd01.example.org"),
    (validate_schedd_name, "local", "local"),
    (validate_docker_image, "ghcr.io/dask/dask:latest", "ghcr.io/dask/dask:latest"),
    (validate_docker_image, "localhost:5000/team/img", "localhost:5000/team/img"),
    (validate_docker_image, "python@sha256:" + "a" * 64, "python@sha256:" + "a" * 64),
    (validate_memory, "2GiB", 2 * 2**30),
    (validate_memory, "4 G", 4 * 2**30),
    (validate_memory, "512M", 512 * 2**20),
    (validate_memory, "1.5 GB", int(1.5 * 2**30)),
    (validate_memory, 1234567, 1234567),
    (validate_port_range, "40000:40100", "40000:40100"),
    (validate_port_range, "8786", "8786"),
    (validate_job_id, "42.0", "42.0"),
    (validate_job_id, "42", "42"),
    (validate_path, "/var/log/htdask", "/var/log/htdask"),
    (validate_classad_string, 'he said "hi" \\o/', classad2.quote('he said "hi" \\o/')),
    (validate_classad_string, "Grüße", classad2.quote("Grüße")),
    (validate_constraint, 'DaskGatewayCluster == "demo" && JobStatus == 5', None),
]


@pytest.mark.parametrize("fn,value,expected", GOOD)
def test_good_inputs(fn, value, expected):
    got = fn(value)
    if expected is not None:
        assert got == expected


def test_classad_string_round_trips_through_classad2():
    for s in ['plain', 'with "quotes"', "back\\slash\\", "apostrophe's", "Grüße"]:
        q = validate_classad_string(s)
        assert classad2.unquote(q) == s
        ad = classad2.ClassAd(f"[ X = {q} ]")
        assert ad["X"] == s


def test_env_rendering_new_syntax():
    assert validate_env({"one": "1", "two": '"2"', "three": "spacey 'quoted' value"}) == \
        "\"one=1 two=\"\"2\"\" three='spacey ''quoted'' value'\""
    assert validate_env({}) == '""'
    assert validate_env({"N": 5}) == '"N=5"'


def test_quote_arguments_like_dask_jobqueue():
    assert quote_arguments(["-c", "echo 'hi there'"]) == "\"-c 'echo ''hi there'''\""
    assert quote_arguments(["a", 'say "x"', ""]) == "\"a 'say \"\"x\"\"' ''\""
    assert quote_environment({"A": "x"}) == '"A=x"'
