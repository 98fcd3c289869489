"""The board's forms of the batch codec's data give the bytes the dict forms
give: a ``Readings`` (an hour held column by column) encodes to exactly the
batch its rows as dicts encode to, and moves the state exactly as they do;
a codec state with its all-float columns as arrays (``COMPACT``, on by
default on MicroPython) serializes, hashes and predicts as the lists do.
Pinned on the golden chains (tests/vectors/batch/golden.json) and on random
batches (Hypothesis); the Readings keeps every value's type and bits."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import batch_codecstate
from agent.batch import Batch, CodecState, Readings, decode_batch, encode_batch
from tests.batch_golden import GOLDEN, SCENARIOS, chain, same
from tests.test_batch_props import T0, batches

WANT = json.loads(GOLDEN.read_text())


@pytest.fixture
def compact() -> Iterator[None]:
    old = batch_codecstate.COMPACT
    batch_codecstate.COMPACT = True
    yield
    batch_codecstate.COMPACT = old


def columns(b: Batch) -> Batch:
    """The same batch with its readings in a Readings, filled row by row."""
    rows = Readings()
    for m, ts, vals in b.readings:
        rows.add(m, ts, vals)
    return Batch(b.device, b.seq, b.created, rows, b.events, b.statuses)


def bits(v: Any) -> Any:
    return (type(v), struct.pack(">d", v)) if isinstance(v, float) else (type(v), v)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=["%d-%d-%d" % s for s in SCENARIOS])
def test_golden_chains_from_readings_and_compact_states(scenario: tuple[int, int, int],
                                                        compact: None) -> None:
    import hashlib
    agent: CodecState | None = None
    hes: CodecState | None = None
    want = WANT["%d-%d-%d" % scenario]
    arrays = 0
    for i, b in enumerate(chain(*scenario)):
        c = columns(b)
        data = encode_batch(c, agent, keyframe=(i == 0))
        assert hashlib.sha256(data).hexdigest() == want[i][0], "batch %d" % (i + 1)
        got = decode_batch(data, hes)
        assert same(got, b)
        agent = CodecState(c.device) if agent is None or c.keyframe else agent
        agent.advance(c)
        # the HES keeps lists, loads a compact state the board would write
        hes = CodecState(c.device) if hes is None else CodecState.from_bytes(hes.to_bytes())
        hes.advance(got)
        assert hashlib.sha256(agent.to_bytes()).hexdigest() == want[i][1], "state %d" % (i + 1)
        assert agent.digest() == hes.digest()
        arrays += sum(type(c) is not list for c in agent._vals)
    assert arrays


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.booleans())
def test_readings_encode_and_advance_as_dict_rows(data: st.DataObject, on: bool) -> None:
    old = batch_codecstate.COMPACT
    batch_codecstate.COMPACT = on
    try:
        a, b = CodecState(), CodecState()
        for seq in range(data.draw(st.integers(1, 4))):
            plain = data.draw(batches(seq=seq, created=T0 + 3600 * (1000 + seq)))
            plain.device = "dc-1"
            cols = columns(plain)
            got = encode_batch(cols, b if seq else None)
            assert got == encode_batch(plain, a if seq else None)
            assert decode_batch(got, None if cols.keyframe else b) == plain
            a.advance(plain)
            b.advance(cols)
            assert a.to_bytes() == b.to_bytes()
            assert CodecState.from_bytes(b.to_bytes()).to_bytes() == b.to_bytes()
    finally:
        batch_codecstate.COMPACT = old


@settings(max_examples=40, deadline=None)
@given(batches())
def test_readings_give_back_every_value_with_its_type_and_bits(b: Batch) -> None:
    cols = columns(b)
    assert len(cols.readings) == len(b.readings)
    for (m, ts, vals), (m2, ts2, vals2) in zip(b.readings, cols.readings, strict=True):
        assert (m, ts, sorted(vals)) == (m2, ts2, sorted(vals2))
        assert all(bits(vals[o]) == bits(vals2[o]) or (isinstance(vals[o], float) and
                                                        math.isnan(vals[o]) and
                                                        math.isnan(vals2[o])) for o in vals)
    assert cols == b


def test_columns_take_the_narrow_form_until_a_value_does_not_fit() -> None:
    rows = Readings()
    rows.add("a", 10, {"f": 1.5, "i": 7, "n": None, "big": 2 ** 40, "b": True})
    rows.add("b", 10, {"f": 2.25, "i": -(2 ** 31), "n": 3, "big": 1, "b": False})
    assert type(rows.column("f")) is not list and type(rows.column("i")) is not list
    assert type(rows.column("n")) is list and type(rows.column("big")) is list
    rows.add("c", 10, {"f": 3, "i": 2 ** 31, "x": float("nan")})   # an int, 32 bits over
    assert type(rows.column("f")) is list and type(rows.column("i")) is list
    assert type(rows.column("x")) is list                           # nan keeps its bits
    got = [vals for _, _, vals in rows]
    assert got[0] == {"f": 1.5, "i": 7, "n": None, "big": 2 ** 40, "b": 1}
    assert type(got[0]["b"]) is int and type(got[2]["f"]) is int
    assert got[1]["i"] == -(2 ** 31) and got[2] == {"f": 3, "i": 2 ** 31, "x": got[2]["x"]}
    assert rows.shapes[0] is rows.shapes[1] and "x" not in rows.shapes[0]


def test_a_compact_state_goes_back_to_lists_for_what_an_array_cannot_hold() -> None:
    hours: list[list[tuple[str, dict[str, float]]]] = [[("a", {"v": 230.1}), ("b", {"v": 229.9})],
             [("c", {"v": 230.5})],          # a new meter: empty slots
             [("b", {"v": 231})],                        # an int
             [("b", {"v": 230.0})]]
    kinds: dict[bool, list[str]] = {}
    out: dict[bool, list[bytes]] = {}
    old = batch_codecstate.COMPACT
    try:
        for on in (True, False):
            batch_codecstate.COMPACT = on
            state = CodecState("dc-1")
            kinds[on], out[on] = [], []
            for h, rows in enumerate(hours):
                b = Batch("dc-1", h + 1, T0 + 3600 * h, [(m, T0 + 3600 * h, v) for m, v in rows])
                out[on].append(encode_batch(b, state if h else None))
                state.advance(b)
                out[on].append(state.to_bytes())
                kinds[on].append("list" if type(state._vals[0]) is list else "array")
    finally:
        batch_codecstate.COMPACT = old
    assert out[True] == out[False]
    assert kinds[True] == ["array", "array", "list", "array"] and set(kinds[False]) == {"list"}
