"""Property tests of the batch codec (CPython, Hypothesis): random batches
round-trip exactly as keyframes and as delta chains with both ends' states
agreeing; any bytes decode to a Batch or a BatchError; flipped bits in a
valid batch never produce another exception."""

from __future__ import annotations

import math
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.batch import BATCH_REASONS, Batch, BatchError, CodecState, decode_batch, encode_batch
from agent.batch_bits import (
    BitReader,
    BitWriter,
    column_head,
    read_column,
    unzigzag,
    write_column,
)
from drivers.meter import scaled

T0 = 1780272000
OBIS = ["1.0.1.8.0.255", "1.0.1.8.1.255", "1.0.1.8.2.255", "1.0.1.7.0.255", "1.0.21.7.0.255",
        "1.0.41.7.0.255", "1.0.61.7.0.255", "1.0.31.7.0.255", "1.0.32.7.0.255",
        "1.0.14.7.0.255", "0.0.96.3.10.255", "vendor:temp"]
METERS = ["m%d" % i for i in range(6)] + ["ünïcode-meter", "x" * 40]

decimal = st.builds(scaled, st.integers(-10 ** 12, 10 ** 12), st.integers(-9, 3))
value = st.one_of(st.none(), st.integers(-2 ** 64, 2 ** 64), decimal,
                  st.floats(allow_nan=False), st.integers(0, 10 ** 9))


@st.composite
def batches(draw, seq=1, created=None):
    created = draw(st.integers(T0, T0 + 10 ** 7)) if created is None else created
    meters = draw(st.lists(st.sampled_from(METERS), unique=True, max_size=5))
    rows = []
    for m in meters:
        regs = draw(st.lists(st.sampled_from(OBIS), unique=True, max_size=8))
        for h in range(draw(st.integers(0, 3))):
            ts = created - created % 3600 + 3600 * h + draw(st.sampled_from([0, 0, 0, 7, -3600]))
            rows.append((m, ts, {o: draw(value) for o in regs}))
    events = [(m, created + draw(st.integers(-7200, 7200)), draw(st.integers(0, 300)))
              for m in draw(st.lists(st.sampled_from(METERS), max_size=3))]
    statuses = [(m, draw(st.sampled_from(["ok", "timeout", "partial"])),
                 draw(st.one_of(st.none(), st.text(max_size=20))))
                for m in draw(st.lists(st.sampled_from(METERS), max_size=4))]
    return Batch("dc-%d" % draw(st.integers(0, 9)), seq, created, rows, events, statuses)


def same_values(a: Batch, b: Batch) -> None:
    assert a == b
    for (_, _, va), (_, _, vb) in zip(a.canonical()[0], b.canonical()[0], strict=True):
        for k in va:
            x, y = va[k], vb[k]
            assert type(x) is type(y), (k, x, y)
            if isinstance(x, float):
                assert struct.pack(">d", x) == struct.pack(">d", y) or (math.isnan(x) and
                                                                       math.isnan(y))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_keyframe_round_trip(b: Batch) -> None:
    d = decode_batch(encode_batch(b, None), None)
    same_values(d, b)
    assert d.keyframe


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_delta_chain_round_trip(data: st.DataObject) -> None:
    agent, hes, slow = CodecState(), CodecState(), CodecState()
    created = T0 + 3600 * 1000
    for seq in range(data.draw(st.integers(2, 5))):
        b = data.draw(batches(seq=seq, created=created + 3600 * seq))
        b.device = "dc-1"
        base = agent if seq else None
        d = decode_batch(encode_batch(b, base), hes if seq else None)
        same_values(d, b)
        # advance() from the entries the codec computed while coding (encoder
        # and decoder side) must equal advance() value by value from scratch
        plain = Batch(d.device, d.seq, d.created, d.readings, d.events, d.statuses)
        plain.keyframe = d.keyframe
        agent.advance(b)
        hes.advance(d)
        slow.advance(plain)
        assert agent.to_bytes() == hes.to_bytes() == slow.to_bytes()
        assert CodecState.from_bytes(hes.to_bytes()).digest() == agent.digest()
        assert CodecState.from_bytes(slow.to_bytes()).to_bytes() == slow.to_bytes()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_batch_error(data: bytes) -> None:
    for base in (None, CodecState()):
        try:
            decode_batch(data, base)
        except BatchError as e:
            assert e.reason in BATCH_REASONS
    try:
        CodecState.from_bytes(data)
    except BatchError as e:
        assert e.reason in BATCH_REASONS


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.data())
def test_corrupted_batches_decode_or_batch_error(b: Batch, data: st.DataObject) -> None:
    good = bytearray(encode_batch(b, None))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(good) - 1))
        good[i] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(good)))
    for blob in (bytes(good), bytes(good[:cut])):
        try:
            decode_batch(blob, None)
        except BatchError as e:
            assert e.reason in BATCH_REASONS


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(seq=1, created=T0 + 7200), batches(seq=2, created=T0 + 10800), st.data())
def test_corrupted_deltas_against_a_real_state(a: Batch, b: Batch, data: st.DataObject) -> None:
    a.device = b.device = "dc-1"
    state = CodecState()
    encode_batch(a, None)
    state.advance(a)
    good = bytearray(encode_batch(b, state))
    assert decode_batch(bytes(good), state) == b
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(good) - 1))
        good[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        decode_batch(bytes(good), state)
    except BatchError as e:
        assert e.reason in BATCH_REASONS


def test_encode_rejects_non_numbers() -> None:
    import pytest
    for bad in ("230.1", [1], {"a": 1}, b"x"):
        with pytest.raises(BatchError) as ei:
            encode_batch(Batch("d", 1, T0, [("m", T0, {"1.0.1.8.0.255": bad})]), None)
        assert ei.value.reason == "bad_value"
    with pytest.raises(BatchError) as ei:
        encode_batch(Batch("d", 1, T0, [("m" * 300, T0, {})]), None)
    assert ei.value.reason == "bad_length"
    for seq, created in ((-1, T0), (1, -5)):
        with pytest.raises(BatchError) as ei:
            encode_batch(Batch("d", seq, created), None)
        assert ei.value.reason == "bad_value"


def _bitwise_read_column(r: BitReader, n: int) -> list[int]:
    """The column's values as the format defines them, one code at a time
    through ``BitReader`` (the reference for the byte-wise fast reader)."""
    signed, fixed, p, lo = column_head(r)
    zs = [lo + r.bits(p) for _ in range(n)] if fixed else [r.rice(p) for _ in range(n)]
    return [unzigzag(z) for z in zs] if signed else zs


def _outcome(data: bytes, start_bit: int, n: int) -> tuple[object, ...]:
    out = []
    for reader in (read_column, _bitwise_read_column):
        r = BitReader(data)
        r.bits(start_bit)
        try:
            out.append(("ok", reader(r, n), r.remaining()))
        except BatchError as e:
            out.append(("error", e.reason))
    return tuple(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(-300, 300), st.integers(-(1 << 80), 1 << 80)),
                min_size=1, max_size=200), st.integers(0, 7))
