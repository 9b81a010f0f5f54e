"""The streaming condor_q / condor_history -json parser and the -terse submit parser."""
from __future__ import annotations

import io
import json

import classad2
import pytest

from workers.htcondor.queue_parser import (CHUNK, DEGRADED, expr_text, is_expr, parse_ads, parse_ads_text,
                                  parse_terse_submit)
from workers.htcondor.schedd import ParseError, ScheddError


def condor_json(ads: list[classad2.ClassAd]) -> str:
    """What condor_q -json prints: "[\\n", ads joined by "\\n,\\n", "\\n]\\n"; nothing if no ads."""
    if not ads:
        return ""
    return "[\n" + "\n,\n".join(ad.printJson() for ad in ads) + "\n]\n"


def job_ad(cluster: int, proc: int, **extra) -> classad2.ClassAd:
    ad = classad2.ClassAd({"ClusterId": cluster, "ProcId": proc, "JobStatus": 1, "Owner": "alice",
                           "DaskGatewayCluster": "demo", "DaskWorkerName": f"demo-{proc}",
                           "DaskWorkerIndex": proc, "QDate": 1700000000 + proc})
    for k, v in extra.items():
        ad[k] = v
    return ad


class TrickleStream(io.RawIOBase):
    """A pipe-like binary stream that hands out at most `n` bytes per read."""

    def __init__(self, data: bytes, n: int):
        self.data, self.pos, self.n = data, 0, n

    def readable(self):
        return True

    def read(self, size=-1):
        size = self.n if size < 0 else min(size, self.n)
        out = self.data[self.pos:self.pos + size]
        self.pos += len(out)
        return out


def test_empty_output_is_no_ads():
    assert parse_ads_text("") == []
    assert parse_ads_text(b"") == []
    assert parse_ads_text("\n  \n") == []


def test_empty_history_brackets_is_no_ads():
    assert parse_ads_text("[\n]\n") == []


def test_one_ad():
    text = condor_json([job_ad(42, 0)])
    assert text.startswith("[\n{\n  \"") and text.endswith("\n}\n]\n")
    ads = parse_ads_text(text)
    assert ads == [json.loads(job_ad(42, 0).printJson())]
    assert ads[0]["DaskWorkerName"] == "demo-0"


def test_many_ads_in_order_from_bytes_and_text():
    ads = [job_ad(7, i) for i in range(50)]
    text = condor_json(ads)
    for source in (io.BytesIO(text.encode()), io.StringIO(text)):
        got = list(parse_ads(source))
        assert [a["ProcId"] for a in got] == list(range(50))
        assert got == json.loads(text)


def test_expr_values_stay_strings():
    ad = job_ad(1, 0)
    ad["Requirements"] = classad2.ExprTree('TARGET.Arch == "X86_64" && TARGET.Memory >= RequestMemory')
    ad["Broken"] = classad2.ExprTree("error")
    text = condor_json([ad])
    assert '"\\/Expr(TARGET.Arch == \\"X86_64\\"' in text  # the wire form really is \/Expr(...)\/
    [got] = parse_ads_text(text)
    req = got["Requirements"]
    assert is_expr(req)
    assert expr_text(req) == 'TARGET.Arch == "X86_64" && TARGET.Memory >= RequestMemory'
    assert is_expr(got["Broken"]) and expr_text(got["Broken"]) == "error"
    assert not is_expr(got["Owner"]) and not is_expr(3)
    with pytest.raises(ValueError):
        expr_text("plain")


def test_nested_and_list_values():
    ad = job_ad(3, 1)
    ad["Lst"] = [1, "two", [3.5, None], True]
    ad["Nested"] = classad2.ClassAd({"Inner": {"Deep": [1, 2]}, "S": "a}\nb"})
    ad["Brace"] = "}\n]\n,\n{"
    text = condor_json([ad, job_ad(3, 2)])
    got = parse_ads_text(text)
    assert got[0]["Lst"] == [1, "two", [3.5, None], True]
    assert got[0]["Nested"] == {"Inner": {"Deep": [1, 2]}, "S": "a}\nb"}
    assert got[0]["Brace"] == "}\n]\n,\n{"
    assert got[1]["ProcId"] == 2


