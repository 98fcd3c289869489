"""The board's forms of the batch codec's data, in both interpreters: a
``Readings`` (an hour column by column) encodes to the bytes its rows as
dicts do and moves the state as they do, with MicroPython's arrays (no
typecode attribute, silent wrap beyond 32 bits) kept exact; on MicroPython
the state's float columns become arrays and serialize the same. Portable:
runs under pytest and in MicroPython."""

import hashlib
import sys

from agent import batch_codecstate
from agent.batch import Batch, CodecState, Readings, encode_batch

T0 = 1780272000 + 5 * 86400


def _hour(h, meters=6):
    rows = []
    for i in range(meters):
        rows.append(("m%02d" % i, T0 + 3600 * h, {
            "1.0.1.8.0.255": 2000000 + i * 7919 + h * (300 + 17 * i),
            "1.0.1.8.1.255": 1200000 + i * 31 + h * (200 + 17 * i),
            "1.0.1.8.2.255": 800000 + i * 7888 + h * 100,
            "1.0.32.7.0.255": (2300 + (h * 37 + i * 11) % 150) / 10,
            "1.0.31.7.0.255": ((h * 911 + i) % 9000) / 1000,
            "1.0.21.7.0.255": (h * 97 + i * 13) % 4000,
            "1.0.14.7.0.255": 49.97 + (h % 7) / 100,
            "0.0.96.3.10.255": i % 2 == 0,
        }))
    return rows


def _chain(columns):
    state, out = None, []
    for h in range(4):
        rows = _hour(h)
        if columns:
            r = Readings()
            for m, ts, vals in rows:
                r.add(m, ts, vals)
            rows = r
        b = Batch("dc-7", h + 1, T0 + 3600 * h + 30, rows, (), [("m00", "read", None)])
        out.append(encode_batch(b, state))
        state = state or CodecState("dc-7")
        state.advance(b)
        out.append(state.to_bytes())
    return out, state


def test_readings_encode_and_advance_as_dict_rows_do():
    got, state = _chain(True)
    want, _ = _chain(False)
    assert got == want
    # the same bytes CPython computes (this test runs in both interpreters)
    h = hashlib.sha256(b"".join(got)).digest()
    assert h[:8] == bytes.fromhex("af0ea1d159b5bf3f"), h
    arrays = [type(c) is not list for c in state._vals]
    assert any(arrays) == (sys.implementation.name == "micropython") == batch_codecstate.COMPACT


def test_values_out_of_an_arrays_range_stay_exact():
    r = Readings()
    r.add("a", T0, {"i": 2 ** 31 - 1, "f": 0.5, "n": 7})
    r.add("b", T0, {"i": 2 ** 31, "f": 3, "n": None})
    r.add("c", T0, {"i": -(2 ** 31) - 1, "f": -0.0, "n": 2 ** 70})
    got = [vals for _, _, vals in r]
    assert [v["i"] for v in got] == [2 ** 31 - 1, 2 ** 31, -(2 ** 31) - 1]
    assert [v["n"] for v in got] == [7, None, 2 ** 70]
    assert type(got[1]["f"]) is int and got[1]["f"] == 3
    assert str(got[2]["f"]) == "-0.0" and got[0]["f"] == 0.5


def test_a_compact_state_takes_a_new_meter_and_an_int():
    state = CodecState("dc-7")
    for h, rows in enumerate([[("a", {"v": 230.1}), ("b", {"v": 229.9})],
                              [("c", {"v": 230.5})],
                              [("b", {"v": 231})]]):
        b = Batch("dc-7", h + 1, T0 + 3600 * h, [(m, T0 + 3600 * h, v) for m, v in rows])
        encode_batch(b, state if h else None)
        state.advance(b)
    again = CodecState.from_bytes(state.to_bytes())
    assert [state.value(m, "v") for m in "abc"] == [230.1, 231, 230.5]
    assert type(state.value("b", "v")) is int and again.to_bytes() == state.to_bytes()
