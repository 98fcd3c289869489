"""The batch codec: exact round trips, keyframes and deltas, state agreement,
typed errors. Portable: runs under pytest and in MicroPython."""

from agent.batch import (
    BATCH_REASONS,
    Batch,
    BatchError,
    CodecState,
    decode_batch,
    encode_batch,
    peek_batch,
)

T0 = 1780272000 + 5 * 86400
E = "1.0.1.8.0.255"


class Rng:
    """A small LCG so both interpreters draw the same numbers."""

    def __init__(self, seed):
        self.s = seed

    def next(self, n):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) & ((1 << 64) - 1)
        return (self.s >> 33) % n


def _rows(hour, meters=4):
    rows = []
    for i in range(meters):
        ts = T0 + hour * 3600
        rows.append(("m%02d" % i, ts, {
            E: 1000000 + i * 7919 + hour * (300 + 17 * i) + hour * hour,
            "1.0.1.8.1.255": 600000 + i + hour * (300 + 17 * i) + hour * hour,
            "1.0.32.7.0.255": (2300 + (hour * 37 + i * 11) % 150) / 10,
            "1.0.31.7.0.255": ((hour * 911 + i) % 9000) / 1000,
            "1.0.14.7.0.255": 49.97 + (hour % 7) / 100,
            "0.0.96.3.10.255": 1,
        }))
    return rows


def _chain(hours, meters=4, drop=()):
    agent, hes = CodecState(), CodecState()
    sizes = []
    for h in range(hours):
        rows = [r for r in _rows(h, meters) if (h, r[0]) not in drop]
        b = Batch("dc-1", h, T0 + h * 3600 + 40, rows, [("m00", T0 + h * 3600 + 5, 40)],
                  [(r[0], "ok", None) for r in rows])
        data = encode_batch(b, agent if h else None)
        d = decode_batch(data, hes if h else None)
        assert d == b, (h, d.readings, b.readings)
        assert d.keyframe == b.keyframe
        agent.advance(b)
        hes.advance(d)
        assert agent.to_bytes() == hes.to_bytes()
        sizes.append(len(data))
    return sizes, agent


def test_round_trip_chain_and_deltas_are_small():
    sizes, _ = _chain(6)
    assert sizes[0] > sizes[2]
    assert peek_batch(encode_batch(Batch("dc-1", 9, T0), None)).keyframe


def test_missing_meters_and_new_meters():
    _chain(5, meters=5, drop=((1, "m02"), (2, "m02"), (3, "m04"), (0, "m03")))


def test_values_round_trip_exactly_with_types():
    vals = {"a": 1, "b": 1.0, "c": -0.001, "d": 12345.678, "e": None, "f": 0.1 + 0.2,
            "g": 1e300, "h": -0.0, "i": 2 ** 70, "j": -(2 ** 40), "k": 5e-324,
            "l": float("inf"), "1.0.1.8.0.255": 0, "x": True}
    b = Batch("dev", 1, T0, [("m", T0, vals)])
    d = decode_batch(encode_batch(b, None), None)
    got = d.readings[0][2]
    assert sorted(got) == sorted(vals)
    for k in vals:
        assert got[k] == vals[k], k
        assert type(got[k]) is type(vals[k]) or k == "x", k
    assert str(got["h"]) == "-0.0"
    assert got["f"] == 0.1 + 0.2


def test_decimals_decode_as_scaled():
    from drivers.meter import scaled
    r = Rng(7)
    rows = []
    for i in range(40):
        k = r.next(7)
        m = r.next(2000000) - 1000000
        rows.append(("m", T0 + 3600 * i, {"v": scaled(m, -k)}))
    b = Batch("dev", 1, T0, rows)
    d = decode_batch(encode_batch(b, None), None)
    assert d == b


