"""Streaming parser for `condor_q -json` / `condor_history -json` output.

A big pool's queue is hundreds of megabytes of JSON; reading it whole and json.loads-ing it holds
the text and every ad at once.  This parser reads the pipe in chunks and yields one ad (dict) at a
time, so the caller can summarise as it goes.  It accepts HTCondor's layout ("[\\n", ads separated by
",\\n", "]\\n"; condor_q prints nothing at all for an empty queue, condor_history prints "[\\n]\\n"),
any other whitespace layout of a JSON array of objects, and JSON lines (-jsonl).  Truncated or
garbled output raises ParseError: a half-read queue must never look like an empty one.

One odd job never fails the whole output: HTCondor's JSON writer prints a string's bytes raw, so a
hold reason or path in Latin-1 reaches us as bytes that are not UTF-8.  Such bytes are decoded as
U+FFFD in that ad only; the ad gets the list of repaired attributes under the key `DEGRADED` (a
name no ClassAd attribute can have) and one warning naming the job is logged.
"""
from __future__ import annotations

import codecs
import json
import logging
import re
from typing import IO, Any, Iterator

from htdask.domain.summary import DEGRADED  # the key of an ad whose non-UTF-8 bytes were repaired
from workers.htcondor.schedd import ParseError

log = logging.getLogger(__name__)

CHUNK = 1 << 18
_WS = re.compile(r"[ \t\n\r]*")
_decoder = json.JSONDecoder()
_raw_decode = _decoder.raw_decode
_loads = _decoder.decode
_BOUNDARY = "\n}\n,\n"


def is_expr(value: Any) -> bool:
    """True for a value condor_q printed as "\\/Expr(...)\\/" (an unevaluated ClassAd expression)."""
    return isinstance(value, str) and value.startswith("/Expr(") and value.endswith(")/")


def expr_text(value: str) -> str:
    """The ClassAd expression inside an Expr value: '/Expr(A + 1)/' -> 'A + 1'."""
    if not is_expr(value):
        raise ValueError(f"not an Expr value: {value!r}")
    return value[6:-2]


def _snippet(buf: str, pos: int) -> str:
    s = buf[pos:pos + 40]
    return repr(s if len(s) < 40 else s + "...")


class _Reader:
    """Text chunks from a binary or text file-like (UTF-8, decoded incrementally)."""

    def __init__(self, stream: IO):
        self.stream = stream
        self.decoder = None
        self.eof = False
        self.consumed = 0  # characters dropped from the front of the buffer so far (for messages)
        #: True once any byte was not UTF-8: from then on every ad is checked for escaped bytes
        self.dirty = False

    def read(self, size: int) -> str:
        if self.eof:
            return ""
        # read1: whatever the pipe holds now (at most size), so parsing overlaps the writer's output
        # instead of waiting for a full chunk.
        read1 = getattr(self.stream, "read1", None)
        data = read1(size) if read1 is not None else self.stream.read(size)
        if isinstance(data, bytes):
            if self.decoder is None:
                self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
            state = self.decoder.getstate()
            try:
                text = self.decoder.decode(data, final=not data)
            except UnicodeDecodeError:
                # Strict decoding is the fast path; after the first bad byte the rest of the output
                # is decoded with each bad byte kept as a lone surrogate, repaired per ad (_repair).
                self.dirty = True
                self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
                text = self.decoder.decode(state[0] + data, final=not data)
        else:
            text = data
        if not data:
            self.eof = True
        return text


