"""Portable tests of drivers.modbus.rtu: plain asserts, run under pytest and
in MicroPython (tests/mpy/runner.mjs)."""

from drivers.modbus import rtu


def _raises_rtu(fn, *args):
    try:
        fn(*args)
    except rtu.RtuError:
        return True
    return False


def _stream():
    a = rtu.read_response(1, rtu.READ_INPUT, [1, 2, 0xFFFF]).to_bytes()
    b = rtu.exception_response(2, rtu.READ_HOLDING, 2).to_bytes()
    c = rtu.write_response(3, rtu.WRITE_SINGLE, 512, 1).to_bytes()
    return a + b + c


def _feed(data, role, step):
    framer = rtu.Framer(role)
    out = []
    for i in range(0, len(data), step):
        framer.receive_data(data[i:i + step])
        out.extend(framer.frames())
    return out, framer


def test_crc_check_value():
    assert rtu.crc16(b"123456789") == 0x4B37          # CRC-16/MODBUS check value


def test_crc_known_request():
    # Modbus over serial line V1.02 §6.2.2: the CRC is sent low byte first.
    assert rtu.with_crc(bytes([1, 3, 0, 0, 0, 1])) == bytes([1, 3, 0, 0, 0, 1, 0x84, 0x0A])
    assert rtu.read_request(1, 3, 0, 10).to_bytes() == bytes(
        [1, 3, 0, 0, 0, 10, 0xC5, 0xCD])


def test_request_roundtrip():
    for f in (rtu.read_request(7, rtu.READ_INPUT, 100, 53),
              rtu.write_single_request(7, 512, 1),
              rtu.write_multiple_request(7, 528, [0x6B0B, 0x5CF0])):
        raw = f.to_bytes()
        g = rtu.Frame.from_bytes(raw, rtu.REQUEST)
        assert g == f
        assert g.to_bytes() == raw


def test_request_fields():
    f = rtu.Frame.from_bytes(rtu.write_multiple_request(9, 528, [1, 2]).to_bytes(), rtu.REQUEST)
    assert f.request_fields() == (528, 2, [1, 2])
    f = rtu.Frame.from_bytes(rtu.read_request(9, 4, 5, 6).to_bytes(), rtu.REQUEST)
    assert f.request_fields() == (5, 6, [])


def test_response_registers_and_exception():
    f = rtu.Frame.from_bytes(rtu.read_response(1, 4, [0, 65535, 42]).to_bytes())
    assert f.registers() == [0, 65535, 42]
    assert not f.is_exception
    e = rtu.Frame.from_bytes(rtu.exception_response(1, 3, 2).to_bytes())
    assert e.is_exception
    assert e.exception_code == 2
    assert e.function == 0x83


def test_from_bytes_errors():
    good = rtu.read_request(1, 3, 0, 1).to_bytes()
    assert _raises_rtu(rtu.Frame.from_bytes, good[:-1] + bytes([good[-1] ^ 1]), rtu.REQUEST)
    assert _raises_rtu(rtu.Frame.from_bytes, good[:5], rtu.REQUEST)
    assert _raises_rtu(rtu.Frame.from_bytes, good + b"\x00", rtu.REQUEST)
    assert _raises_rtu(rtu.Frame.from_bytes, b"\xff\x03\x00\x00", rtu.REQUEST)
    assert _raises_rtu(rtu.Frame.from_bytes, b"", rtu.RESPONSE)


def test_stream_whole_halves_bytewise():
    data = _stream()
    expected = [(1, 4), (2, 0x83), (3, 6)]
    for step in (len(data), len(data) // 2 + 1, 1):
        frames, framer = _feed(data, rtu.RESPONSE, step)
        assert [(f.address, f.function) for f in frames] == expected
        assert framer.skipped == 0
        assert framer.buf == b""


def test_garbage_before_frame_is_skipped():
    data = b"\xff\xfe\x00" + _stream()
    for step in (len(data), 1):
        frames, framer = _feed(data, rtu.RESPONSE, step)
        assert [f.address for f in frames] == [1, 2, 3]
        assert framer.skipped >= 1


def test_bad_crc_rehunts_to_next_frame():
    good = rtu.read_response(5, 3, [10, 20]).to_bytes()
    bad = bytearray(good)
    bad[4] ^= 0x40
    frames, framer = _feed(bytes(bad) + good, rtu.RESPONSE, 1)
    assert len(frames) == 1 and frames[0].registers() == [10, 20]
    assert framer.crc_errors >= 1
    assert isinstance(framer.last_error, rtu.RtuError)


def test_other_units_frames_are_frames():
    data = rtu.read_request(4, 3, 0, 2).to_bytes() + rtu.read_request(6, 4, 1, 1).to_bytes()
    frames, _ = _feed(data, rtu.REQUEST, 3)
    assert [f.address for f in frames] == [4, 6]


def test_buffer_is_capped():
    framer = rtu.Framer(rtu.RESPONSE)
    framer.receive_data(bytes([1, 3, 250]) + bytes(2000))
    assert framer.next_frame() is None
    assert len(framer.buf) <= rtu.MAX_BUFFER
    framer.reset()
    framer.receive_data(rtu.exception_response(1, 4, 2).to_bytes())
    assert framer.next_frame().exception_code == 2


def test_incomplete_frame_waits():
    raw = rtu.read_response(1, 4, [1, 2, 3, 4]).to_bytes()
    framer = rtu.Framer(rtu.RESPONSE)
    framer.receive_data(raw[:-1])
    assert framer.next_frame() is None
    framer.receive_data(raw[-1:])
    assert framer.next_frame().registers() == [1, 2, 3, 4]
