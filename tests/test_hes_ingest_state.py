"""The HES's stored codec state (``hes_lite.wire_state``): the packed form
loads into the state its canonical bytes stand for (same bytes, same
digest, same decodes after); states stored canonical before it existed still
load; what it cannot hold is written canonical; any bytes load or give a
``BatchError``."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.batch import Batch, BatchError, CodecState, decode_batch, encode_batch
from hes_lite import wire, wire_state
from hes_lite.ingest import Ingestor
from hes_lite.store import DecodedBatch, open_store
from tests.test_batch_props import T0, batches

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def chain(bs: list[Batch]) -> CodecState:
    """The state both ends hold after ``bs`` (each coded against the last)."""
    state: CodecState | None = None
    for b in bs:
        encode_batch(b, state)
        nxt = state if state is not None and not b.keyframe else CodecState(b.device)
        nxt.advance(b)
        state = nxt
    assert state is not None
    return state


@st.composite
def states(draw):
    n = draw(st.integers(1, 3))
    return chain([draw(batches(seq=i + 1, created=T0 + 3600 * i)) for i in range(n)])


@FAST
@given(states(), batches(seq=9, created=T0 + 3600 * 8))
def test_a_packed_state_is_the_state_its_canonical_bytes_stand_for(state, nxt):
    canonical = bytes(state.to_bytes())
    stored = wire_state.dump(state)
    got = wire_state.load(stored)
    assert got.to_bytes() == canonical
    assert got.digest() == CodecState.from_bytes(canonical).digest() == state.digest()
    assert (got.device, got.seq, got.keyframe_ts) == (state.device, state.seq, state.keyframe_ts)
    # the next batch decodes the same against it and moves it the same way
    nxt.device = state.device
    data = encode_batch(nxt, state)
    a, b = decode_batch(data, got), decode_batch(data, CodecState.from_bytes(canonical))
    assert a == b
    after = got if not a.keyframe else CodecState(a.device)
    after.advance(a)
    again = CodecState.from_bytes(canonical) if not b.keyframe else CodecState(b.device)
    again.advance(b)
    assert after.to_bytes() == again.to_bytes()


def hour(seq: int, values: dict[str, int | float | None]) -> dict[str, list]:
    return {"m%d" % m: [(T0 + 3600 * seq, dict(values))] for m in range(3)}


def test_a_state_stored_canonical_still_decodes_and_is_written_packed_after():
    values = {"1.0.1.8.0.255": 1000, "1.0.32.7.0.255": 229.5, "vendor:x": None}
    k, canonical = wire.encode("dc", 1, hour(1, values))
    d, _ = wire.encode("dc", 2, hour(2, {**values, "1.0.1.8.0.255": 1200}), base=canonical)
    assert canonical[:4] == b"WCS\x02"
    got = wire.decode(d, canonical)
    assert got.codec_state is not None and got.codec_state[:4] == wire_state.PACKED
    assert got.rows == wire.decode(d, wire.decode(k, None).codec_state).rows
    assert [r[3][0] for r in got.rows] == [1200] * 3


def test_a_state_stored_canonical_by_an_older_hes_still_decodes_on_both_stores(db_url):
    key = bytes(range(32))
    store = open_store(db_url)
    store.add_key("dc", 1, key, 0.0)
    values = {"1.0.1.8.0.255": 1000, "1.0.32.7.0.255": 229.5}
    k, canonical = wire.encode("dc", 1, hour(1, values))
    d, _ = wire.encode("dc", 2, hour(2, {**values, "1.0.1.8.0.255": 1100}), base=canonical)
    Ingestor(store).submit(wire.seal(key, "dc", 1, 1, k))
    # the state as a HES before the packed form left it (schema migrated since)
    store.apply([DecodedBatch("dc", 1, [], codec_state=canonical)], {"dc": 1})
    assert store.codec_state("dc") == (1, canonical)
    ack = Ingestor(store, state_cache=0).submit(wire.seal(key, "dc", 1, 2, d))
    assert ack.status == "accepted" and not ack.need_keyframe and store.backlog() == []
    held = store.codec_state("dc")
    assert held is not None and held[0] == 2 and held[1][:4] == wire_state.PACKED
    assert sorted(r[2]["1.0.1.8.0.255"] for r in store.rows()) == [1000] * 3 + [1100] * 3
    store.close()


def test_mixed_and_empty_columns_round_trip():
    s = chain([Batch("dc", 1, T0, [("a", T0, {"x": 1, "y": None}), ("b", T0, {"x": 2.5}),
                                    ("c", T0, {"y": 7})]),
               Batch("dc", 2, T0 + 3600, [("a", T0 + 3600, {"x": 3.25, "y": -4}),
                                          ("d", T0 + 3600, {"z": None})])])
    stored = wire_state.dump(s)
    assert stored[:4] == wire_state.PACKED
    assert wire_state.load(stored).to_bytes() == s.to_bytes()
    f = chain([Batch("dc", 1, T0, [("a", T0, {"x": 1.5}), ("b", T0, {"x": -2.25})])])
    before = wire_state.dump(f)
    f.compact()     # a float column as an array (a board's form) packs the same
    assert type(f._vals[0]).__name__ == "array" and wire_state.dump(f) == before


def test_an_int_beyond_64_bits_is_stored_canonical():
    s = chain([Batch("dc", 1, T0, [("a", T0, {"x": 1 << 70})])])
    stored = wire_state.dump(s)
    assert stored == s.to_bytes() and stored[:4] == b"WCS\x02"
    assert wire_state.load(stored).to_bytes() == s.to_bytes()


def _loads_or_refuses(data: bytes) -> None:
    try:
        got = wire_state.load(data)
    except BatchError:
        return
    assert isinstance(got, CodecState)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_load_or_give_a_batch_error(data):
    _loads_or_refuses(data)
    _loads_or_refuses(wire_state.PACKED + data)


PACKED = wire_state.dump(chain([Batch("dc", 1, T0, [("a", T0, {"x": 1, "y": 2.5, "z": None}),
                                                     ("b", T0, {"x": -3})],
                                      statuses=[("a", "ok", None), ("b", "timeout", "e")])]))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(PACKED) - 1), st.integers(1, 255), st.integers(0, len(PACKED)))
def test_damaged_packed_states_load_or_give_a_batch_error(at, flip, cut):
    damaged = bytearray(PACKED)
    damaged[at] ^= flip
    _loads_or_refuses(bytes(damaged))
    _loads_or_refuses(PACKED[:cut])