def test_unicode_and_escapes():
    ad = job_ad(5, 0, HoldReason="Fehler: Speicher überschritten \"quoted\" \\ back")
    [got] = parse_ads_text(condor_json([ad]).encode())
    assert got["HoldReason"] == "Fehler: Speicher überschritten \"quoted\" \\ back"


def test_multibyte_chars_split_across_reads():
    ad = job_ad(5, 0, HoldReason="ü" * 5000)
    data = condor_json([ad, job_ad(5, 1)]).encode()
    got = list(parse_ads(TrickleStream(data, 7)))
    assert got[0]["HoldReason"] == "ü" * 5000 and len(got) == 2


def test_ad_bigger_than_a_chunk():
    ad = job_ad(8, 0, Big="x" * (3 * CHUNK), Env=["y" * 1000] * 200)
    got = list(parse_ads(TrickleStream(condor_json([ad, job_ad(8, 1)]).encode(), 4096)))
    assert len(got[0]["Big"]) == 3 * CHUNK and got[1]["ProcId"] == 1


def test_json_lines_layout():
    text = "".join(json.dumps(json.loads(job_ad(9, i).printJson())) + "\n" for i in range(3))
    assert [a["ProcId"] for a in parse_ads_text(text)] == [0, 1, 2]


def test_compact_array_layout():
    text = json.dumps([json.loads(job_ad(9, i).printJson()) for i in range(3)])
    assert [a["ProcId"] for a in parse_ads_text(text)] == [0, 1, 2]


FULL = condor_json([job_ad(11, i) for i in range(3)])


@pytest.mark.parametrize("cut", [
    1,                              # just "["
    2,                              # "[\n"
    FULL.index("\"ClusterId\""),    # inside the first ad's header
    FULL.index("demo-0"),           # inside a string value
    FULL.index("}\n,\n") + 1,       # after the first ad, before its comma
    FULL.index("}\n,\n") + 3,       # after the comma
    len(FULL) // 2,                 # the middle
    len(FULL) - 3,                  # inside the last ad's closing
    len(FULL) - 2,                  # after the last ad, no ']'
])
def test_truncated_output_raises(cut):
    with pytest.raises(ParseError) as e:
        parse_ads_text(FULL[:cut])
    msg = str(e.value)
    assert "truncated" in msg and "\n" not in msg


def test_truncated_stream_yields_complete_ads_then_raises():
    gen = parse_ads(io.BytesIO(FULL[:len(FULL) - 10].encode()))
    assert next(gen)["ProcId"] == 0
    assert next(gen)["ProcId"] == 1
    with pytest.raises(ParseError):
        next(gen)


@pytest.mark.parametrize("text,word", [
    ("garbage\n", "not JSON"),
    ("-- Schedd: submit.example.com : <1.2.3.4:9618> @ 01/01/26 12:00:00\n", "not JSON"),
    ("Error: Cannot print as both XML and JSON\n", "not JSON"),
    ("[\n{\n  \"A\": 1\n}\n,\n]\n", "malformed"),
    ("[\n{\n  \"A\": 1,\n}\n]\n", "malformed"),
    ("[\n{\n  \"A\": 1\n}\n{\n  \"B\": 2\n}\n]\n", "malformed"),
    ("[\n{\n  \"A\": 1\n}\n]\ntrailing\n", "after the closing"),
    ("[\n1,\n2\n]\n", "malformed"),
    ("[\n{\n  \"A\": tru\n}\n]\n", "malformed"),
    ("[\n[1]\n]\n", "malformed"),
])
def test_garbage_raises(text, word):
    with pytest.raises(ParseError) as e:
        parse_ads_text(text)
    assert word in str(e.value)
    assert isinstance(e.value, ScheddError)