def test_column_round_trip_at_any_bit_offset(values: list[int], offset: int) -> None:
    w = BitWriter()
    w.bits(0, offset)
    write_column(w, values)
    data = w.getvalue()
    fast, ref = _outcome(data, offset, len(values))
    assert fast == ref
    assert fast[1] == values


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 7), st.integers(1, 100))
def test_column_reader_agrees_with_bitwise_reader_on_any_bytes(data: bytes, offset: int,
                                                                n: int) -> None:
    if 8 * len(data) < offset:
        return
    fast, ref = _outcome(data, offset, n)
    assert fast == ref


_TRICKY = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0.0, -0.0, 0.1 + 0.2, 229.9, -0.001, 1e15, 9007199254740993.0,
                                     123.456789012345, 5e-324]),
                    st.integers(-10**6, 10**6).map(lambda n: n / 1000),
                    st.integers(-2**60, 2**60))


@settings(max_examples=300, deadline=None)
@given(_TRICKY, _TRICKY, st.integers(0, 15))
def test_the_float_memo_changes_no_result(prev, v, k) -> None:
    """``exponent``/``mantissa``/``step`` remember each float's exponent and
    mantissa on CPython (the HES's hot path); what they return is what the
    plain computation (a board's: no memo) returns, cold or warm."""
    from agent import batch_columns as bc

    def results() -> tuple:
        return (bc.exponent(v), [bc.mantissa(v, k, t) for t in (bc.T_INT, bc.T_DEC)],
                bc.step((prev, None, 0), v), bc.step(None, v))

    saved = bc.MEMO_MAX
    try:
        bc.MEMO_MAX = 0
        plain = results()
    finally:
        bc.MEMO_MAX = saved
    assert saved and results() == plain and results() == plain     # cold, then warm


_ENTRY = st.one_of(st.none(), st.tuples(st.one_of(st.integers(-2**62, 2**62), st.floats()),
                                        st.one_of(st.none(), st.integers(-10**6, 10**6)),
                                        st.integers(0, 15)))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_ENTRY, st.booleans()), max_size=40), st.integers(0, 2),
       st.lists(st.integers(-2**40, 2**40), min_size=40, max_size=40))
def test_the_int_column_fast_path_rebuilds_as_the_general_one(cells, p, residuals) -> None:
    """The hourly batch's usual column (ints, one cell per meter, no
    relation) skips the general rebuild's bookkeeping, not its arithmetic."""
    from agent import batch_columns as bc

    entries = [e for e, _ in cells]
    nulls = [int(n) for _, n in cells]
    first = [e[0] if e is not None and isinstance(e[0], int) else None for e in entries]
    fast = bc._rebuild_ints(entries, first, nulls, residuals, residuals[::-1], p)
    general = bc._rebuild([1] * len(cells), entries, first, nulls, residuals, residuals[::-1],
                          p, bc.T_INT, 0, "", None, False)
    assert fast == general