def test_multi_row_meters_events_and_statuses():
    rows = [("m1", T0 + 3600 * h, {E: 10 * h * h, "x": None if h == 2 else h}) for h in range(5)]
    rows += [("m2", T0 + 60, {"y": 1.5})]
    b = Batch("dev", 3, T0 + 5 * 3600, rows,
              [("m1", T0 + 7, 1), ("m3", T0 - 100, 47), ("m1", T0 + 97, 2)],
              [("m1", "ok", None), ("m2", "partial", "register 1.0.2.8.0.255 refused"),
               ("m3", "timeout", "no answer"), ("m3", "retry", None)])
    d = decode_batch(encode_batch(b, None), None)
    assert d == b
    st = CodecState()
    st.advance(d)
    b2 = Batch("dev", 4, T0 + 6 * 3600, [("m1", T0 + 5 * 3600, {E: 250, "x": 5})], [],
               [("m1", "ok", None), ("m2", "partial", "register 1.0.2.8.0.255 refused")])
    d2 = decode_batch(encode_batch(b2, st), st)
    assert d2 == b2 and not d2.keyframe


def test_keyframe_daily_and_on_request():
    _, st = _chain(3)
    late = Batch("dc-1", 3, st.keyframe_ts + 86400, _rows(3))
    assert peek_batch(encode_batch(late, st)).keyframe
    b = Batch("dc-1", 3, T0 + 3 * 3600, _rows(3))
    assert not peek_batch(encode_batch(b, st)).keyframe
    assert peek_batch(encode_batch(b, st, keyframe=True)).keyframe


def test_base_mismatch_is_detected():
    _, st = _chain(3)
    b = Batch("dc-1", 3, T0 + 3 * 3600, _rows(3))
    data = encode_batch(b, st)
    for base in (None, CodecState()):
        try:
            decode_batch(data, base)
        except BatchError as e:
            assert e.reason == "base_mismatch"
        else:
            raise AssertionError("decoded against the wrong base")
    other = st.copy()
    other.advance(b)
    try:
        decode_batch(data, other)
    except BatchError as e:
        assert e.reason == "base_mismatch" and e.base_seq == 2
    else:
        raise AssertionError("decoded against an advanced base")


def test_state_bytes_round_trip():
    _, st = _chain(4, meters=3)
    st2 = CodecState.from_bytes(st.to_bytes())
    assert st2.to_bytes() == st.to_bytes()
    assert st2.digest() == st.digest()
    assert st2.seq == 3


def test_garbage_gives_batch_error_only():
    good = encode_batch(Batch("dc-1", 1, T0, _rows(0)), None)
    r = Rng(3)
    cases = [b"", b"\x01", b"\x02\x00", good[:5], good[:-1], good + b"\x00\xff"]
    for _ in range(150):
        bad = bytearray(good)
        for _ in range(1 + r.next(4)):
            bad[r.next(len(bad))] = r.next(256)
        cases.append(bytes(bad))
        cases.append(good[:r.next(len(good))])
    for data in cases:
        try:
            decode_batch(data, None)
        except BatchError as e:
            assert e.reason in BATCH_REASONS
    for data in cases[:40]:
        try:
            CodecState.from_bytes(data)
        except BatchError as e:
            assert e.reason in BATCH_REASONS


def test_huge_integers_in_the_state():
    st = CodecState()
    rows = [("m", T0 + 3600 * h, {E: (2 ** 70) * (h + 1) - h, "n": -(2 ** 66) * h})
            for h in range(3)]
    b = Batch("dev", 1, T0 + 3 * 3600, rows)
    d = decode_batch(encode_batch(b, None), None)
    assert d == b
    st.advance(d)
    again = CodecState.from_bytes(st.to_bytes())
    assert again.to_bytes() == st.to_bytes()
    b2 = Batch("dev", 2, T0 + 4 * 3600, [("m", T0 + 3 * 3600, {E: 2 ** 72, "n": 0})])
    assert decode_batch(encode_batch(b2, st), again) == b2
