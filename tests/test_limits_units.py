"""Issue 27 item 2, the parts that need no Celery: durations and maxima (htdask.domain.limits), the site's
settings, the pass's rules (tasks/limits.py), and the Redis scripts that track idleness by Redis' clock and
mark a cluster deleted once (htdask/state/limits.py, on a private redis-server)."""
from __future__ import annotations

import pytest

from htdask.domain import limits as lim
from htdask.domain.validation import ValidationError
from htdask.settings import Settings, SettingsError, build
from htdask.state import Store, connect
from htdask.state.limits import Observed
from tasks import limits as pass_
from workers.dask_scheduler import Idleness


@pytest.mark.parametrize("value, seconds", [("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("90s", 90), ("90", 90),
                                            (45, 45), (2.5, 2.5), ("1d", 86400), ("0", 0), ("10 min", 600)])
def test_durations(value, seconds):
    assert lim.parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-1", "1y", "", "2h x", True, "400d", None])
def test_bad_durations_are_one_line_naming_the_field(value):
    with pytest.raises(ValidationError) as e:
        lim.parse_duration(value, "--idle-timeout")
    assert str(e.value).startswith("invalid --idle-timeout ") and "\n" not in str(e.value)


def test_a_limit_over_the_site_maximum_or_none_with_a_maximum_is_refused():
    assert lim.requested({"idle_timeout": "30m"}, {"idle_timeout": 7200}) == {"idle_timeout": 1800.0}
    assert lim.requested({"max_lifetime": "0"}, {"max_lifetime": 0}) == {"max_lifetime": 0.0}  # no maximum: never
    for value in ("3h", "0"):
        with pytest.raises(ValidationError, match=r"exceeds the site's maximum 2 h \(IDLE_TIMEOUT_MAX\)"):
            lim.requested({"idle_timeout": value}, {"idle_timeout": 7200}, {"idle_timeout": "--idle-timeout"})
    with pytest.raises(ValidationError, match=r"invalid max_lifetime '3 d': .* \(MAX_LIFETIME_MAX\)"):
        lim.requested({"max_lifetime": "3d"}, {"max_lifetime": 86400})
    assert lim.effective({"idle_timeout": 5.0}, {"idle_timeout": 60, "max_lifetime": 3600}) == \
        lim.Limits(idle_timeout=5.0, max_lifetime=3600.0)


def test_site_settings_take_seconds_and_a_default_must_fit_its_maximum(monkeypatch):
    monkeypatch.setenv("IDLE_TIMEOUT", "1800")
    monkeypatch.setenv("IDLE_TIMEOUT_MAX", "7200")
    s = build()
    assert s.limit_defaults == {"idle_timeout": 1800.0, "max_lifetime": 0.0}
    assert s.limit_maxima == {"idle_timeout": 7200.0, "max_lifetime": 0.0}
    assert s.operator.limit_maxima == s.limit_maxima
    monkeypatch.setenv("IDLE_TIMEOUT", "0")
    with pytest.raises(SettingsError, match="IDLE_TIMEOUT=0 must be above 0 and at most IDLE_TIMEOUT_MAX=7200"):
        build()
    monkeypatch.setenv("MAX_LIFETIME", "2h")
    with pytest.raises(SettingsError, match="^MAX_LIFETIME="):
        build()
    assert isinstance(s, Settings)


def test_verdict_idle_first_then_lifetime():
    limits = lim.Limits(idle_timeout=30, max_lifetime=600)
    assert pass_.verdict(limits, None, 10) is None
    assert pass_.verdict(limits, 29.9, 599) is None
    assert pass_.verdict(limits, 31, 700) == ("idle", "idle for 31 s (idle timeout 30 s)")
    assert pass_.verdict(limits, None, 600) == ("lifetime", "10 min old (maximum lifetime 10 min)")
    assert pass_.verdict(lim.Limits(), 10**6, 10**6) is None


def test_a_scheduler_that_cannot_be_asked_is_not_idle():
    assert pass_.idle_state(Idleness("tcp://h:1", 5.0), "tcp://h:1", None) == (5.0, "idle")
    assert pass_.idle_state(Idleness("tcp://h:1", None), "tcp://h:1", None) == (None, "busy")
    assert pass_.idle_state(Idleness("tcp://h:1", error="unreachable: connection refused"), "tcp://h:1", None) == \
        (None, "scheduler tcp://h:1 unreachable: connection refused: not counted as idle")
    assert pass_.idle_state(None, "", "no scheduler address") == \
        (None, "scheduler - not asked (no scheduler address): not counted as idle")


def test_scheduler_target_tls_needs_readable_files(tmp_path):
    class Rec:
        options = {"scheduler_address": "tls://h:8786", "tls_cert": str(tmp_path / "missing.crt"),
                   "tls_key": str(tmp_path / "missing.pem")}

    class Site:
        dask_scheduler_address = ""

    address, args, why = pass_.scheduler_target(Rec, Site)
    assert address == "tls://h:8786" and args is None and why.startswith("its TLS files cannot be read here")
    Rec.options = {"scheduler_address": "tls://h:8786"}
    assert pass_.scheduler_target(Rec, Site)[2] == "tls:// needs credentials this worker does not hold"
    Rec.options = {}
    assert pass_.scheduler_target(Rec, Site) == ("", None, "no scheduler address")


def test_idle_time_counts_by_redis_clock_while_the_scheduler_says_the_same_idle_since(redis_server):
    store = Store(connect(redis_server.url))
    assert store.observe("c", 100.0, "idle") == Observed(None, None)  # no record: nothing written
    store.record_new_request("c", 1, schedd="local")
    assert store.set_limits("c", {"idle_timeout": 30.0}) and store.limit_fields(["c"])["c"]["idle_timeout"] == "30.0"
    first = store.observe("c", 100.0, "idle")
    assert first.idle_for == 0 and first.age is not None
    redis_server_time = store.now()
    while store.now() - redis_server_time < 0.3:  # Redis' clock moves on
        pass
    again = store.observe("c", 100.0, "idle")
    assert again.idle_for >= 0.3
    assert store.observe("c", 101.0, "idle").idle_for == 0  # activity in between: a new idle_since restarts it
    busy, nope = store.observe_many([("c", None, "busy"), ("nope", 1.0, "idle")])
    assert busy.idle_for is None and busy.age >= 0.3 and nope == Observed(None, None)
    assert store.limit_fields(["c"])["c"]["idle_state"] == "busy"
    assert store.observe("c", 101.0, "idle").idle_for == 0


def test_a_cluster_is_marked_and_counted_once_and_not_after_a_newer_request(redis_server):
    store = Store(connect(redis_server.url))
    seq = store.record_new_request("c", 2, schedd="local")
    newer = store.record_new_request("c", 3, schedd="local")
    assert not store.cull("c", "idle", "idle for 31 s (idle timeout 30 s)", seq)  # judged before request `newer`
    assert store.cull("c", "idle", "idle for 31 s (idle timeout 30 s)", newer)
    assert not store.cull("c", "lifetime", "old", newer)  # once
    assert store.cull_counts() == {("local", "idle"): 1}
    assert store.limit_fields(["c"])["c"]["culled"] == "idle"
    assert store.culled(store.now())["c"]["detail"] == "idle for 31 s (idle timeout 30 s)"
    assert store.cull("gw", "lifetime", "6 s old (maximum lifetime 5 s)", None, "sub2")  # a gateway's: no record
    assert store.cull_counts() == {("local", "idle"): 1, ("sub2", "lifetime"): 1}
    assert set(store.culled(store.now())) == {"c", "gw"}
    assert store.culled(store.now() + 2 * 86400) == {} and len(store.culled(store.now())) == 2  # readers only read
    store.culled(store.now() + 2 * 86400, prune=True)
    assert store.culled(store.now()) == {}  # the pass drops them after a day


def test_a_culled_cluster_whose_delete_was_lost_is_deleted_again_and_a_revived_one_is_judged_again(redis_server,
                                                                                                  monkeypatch):
    """The pass marks first, then sends the delete: a mark without a recorded delete gets its delete again; a
    scale request after the delete keeps the cluster (the delete is superseded) and its mark goes."""
    store = Store(connect(redis_server.url))
    sent = []
    monkeypatch.setattr("tasks.api.enqueue_delete", lambda st, name: sent.append(name))

    class Site:
        limit_defaults = {"idle_timeout": 0.0, "max_lifetime": 0.0}
        dask_scheduler_address, poll_interval = "", 1.0

    seq = store.record_new_request("c", 2, schedd="local")
    assert store.cull("c", "lifetime", "old", seq)
    pass_.enforce(store, Site, "local")
    assert sent == ["c"]  # the delete was never recorded: sent again
    store.record_new_request("c", 0, schedd="local")  # the delete's own record (desired 0): on its way
    pass_.enforce(store, Site, "local")
    assert sent == ["c"] and store.limit_fields(["c"])["c"]["culled"] == "lifetime"
    store.record_new_request("c", 3, schedd="local")  # a scale after the delete keeps it
    pass_.enforce(store, Site, "local")
    assert sent == ["c"] and store.limit_fields(["c"])["c"]["culled"] is None
