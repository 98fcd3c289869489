"""Property tests of the Modbus RTU framer and the dissector: any bytes give
frames or the typed error, never another exception; encode/decode pairs."""

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import RemoteProtocolError
from drivers.modbus import dissect, rtu

roles = st.sampled_from([rtu.REQUEST, rtu.RESPONSE])
units = st.integers(1, 247)
words = st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125)


@given(st.binary(max_size=700), roles, st.integers(1, 64))
@settings(max_examples=300, deadline=None)
def test_any_bytes_give_frames_never_crash(data, role, step):
    framer = rtu.Framer(role)
    for i in range(0, len(data), step):
        framer.receive_data(data[i:i + step])
        for f in framer.frames():
            assert isinstance(f, rtu.Frame)
            assert rtu.Frame.from_bytes(f.to_bytes(), role) == f   # only CRC-valid frames
        assert len(framer.buf) <= rtu.MAX_BUFFER


@given(st.binary(max_size=300), roles)
@settings(max_examples=300, deadline=None)
def test_from_bytes_frame_or_typed_error(data, role):
    try:
        f = rtu.Frame.from_bytes(data, role)
    except rtu.RtuError as e:
        assert isinstance(e, RemoteProtocolError)
        assert e.reason in ("header", "short", "trailing", "crc")
        return
    assert f.to_bytes() == data


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_dissect_any_bytes(data):
    doc = dissect(data)
    assert doc["protocol"] == "modbus-rtu"
    assert doc["unparsed"] >= 0


@given(units, st.sampled_from([3, 4]), words, st.binary(max_size=20), st.integers(1, 40))
@settings(max_examples=200, deadline=None)
def test_response_found_after_garbage_in_any_split(unit, fc, regs, garbage, step):
    raw = rtu.read_response(unit, fc, regs).to_bytes()
    framer = rtu.Framer(rtu.RESPONSE)
    found = []
    data = garbage + raw
    for i in range(0, len(data), step):
        framer.receive_data(data[i:i + step])
        found.extend(framer.frames())
    assert any(f.address == unit and f.function == fc and f.registers() == regs for f in found)


@given(units, st.integers(0, 0xFFFF), words)
@settings(max_examples=200, deadline=None)
def test_request_encode_decode(unit, start, regs):
    for f in (rtu.read_request(unit, 4, start, len(regs)),
              rtu.write_multiple_request(unit, start, regs[:123]),
              rtu.write_single_request(unit, start, regs[0])):
        g = rtu.Frame.from_bytes(f.to_bytes(), rtu.REQUEST)
        assert g == f
        s, second, w = g.request_fields()
        assert s == start
        if f.function == rtu.WRITE_MULTIPLE:
            assert w == regs[:123] and second == len(w)


@given(st.binary(min_size=1, max_size=40))
def test_crc_detects_single_bit_flips(body):
    raw = rtu.with_crc(body)
    for bit in range(min(len(raw) * 8, 64)):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert rtu.crc16(bytes(flipped[:-2])) != int.from_bytes(flipped[-2:], "little")


@given(st.binary(max_size=300), units, st.sampled_from([3, 4, 6, 16]), st.integers(5, 260))
@settings(max_examples=300, deadline=None)
def test_reply_hunter_any_bytes(data, unit, fc, length):
    from drivers.modbus.transport import ReplyHunter, _Garbled

    hunter = ReplyHunter()
    hunter.expect = (unit, fc, length)
    try:
        out = hunter(False, data)
    except _Garbled as e:
        assert e.raw == data and len(data) >= length
        return
    if out:
        f = rtu.Frame.from_bytes(out, rtu.RESPONSE)
        assert f.address == unit and f.function & 0x7F == fc
    else:
        assert len(data) < length
    assert hunter(True, data) == data            # what we send passes untouched
