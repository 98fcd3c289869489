"""Hypothesis properties of the IEC 62056-21 parsers and codecs: any bytes in
give messages/events or the package's protocol error (a
drivers.RemoteProtocolError), never another exception; every encoder's
output decodes back to the same value, however it is split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import RemoteProtocolError
from drivers.iec62056_21 import IecProtocolError, dissect
from drivers.iec62056_21.core import NEED_DATA, Connection
from drivers.iec62056_21.dataset import DataSet, Readout
from drivers.iec62056_21.framer import Framer
from drivers.iec62056_21.frames import Block, Command, Identification, OptionSelect, Request
from drivers.iec62056_21.profile import (
    ProfileSection,
    clock_texts,
    clock_value,
    format_profile,
    parse_profile,
    parse_request,
    parse_stamp,
    request_text,
    stamp,
)
from drivers.iec62056_21.quirks import QuirkRegistry

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
VALUE = st.text(PRINTABLE.filter(lambda c: c not in "()*/!"), max_size=20)
ADDRESS = st.text(PRINTABLE.filter(lambda c: c not in "()/!"), max_size=12)
UNIT = st.none() | st.text(PRINTABLE.filter(lambda c: c not in "()*/!"), max_size=6)
DATASET = st.builds(DataSet, ADDRESS, st.lists(st.tuples(VALUE, UNIT), min_size=1, max_size=3))
BYTES = st.binary(max_size=300)
NOISY = st.lists(st.sampled_from([b"\x01", b"\x02", b"\x03", b"\x04", b"\x06", b"\x15", b"/",
                                  b"?", b"!", b"\r\n", b"(", b")", b"*", b"1.8.0", b"P0",
                                  b"\x80", b"\x00"]) | st.binary(max_size=4), max_size=60
                 ).map(b"".join)


def _drain_framer(f: Framer) -> None:
    for _ in range(10000):
        try:
            if f.next_frame() is None:
                return
        except RemoteProtocolError:
            continue
    raise AssertionError("framer does not make progress")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["client", "meter"]), BYTES | NOISY, st.integers(1, 7))
def test_framer_any_bytes_any_split(role: str, data: bytes, step: int) -> None:
    f = Framer(role, max_frame=200)
    for i in range(0, len(data), step):
        f.feed(data[i:i + step])
        _drain_framer(f)
    assert f.pending <= 200


@settings(max_examples=300, deadline=None)
@given(BYTES | NOISY)
def test_connection_any_bytes_events_or_protocol_error(data: bytes) -> None:
    for start in ("idle", "await_id", "programming"):
        conn = Connection(quirks=QuirkRegistry())
        if start != "idle":
            conn.send(Request("1"))
        if start == "programming":
            conn.receive_data(b"/WUM5X\r\n")
            conn.next_event()
            conn.send(conn.option_select(True))
        conn.receive_data(data)
        for _ in range(10000):
            try:
                if conn.next_event() is NEED_DATA:
                    break
            except IecProtocolError:
                continue


@settings(max_examples=200, deadline=None)
@given(BYTES | NOISY)
def test_readout_and_profile_parsers_any_text(data: bytes) -> None:
    text = bytes(b & 0x7F for b in data).decode()
    for parse in (Readout.from_text, parse_profile):
        try:
            parse(text)
        except IecProtocolError:
            pass
    dissect(data)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(DATASET, max_size=3), max_size=5), st.booleans(), st.integers(1, 9))
def test_readout_block_roundtrip(lines: list, complete: bool, step: int) -> None:
    # "(1)" then "(2)" on one line reads back as one set with two values: the
    # format cannot tell them apart, so later sets on a line carry an address.
    lines = [ln for ln in lines if ln and all(d.address for d in ln[1:])]
    ro = Readout(lines, complete=complete)
    text = ro.to_text()
    back = Readout.from_text(text)
    assert back.to_text() == text
    assert back.datasets() == ro.datasets()
    raw = Block(text).to_bytes()
    f = Framer("client")
    got = []
    for i in range(0, len(raw), step):
        f.feed(raw[i:i + step])
        while (m := f.next_frame()) is not None:
            got.append(m)
    assert got == [Block(text)]


MESSAGES = st.one_of(
    st.builds(Request, st.text(st.characters(min_codepoint=0x30, max_codepoint=0x39), max_size=32)),
    st.builds(Identification, st.text(st.characters(min_codepoint=0x41, max_codepoint=0x5A),
                                      min_size=3, max_size=3),
              st.sampled_from("0123456ABCDEFZ"),
              st.text(PRINTABLE.filter(lambda c: c not in "/!"), max_size=16)),
    st.builds(OptionSelect, st.sampled_from("0123456"), st.sampled_from("01")),
    st.builds(Command, st.sampled_from("PRW"), st.sampled_from("0125"),
              st.builds(lambda d: d.to_text(), DATASET), st.booleans()),
    st.builds(Block, st.builds(lambda d: d.to_text(), DATASET), st.booleans()),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(MESSAGES, min_size=1, max_size=5), st.integers(1, 5))
def test_message_stream_roundtrip(msgs: list, step: int) -> None:
    raw = b"".join(m.to_bytes() for m in msgs)
    f = Framer("meter")          # an ACK followed by digits is an option select
    got = []
    for i in range(0, len(raw), step):
        f.feed(raw[i:i + step])
        while (m := f.next_frame()) is not None:
            got.append(m)
    assert [m.to_bytes() for m in got] == [m.to_bytes() for m in msgs]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**31 // 3600 - 24 * 400).map(lambda h: h * 3600 + 946684800 // 3600 * 0),
       st.lists(st.lists(st.integers(0, 10**9), min_size=2, max_size=2), max_size=6),
       st.integers(0, 255))
def test_profile_roundtrip(start: int, rows: list, status: int) -> None:
    start = 946684800 + (start % (100 * 365 * 86400)) // 3600 * 3600   # 2000..2099
    sec = ProfileSection("P.01", start, status, 60, [("1.8.0", "kWh"), ("2.8.0", "kWh")],
                         [["%07d.%03d" % divmod(v, 1000) for v in r] for r in rows])
    text = format_profile([sec])
    back = parse_profile(text)
    assert format_profile(back) == text
    got = back[0].profile_rows()
    assert [r.ts for r in got] == [start + i * 3600 for i in range(len(rows))]
    assert [[r.values["1.0.1.8.0.255"], r.values["1.0.2.8.0.255"]] for r in got] == rows


@settings(max_examples=300, deadline=None)
@given(st.integers(946684800, 4102444799 - 3600))   # two-digit years: 2000 .. 2099
def test_time_fields_roundtrip(ts: int) -> None:
    assert parse_stamp(stamp(ts, seconds=True)) == ts
    assert parse_stamp(stamp(ts, seconds=True, season="0")) == ts
    assert parse_stamp(stamp(ts)) == ts - ts % 60
    date, tod = clock_texts(ts)
    assert clock_value(date, tod) == ts
    assert parse_request(request_text(ts - ts % 60, ts - ts % 60 + 3600)) == (
        "P.01", ts - ts % 60, ts - ts % 60 + 3600)
