# Portable tests of the DLMS HDLC layer (drivers.dlms.hdlc, drivers.dlms.hdlc_conn):
# plain functions and asserts so they run under pytest and in MicroPython.

from drivers import RemoteProtocolError
from drivers.dlms import hdlc
from drivers.dlms.hdlc_conn import Connection

# Published frames: Gyozo Kmethy, "Examples for DLMS/COSEM information exchange"
# (https://jacobs-master.ru/view/articles/dlmsua/dlmscosem_gyozo_kmethy_example_origin)
SNRM = bytes.fromhex("7ea00a00020023219318717e")
UA = bytes.fromhex("7ea023210002002373f6c58180140502008006020080070400000001080400000001ce6a7e")
AARQ = bytes.fromhex("7ea02e0002002321107ecbe6e600601da109060760857405080101be10040e01000000"
                     "065f1f040000301dffffd4c57e")


def _feed(data, step):
    framer = hdlc.Framer()
    out = []
    for i in range(0, len(data), step):
        framer.receive_data(data[i:i + step])
        while True:
            ev = framer.next_event()
            if ev is None:
                break
            out.append(ev)
    return out, framer


def test_crc16_x25_check_value():
    assert hdlc.crc16(b"123456789") == 0x906E


def test_published_frames_round_trip_whole_halves_and_bytes():
    for raw in (SNRM, UA, AARQ):
        f = hdlc.Frame.from_bytes(raw)
        assert f.to_bytes() == raw
        for step in (len(raw), len(raw) // 2 + 1, 1):
            frames, _ = _feed(b"\x00\xff" + raw, step)
            assert len(frames) == 1 and frames[0].to_bytes() == raw


def test_frame_fields():
    f = hdlc.Frame.from_bytes(SNRM)
    assert f.kind == hdlc.SNRM and f.pf
    assert hdlc.parse_address(f.dest) == (1, 17)
    assert hdlc.parse_address(f.src) == (16, None)
    ua = hdlc.Frame.from_bytes(UA)
    assert hdlc.LinkParameters.from_bytes(ua.info).values() == (128, 128, 1, 1)
    i = hdlc.Frame.from_bytes(AARQ)
    assert i.kind == hdlc.I and i.ns == 0 and i.nr == 0 and i.info[:3] == hdlc.LLC_REQUEST


def test_addresses():
    assert hdlc.client_address(16) == b"\x21"
    assert hdlc.server_address(1) == b"\x03"
    assert hdlc.server_address(1, 17) == b"\x02\x23"
    assert hdlc.server_address(1, 17, 4) == b"\x00\x02\x00\x23"
    assert hdlc.server_address(1, 0x1234) == b"\x00\x02\x48\x69"
    assert hdlc.parse_address(b"\x00\x02\x48\x69") == (1, 0x1234)


def test_control_field():
    assert hdlc.control(hdlc.SNRM) == 0x93
    assert hdlc.control(hdlc.UA) == 0x73
    assert hdlc.control(hdlc.DISC) == 0x53
    assert hdlc.control(hdlc.I, True, ns=2, nr=3) == 0x74
    assert hdlc.control(hdlc.RR, True, nr=5) == 0xB1
    for kind in (hdlc.I, hdlc.RR, hdlc.RNR, hdlc.SNRM, hdlc.DISC, hdlc.UA, hdlc.DM,
                 hdlc.FRMR, hdlc.UI):
        assert hdlc.control_kind(hdlc.control(kind)) == kind


def test_parameters_negotiation():
    mine = hdlc.LinkParameters(2030, 2030, 7, 7)
    assert hdlc.LinkParameters.from_bytes(mine.to_bytes()) == mine
    server = hdlc.LinkParameters(512, 256, 3, 1)
    ua = mine.answer(server)
    assert ua.values() == (512, 256, 3, 1)
    small = hdlc.LinkParameters(128, 64, 1, 1).answer(server)
    assert small.max_info_tx == 64 and small.max_info_rx == 128


def test_framer_rehunts_after_bad_fcs_and_skips_other_stations():
    bad = bytearray(AARQ)
    bad[20] ^= 0x01
    other = hdlc.Frame(hdlc.client_address(16), hdlc.server_address(1, 99),
                       hdlc.control(hdlc.UA)).to_bytes()
    framer = hdlc.Framer(dest=b"\x21", src=hdlc.server_address(1, 17, 4))
    framer.receive_data(bytes(bad) + other + UA)
    ev = framer.next_event()
    assert isinstance(ev, hdlc.FrameError)
    ev = framer.next_event()
    assert isinstance(ev, hdlc.Frame) and ev.kind == hdlc.UA and ev.to_bytes() == UA
    assert framer.next_event() is None
    assert framer.foreign == 1


def test_framer_shared_flag_and_cap():
    joined = SNRM[:-1] + UA          # closing flag of one frame opens the next
    frames, _ = _feed(joined, 3)
    assert [f.kind for f in frames] == [hdlc.SNRM, hdlc.UA]
    framer = hdlc.Framer(cap=64)
    framer.receive_data(b"\x7e\xa0\xff" + bytes(200))
    assert len(framer.buf) <= 64
    assert framer.next_event() is None


def test_bad_frames_raise_remote_protocol_error():
    for raw in (b"", b"\x7e\x7e", SNRM[:-2] + b"\x00\x7e", b"\x7e\xa0\x05\x03\x21\x93\x00\x7e"):
        try:
            hdlc.Frame.from_bytes(raw)
        except RemoteProtocolError:
            continue
        raise AssertionError("accepted %r" % raw)


def _pair(max_info=16, window=1):
    client = Connection(b"\x21", b"\x02\x23", True, hdlc.LinkParameters(max_info, max_info,
                                                                       window, window))
    server = Connection(b"\x02\x23", b"\x21", False, hdlc.LinkParameters(max_info, max_info,
                                                                        window, window))
    return client, server


def _deliver(frames, to):
    apdu, replies = None, []
    for raw in frames:
        got, out = to.on_frame(hdlc.Frame.from_bytes(raw))
        replies += out
        if got is not None:
            apdu = got
    return apdu, replies


def test_segmented_request_and_response_with_window():
    for window in (1, 3):
        client, server = _pair(16, window)
        request = bytes(range(50))
        frames = client.send_apdu(request)
        got = None
        while got is None:
            got, acks = _deliver(frames, server)
            if got is None:
                _, frames = _deliver(acks, client)
        assert got == request
        response = bytes(range(200, 256)) * 2
        frames = server.send_apdu(response)
        got = None
        rounds = 0
        while got is None:
            got, rr = _deliver(frames, client)
            if got is None:
                rounds += 1
                _, frames = _deliver(rr, server)
        assert got == response
        segments = (len(response) + 3 + 15) // 16
        assert rounds == (segments + window - 1) // window - 1   # one RR per burst but the last


def test_lost_answer_is_sent_again_on_retransmit():
    client, server = _pair(128)
    frames = client.send_apdu(b"\xc0\x01\xc1" + bytes(10))
    got, _ = _deliver(frames, server)
    answer = server.send_apdu(b"\xc4\x01\xc1\x00\x00")
    # the answer is lost: the client repeats its frame and the server answers again
    again, replies = _deliver(client.retransmit(), server)
    assert again is None and replies == answer
    got, _ = _deliver(replies, client)
    assert got == b"\xc4\x01\xc1\x00\x00"


def test_lost_segment_is_asked_for_again():
    client, server = _pair(16)
    frames = server.send_apdu(bytes(40))          # 3 segments, window 1
    _, rr = _deliver(frames, client)
    nxt = _deliver(rr, server)[1]                 # segment 2 ... lost
    assert nxt
    again = _deliver(client.retransmit(), server)[1]
    assert again == nxt
