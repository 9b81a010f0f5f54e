"""Issue 12 item 1: one odd job ad never blinds the poll for everyone.

The condor_q / condor_history of the local pool are wrapped (CONDOR_BIN_DIR) so that their real
output gets extra ads an HTCondor schedd can print: a Latin-1 hold reason written as raw bytes, an
ad without ProcId, a JobStatus that is not an integer, a DaskWorkerIndex of the wrong type. The
Celery worker polls through the real path (condor_cli.stream -> parser -> summarize -> Redis).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import classad2
import pytest

from htdask.demo.services import install_pool
from tests.conftest import live, queue_of, wait_until
from tests.test_core import make_stack, scale
from workers.htcondor.bindings import ad_to_dict
from workers.htcondor.queue_parser import DEGRADED, parse_ads_text
from htdask.domain.summary import AdCounts, summarize

#: issue 12's input, verbatim (printf of a held job whose hold reason is Latin-1)
LATIN1_HELD = (b'{\n  "ClusterId": 3,\n  "ProcId": 0,\n  "DaskGatewayCluster": "cafe",\n  "JobStatus": 5,\n'
               b'  "HoldReasonCode": 13,\n  "HoldReason": "r\xe9seau injoignable"\n}')
NO_PROCID = b'{\n  "ClusterId": 4,\n  "DaskGatewayCluster": "cafe",\n  "JobStatus": 2\n}'
STATUS_TEXT = b'{\n  "ClusterId": 5,\n  "ProcId": 0,\n  "DaskGatewayCluster": "cafe",\n  "JobStatus": "2"\n}'
INDEX_TEXT = (b'{\n  "ClusterId": 6,\n  "ProcId": 0,\n  "DaskGatewayCluster": "cafe",\n  "JobStatus": 1,\n'
              b'  "DaskWorkerIndex": "seven",\n  "DaskWorkerName": "cafe-7"\n}')
ODD_ADS = [LATIN1_HELD, NO_PROCID, STATUS_TEXT, INDEX_TEXT]
#: a history ad of a job that left the queue, with a Latin-1 removal reason
ODD_HISTORY = (b'{\n  "ClusterId": 2,\n  "ProcId": 0,\n  "DaskGatewayCluster": "cafe",\n  "JobStatus": 3,\n'
               b'  "RemoveReason": "retir\xe9 par l\'administrateur"\n}')

WRAPPER = r'''#!/usr/bin/env python3
"""{name} of the local pool, with extra ads appended to its JSON output (test of issue 12)."""
import subprocess, sys
out = subprocess.run([{real!r}, *sys.argv[1:]], capture_output=True)
sys.stderr.buffer.write(out.stderr)
if out.returncode or "-json" not in sys.argv:
    sys.stdout.buffer.write(out.stdout)
    sys.exit(out.returncode)
with open({extra!r}, "rb") as f:
    extra = f.read()
body = out.stdout.strip()
if body in (b"", b"[\n]", b"[]"):
    sys.stdout.buffer.write(b"[\n" + extra + b"\n]\n")
else:
    sys.stdout.buffer.write(body[:-1].rstrip() + b"\n,\n" + extra + b"\n]\n")
'''


@pytest.fixture
def odd_bin_dir():
    """A CONDOR_BIN_DIR: the pool's programs, condor_q and condor_history wrapped to add odd ads.

    Outside pytest's private tmp dir, and the pool's programs installed there rather than linked to the
    checkout: condor_submit runs as the service user, who must reach it (the checkout may be mode 0700)."""
    tmp_path = Path(tempfile.mkdtemp(prefix="htdask-oddbin-"))
    tmp_path.chmod(0o755)
    pool_bin = install_pool(tmp_path / "pool")
    bindir = tmp_path / "condor-bin"
    bindir.mkdir()
    extras = {"condor_q": b"\n,\n".join(ODD_ADS), "condor_history": ODD_HISTORY}
    for prog in os.listdir(pool_bin):
        if prog in extras:
            extra = tmp_path / f"{prog}.extra"
            extra.write_bytes(extras[prog])
            path = bindir / prog
            path.write_text(WRAPPER.format(name=prog, real=str(pool_bin / prog), extra=str(extra)))
            path.chmod(0o755)
        else:
            (bindir / prog).symlink_to(pool_bin / prog)
    yield str(bindir)
    shutil.rmtree(tmp_path)


def _row(stack, cluster: str) -> dict:
    out = stack.cli("status", "--json")
    assert out.returncode == 0, out.stderr
    return {r["name"]: r for r in json.loads(out.stdout)["clusters"]}[cluster]


@pytest.mark.stack
def test_odd_ads_in_condor_q_and_history_affect_only_themselves(service_user, odd_bin_dir):
    with make_stack(service_user, CONDOR_BIN_DIR=odd_bin_dir) as stack:
        scale(stack, "real", 3)
        wait_until(lambda: sum(j["JobStatus"] == 2 for j in live(stack, "real")) == 3, message="3 running")
        out = stack.cli("poll")
        assert out.returncode == 0 and "ok" in out.stdout, out.stdout + out.stderr
        real = _row(stack, "real")
        assert (real["running"], real["desired"], real["stale"]) == (3, 3, False)
        # The Latin-1 held job is counted and its reason shown, the bad byte replaced.
        cafe = _row(stack, "cafe")
        assert cafe["held"] == 1 and cafe["idle"] == 1  # INDEX_TEXT is kept (degraded), index dropped
        assert cafe["held_reasons"] == {"r\ufffdseau injoignable": 1}
        assert (cafe["unparsed"], cafe["degraded"]) == (2, 2)
        text = stack.cli("status").stdout
        assert "held x1: r\ufffdseau injoignable" in text and "2 unreadable job ads" in text
        log = (stack.logdir / "worker1.log").read_text(errors="replace")
        assert "job 4.None" in log and "job 5.0" in log and "job 3.0 (cluster cafe)" in log
        # condor_history's odd ad does not hide the jobs that really left: scale down, poll, count.
        scale(stack, "real", 1)
        wait_until(lambda: len(live(stack, "real")) == 1, message="2 jobs removed")
        wait_until(lambda: not [a for a in queue_of(stack, "real") if a["JobStatus"] == 3], message="gone")
        assert stack.cli("poll").returncode == 0
        real = _row(stack, "real")
        assert (real["running"], real["removed"]) == (1, 2)
        assert "history of" not in (stack.logdir / "worker1.log").read_text(errors="replace")


def test_summarize_skips_or_degrades_each_odd_ad_and_counts_it():
    ads = parse_ads_text(b"[\n" + b"\n,\n".join(ODD_ADS) + b"\n,\n"
                         + b'{"ClusterId": 9, "ProcId": 1, "DaskGatewayCluster": "ok", "JobStatus": 2}\n]\n')
    counts = AdCounts()
    out = summarize(ads, counts=counts)
    assert (counts.unparsed, counts.degraded) == (2, 2)
    assert (out["ok"].running, out["cafe"].held, out["cafe"].idle) == (1, 1, 1)
    assert [j.job_id for j in out["cafe"].jobs] == ["3.0", "6.0"] and out["cafe"].jobs[1].index is None


class _UndecodableAd(classad2.ClassAd):
    """What the bindings do with a string attribute holding bytes that are not UTF-8: converting it to a
    Python str raises UnicodeDecodeError (simulated here: no schedd can run on this machine, and
    classad2 cannot be given such a string from Python)."""

    def printJson(self):
        raise UnicodeDecodeError("utf-8", b"r\xe9", 1, 2, "invalid continuation byte")

    def lookup(self, attr):
        if attr == "HoldReason":
            raise UnicodeDecodeError("utf-8", b"r\xe9", 1, 2, "invalid continuation byte")
        return super().lookup(attr)


def test_bindings_path_degrades_only_the_undecodable_attribute():
    ad = _UndecodableAd({"ClusterId": 3, "ProcId": 0, "JobStatus": 5, "DaskGatewayCluster": "cafe",
                         "HoldReasonCode": 13, "HoldReason": "x"})
    got = ad_to_dict(ad)
    assert got["HoldReason"] == "\ufffd" and got[DEGRADED] == ["HoldReason"]
    assert (got["ClusterId"], got["ProcId"], got["JobStatus"], got["HoldReasonCode"]) == (3, 0, 5, 13)
    counts = AdCounts()
    assert summarize([got], counts=counts)["cafe"].held == 1 and counts.degraded == 1