#: issue 12's input: HTCondor's JSON writer prints a Latin-1 hold reason's bytes raw
LATIN1_HELD = (b'[\n{\n  "ClusterId": 3,\n  "ProcId": 0,\n  "DaskGatewayCluster": "cafe",\n  "JobStatus": 5,\n'
               b'  "HoldReasonCode": 13,\n  "HoldReason": "r\xe9seau injoignable"\n}\n]\n')


def test_bytes_that_are_not_utf8_degrade_only_their_ad():
    [ad] = parse_ads_text(LATIN1_HELD)
    assert ad["HoldReason"] == "r\ufffdseau injoignable" and ad["JobStatus"] == 5
    assert ad[DEGRADED] == ["HoldReason"]
    assert DEGRADED not in parse_ads_text(condor_json([job_ad(1, 0)]))[0]


@pytest.mark.parametrize("n", [1, 7, 4096])
def test_a_bad_byte_deep_in_a_stream_leaves_every_other_ad_intact(n):
    ads = [job_ad(9, p, HoldReason="ü ok") for p in range(3000)]
    data = condor_json(ads).encode()
    bad = data.index(b'"ProcId": 1500')
    data = data[:bad] + b'"Cmd": "/home/b\xf6b/\xff",\n  ' + data[bad:]
    got = list(parse_ads(TrickleStream(data, n)))
    assert [a["ProcId"] for a in got] == list(range(3000))
    odd = [a for a in got if DEGRADED in a]
    assert [a["ProcId"] for a in odd] == [1500] and odd[0]["Cmd"] == "/home/b\ufffdb/\ufffd"
    assert {a["HoldReason"] for a in got} == {"ü ok"}  # valid multibyte text after the bad byte still decodes


def test_bad_bytes_in_truncated_output_still_fail():
    with pytest.raises(ParseError, match="truncated"):
        parse_ads_text(LATIN1_HELD[:-4])


def test_20000_ad_stream():
    n = 20000
    ads = (job_ad(100 + i // 1000, i % 1000, JobStatus=1 + i % 5) for i in range(n))
    data = condor_json(list(ads)).encode()
    count = 0
    statuses = [0] * 6
    for ad in parse_ads(TrickleStream(data, 65536)):
        count += 1
        statuses[ad["JobStatus"]] += 1
    assert count == n
    assert statuses[1:] == [n // 5] * 5


def test_parse_is_lazy():
    """The first ad comes out before the rest of the stream was read."""
    data = condor_json([job_ad(1, i) for i in range(2000)]).encode()
    stream = TrickleStream(data, 4096)
    first = next(parse_ads(stream))
    assert first["ProcId"] == 0
    assert stream.pos < len(data) // 4


# --- condor_submit -terse ---------------------------------------------------------------------

def test_terse_one_cluster():
    assert parse_terse_submit("42.0 - 42.2\n") == ["42.0", "42.1", "42.2"]


def test_terse_single_job_and_several_clusters():
    assert parse_terse_submit("7.0 - 7.0\n8.0 - 8.1\n") == ["7.0", "8.0", "8.1"]


@pytest.mark.parametrize("out", [
    "", "\n", "Submitting job(s)...\n3 job(s) submitted to cluster 42.\n", "42.0 - 43.1\n",
    "42.3 - 42.1\n", "42.0 -\n",
])
def test_terse_bad(out):
    with pytest.raises(ParseError):
        parse_terse_submit(out)


def test_malformed_ad_deep_in_a_big_stream():
    """Ads before the damage come out; the damaged one raises, naming its number."""
    text = condor_json([job_ad(12, i) for i in range(3000)])
    i = text.index('"Owner"', len(text) // 2)
    bad = text[:i] + '"Owner": ,' + text[i + len('"Owner": "alice",'):]
    got = []
    with pytest.raises(ParseError) as e:
        for ad in parse_ads(io.BytesIO(bad.encode())):
            got.append(ad["ProcId"])
    assert got == list(range(len(got))) and 0 < len(got) < 3000
    assert f"in ad {len(got) + 1}" in str(e.value)
