"""agent.mesh_wire, the messages between an origin and a gateway (portable:
also runs in MicroPython): every kind round-trips, bad bytes get the typed
error with its reason."""

from agent import mesh_wire as w


def _error(data):
    try:
        w.parse(data)
    except w.MeshMessageError as e:
        return e.reason
    raise AssertionError("parsed %r" % (data,))


def test_batch_round_trip():
    m = w.parse(w.batch(7, b"\x01sealed"))
    assert m.kind == w.BATCH and m.seq == 7 and m.body == b"\x01sealed"
    assert w.batch(0xFFFFFFFF, b"x")[1:5] == b"\xff\xff\xff\xff"


def test_ack_is_13_bytes_and_round_trips():
    raw = w.ack(123456, "duplicate", 1795910400.125, need_keyframe=True)
    assert len(raw) == w.ACK_LEN == 13
    m = w.parse(raw)
    assert m.kind == w.ACK and m.seq == 123456 and m.status == "duplicate"
    assert m.need_keyframe and abs(m.server_time - 1795910400.125) < 0.0005
    m = w.parse(w.ack(1, "accepted", 0.0))
    assert m.status == "accepted" and not m.need_keyframe and m.server_time == 0


def test_refused_retry_reply():
    m = w.parse(w.refused(9, "bad_tag"))
    assert m.kind == w.REFUSED and m.seq == 9 and m.reason == "bad_tag"
    m = w.parse(w.retry(9, "unreachable"))
    assert m.kind == w.RETRY and m.reason == "unreachable"
    m = w.parse(w.reply(b"\x00\x01opaque"))
    assert m.kind == w.REPLY and m.body == b"\x00\x01opaque"
    assert w.parse(w.reply(b"")).body == b""


def test_long_reason_cut_on_a_character_boundary():
    m = w.parse(w.refused(1, "\u00e9" * 40))          # 80 bytes of UTF-8
    assert m.reason == "\u00e9" * 32


def test_bad_bytes_named():
    assert _error(b"") == "empty"
    assert _error(b"\x09abc") == "kind"
    assert _error(b"\x01\x00\x00") == "truncated"
    assert _error(b"\x01\x00\x00\x00\x01") == "truncated"          # batch without envelope
    assert _error(w.ack(1, "accepted", 1.0)[:-1]) == "truncated"
    assert _error(b"\x02\x00\x00\x00\x01\x05\x00" + bytes(6)) == "status"
    assert _error(b"\x02\x00\x00\x00\x01\x00\x02" + bytes(6)) == "status"
    assert _error(b"\x03\x00\x00\x00\x01") == "reason"
    assert _error(b"\x03\x00\x00\x00\x01\xff\xfe") == "reason"


def test_encoding_refuses_what_it_cannot_write():
    for fn in (lambda: w.batch(-1, b"x"), lambda: w.batch(1 << 32, b"x"),
               lambda: w.batch(1, b""), lambda: w.ack(1, "maybe", 1.0)):
        try:
            fn()
        except w.MeshMessageError:
            pass
        else:
            raise AssertionError("encoded")
