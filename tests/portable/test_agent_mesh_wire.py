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


def test_requests_round_trip():
    for kind in (w.BATCH, w.RESULT, w.POLL):
        m = w.parse(w.request(kind, 7, b"\x01sealed"))
        assert m.kind == kind and m.seq == 7 and m.body == b"\x01sealed"
        assert m.key == (kind, 7)
    assert w.batch(0xFFFFFFFF, b"x")[1:5] == b"\xff\xff\xff\xff"


def test_ack_is_13_bytes_without_commands_and_round_trips():
    raw = w.ack(123456, "duplicate", 1795910400.125, need_keyframe=True)
    assert len(raw) == w.ACK_LEN == 13
    m = w.parse(raw)
    assert m.kind == w.ACK and m.seq == 123456 and m.status == "duplicate"
    assert m.need_keyframe and abs(m.server_time - 1795910400.125) < 0.0005
    assert m.key == (w.BATCH, 123456) and m.commands == ()
    m = w.parse(w.ack(1, "accepted", 0.0, commands=(b"\x02cmd-one", b"\x02two")))
    assert m.status == "accepted" and not m.need_keyframe and m.server_time == 0
    assert m.commands == (b"\x02cmd-one", b"\x02two")


def test_result_ack_and_poll_answer():
    m = w.parse(w.rack(42, "duplicate"))
    assert m.kind == w.RACK and m.key == (w.RESULT, 42) and m.status == "duplicate"
    m = w.parse(w.polled(9, 1795910400.5, (b"\x02c",)))
    assert m.kind == w.POLLED and m.key == (w.POLL, 9) and m.commands == (b"\x02c",)
    assert abs(m.server_time - 1795910400.5) < 0.0005
    assert w.parse(w.polled(9, 1.0)).commands == ()


def test_refused_retry_reply():
    m = w.parse(w.refused(w.RESULT, 9, "bad_tag"))
    assert m.kind == w.REFUSED and m.key == (w.RESULT, 9) and m.reason == "bad_tag"
    m = w.parse(w.retry(w.BATCH, 9, "unreachable"))
    assert m.kind == w.RETRY and m.key == (w.BATCH, 9) and m.reason == "unreachable"
    m = w.parse(w.reply(b"\x00\x01opaque"))
    assert m.kind == w.REPLY and m.body == b"\x00\x01opaque"
    assert w.parse(w.reply(b"")).body == b""


def test_long_reason_cut_on_a_character_boundary():
    m = w.parse(w.refused(w.BATCH, 1, "\u00e9" * 40))          # 80 bytes of UTF-8
    assert m.reason == "\u00e9" * 32


def test_bad_bytes_named():
    assert _error(b"") == "empty"
    assert _error(b"\x0aabc") == "kind"
    assert _error(b"\x01\x00\x00") == "truncated"
    assert _error(b"\x01\x00\x00\x00\x01") == "truncated"          # batch without envelope
    assert _error(w.ack(1, "accepted", 1.0)[:-1]) == "truncated"
    assert _error(b"\x02\x00\x00\x00\x01\x05\x00" + bytes(6)) == "status"
    assert _error(b"\x02\x00\x00\x00\x01\x00\x02" + bytes(6)) == "status"
    assert _error(w.ack(1, "accepted", 1.0) + b"\x02\x00\x01x") == "commands"   # 2 said, 1 there
    assert _error(w.ack(1, "accepted", 1.0) + b"\x01\x00\x05xy") == "commands"
    assert _error(w.ack(1, "accepted", 1.0) + b"\x00") == "commands"            # n = 0
    assert _error(w.rack(1, "accepted") + b"\x00") == "truncated"
    assert _error(b"\x03\x01\x00\x00\x00\x01") == "reason"
    assert _error(b"\x03\x01\x00\x00\x00\x01\xff\xfe") == "reason"
    assert _error(b"\x03\x02\x00\x00\x00\x01ok") == "kind"          # refusing an answer kind


def test_encoding_refuses_what_it_cannot_write():
    for fn in (lambda: w.batch(-1, b"x"), lambda: w.batch(1 << 32, b"x"),
               lambda: w.batch(1, b""), lambda: w.ack(1, "maybe", 1.0),
               lambda: w.request(w.ACK, 1, b"x"), lambda: w.rack(1, "no"),
               lambda: w.ack(1, "accepted", 1.0, commands=(b"",)),
               lambda: w.polled(1, 1.0, (b"c",) * 65)):
        try:
            fn()
        except w.MeshMessageError:
            pass
        else:
            raise AssertionError("encoded")