def parse_ads(stream: IO) -> Iterator[dict]:
    """Yield each ad of `condor_q -json` / `condor_history -json` / -jsonl output as a dict.

    `stream` is a binary or text file-like (a pipe is fine).  Values are plain JSON values;
    expressions stay strings like '/Expr(A + 1)/' (see is_expr / expr_text).
    Raises ParseError for truncated or malformed output.
    """
    reader = _Reader(stream)
    buf = ""
    pos = 0
    want = CHUNK
    slow_until = -1  # buffer position before which the batch path already failed

    def more() -> bool:
        """Append the next chunk to buf (dropping what was consumed); False at end of input."""
        nonlocal buf, pos, slow_until
        chunk = reader.read(want)
        if not chunk:
            return not reader.eof  # a text stream may hand back "" only at EOF
        reader.consumed += pos
        slow_until -= pos
        buf = buf[pos:] + chunk
        pos = 0
        return True

    def skip_ws() -> bool:
        """Move pos past whitespace, reading more as needed; False if the input ended."""
        nonlocal pos
        while True:
            pos = _WS.match(buf, pos).end()
            if pos < len(buf):
                return True
            if not more():
                return False

    # --- the first significant character decides the layout -----------------------------------
    if not skip_ws():
        return  # condor_q's empty queue: no output at all
    first = buf[pos]
    if first == "[":
        array = True
        pos += 1
    elif first == "{":
        array = False  # JSON lines / concatenated objects
    else:
        raise ParseError(f"condor output is not JSON: expected '[' or '{{' but found {_snippet(buf, pos)}")

    count = 0
    expect_ad = True  # in an array: True right after '[' or ','
    while True:
        if not skip_ws():
            if array:
                raise ParseError(f"condor output is truncated: it ended after {count} ads without "
                                 "the closing ']'")
            return
        c = buf[pos]
        if array and c == "]":
            if count and expect_ad:
                raise ParseError(f"condor output is malformed: ',' before ']' after ad {count}")
            pos += 1
            if skip_ws():
                raise ParseError(f"condor output has data after the closing ']': {_snippet(buf, pos)}")
            return
        if array and not expect_ad:
            if c != ",":
                raise ParseError(f"condor output is malformed after ad {count}: expected ',' or ']' "
                                 f"but found {_snippet(buf, pos)}")
            pos += 1
            expect_ad = True
            continue
        if c != "{":
            raise ParseError(f"condor output is malformed at ad {count + 1}: expected '{{' but found "
                             f"{_snippet(buf, pos)}")
        # --- fast path: every complete ad in the buffer in one C-level decode ----------------
        # In HTCondor's layout an ad ends with "\n}" in column 0 followed by "\n,\n" (a JSON string
        # cannot hold a raw newline, and nested ads are indented), so everything up to the last
        # such boundary is a run of whole ads; decoding them as one array also shares key strings.
        if array and pos >= slow_until:
            cut = buf.rfind(_BOUNDARY, pos)
            if cut > pos:
                try:
                    batch = _loads("[" + buf[pos:cut + 2] + "]")
                except ValueError:
                    # let the one-ad path below find and report the exact problem (and do not
                    # retry the batch for every ad before that point: that would be quadratic)
                    batch = None
                    slow_until = cut
                if batch is not None and all(type(a) is dict for a in batch):
                    pos = cut + 2
                    count += len(batch)
                    expect_ad = False
                    if reader.dirty:
                        for ad in batch:
                            _repair(ad)
                    yield from batch
                    del batch
                    if pos > CHUNK:
                        reader.consumed += pos
                        slow_until -= pos
                        buf = buf[pos:]
                        pos = 0
                    continue
                slow_until = cut  # batch is None, or held a non-object: go ad by ad up to cut
        # --- one ad: decode it from the buffer, reading more until it is complete ------------
        want = CHUNK
        while True:
            try:
                ad, end = _raw_decode(buf, pos)
                break
            except json.JSONDecodeError as e:
                # HTCondor ends every ad with a '}' in column 0; if one is in the buffer the ad is
                # complete and the error is real.  Otherwise read more and try again, doubling the
                # read so an ad bigger than a chunk costs linear time, not quadratic.
                if buf.find("\n}", pos) != -1 and e.pos < buf.find("\n}", pos) + 2:
                    raise ParseError(f"condor output is malformed in ad {count + 1}: {e.msg} "
                                     f"(at {_snippet(buf, e.pos)})") from None
                want = max(CHUNK, len(buf) - pos)
                if not more():
                    raise ParseError(f"condor output is truncated in ad {count + 1} "
                                     f"({len(buf) - pos} characters of it read): {e.msg}") from None
        if not isinstance(ad, dict):
            raise ParseError(f"condor output is malformed: item {count + 1} is not an object")
        pos = end
        count += 1
        expect_ad = False
        if reader.dirty:
            _repair(ad)
        yield ad
        if pos > CHUNK:  # drop what was consumed so the buffer stays about one chunk
            reader.consumed += pos
            slow_until -= pos
            buf = buf[pos:]
            pos = 0


def _clean(value):
    """`value` with escaped bytes (lone surrogates) turned into U+FFFD; the same object if it had none."""
    if type(value) is str:
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if type(value) is list:
        cleaned = [_clean(v) for v in value]
        return value if all(a is b for a, b in zip(cleaned, value)) else cleaned
    if type(value) is dict:
        pairs = [(_clean(k), _clean(v)) for k, v in value.items()]
        same = all(ck is k and cv is v for (ck, cv), (k, v) in zip(pairs, value.items()))
        return value if same else dict(pairs)
    return value


def _repair(ad: dict) -> None:
    """Replace undecodable bytes in one ad (in place), mark it DEGRADED and log one line naming the job."""
    bad = []
    for key in list(ad):
        value = ad[key]
        cleaned, new_key = _clean(value), _clean(key)
        if cleaned is not value or new_key is not key:
            bad.append(new_key)
            if new_key is not key:
                del ad[key]
            ad[new_key] = cleaned
    if bad:
        ad[DEGRADED] = bad
        log.warning("job %s.%s (cluster %s): bytes that are not UTF-8 in %s replaced by U+FFFD",
                    ad.get("ClusterId"), ad.get("ProcId"), ad.get("DaskGatewayCluster"), ", ".join(bad))


def parse_ads_text(text: str | bytes) -> list[dict]:
    """Every ad of a complete output held in memory (small outputs and tests)."""
    import io
    stream = io.BytesIO(text) if isinstance(text, bytes) else io.StringIO(text)
    return list(parse_ads(stream))


_TERSE = re.compile(r"^\s*([0-9]+)\.([0-9]+)\s*-\s*([0-9]+)\.([0-9]+)\s*\Z")


def parse_terse_submit(stdout: str) -> list[str]:
    """Job ids from `condor_submit -terse` ("C.first - C.last" per cluster), in order.

    Lines that are not terse ranges are ignored only if blank; anything else is a ParseError, and
    so is output without any range (a submission we cannot account for).
    """
    ids: list[str] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        m = _TERSE.match(line)
        if not m:
            raise ParseError(f"unexpected condor_submit -terse output line: {line.strip()[:200]!r}")
        c1, p1, c2, p2 = (int(g) for g in m.groups())
        if c1 != c2 or p2 < p1:
            raise ParseError(f"bad condor_submit -terse range: {line.strip()!r}")
        ids.extend(f"{c1}.{p}" for p in range(p1, p2 + 1))
    if not ids:
        raise ParseError(f"condor_submit -terse printed no job ids: {stdout.strip()[:200]!r}")
    return ids
