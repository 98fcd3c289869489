"""mesh.packet: every frame type round-trips, a data-like header is 12
bytes and never long (L is neither encoded nor accepted on DATA, DOWN, PING,
PONG), bad layouts give MeshProtocolError; the message header's digest
refuses any change."""

from mesh import MeshProtocolError
from mesh.packet import (
    ACK,
    ADVERT,
    BROADCAST,
    DATA,
    DOWN,
    PING,
    PONG,
    TAG_LEN,
    Header,
    message_header,
    parse_message,
)

TAG = b"\x00" * TAG_LEN


def _bad(frame, reason):
    try:
        Header.from_bytes(frame)
    except MeshProtocolError as e:
        assert e.reason == reason, (e.reason, reason)
    else:
        raise AssertionError("accepted %r" % frame)


def test_data_header_layout():
    h = Header(DATA, 0xABC, 0x123, counter=0xBEEF, hops=15, origin=0x456, dest=0x789,
               msgid=200, prio=3, last=True, index=1023)
    raw = h.to_bytes()
    assert len(raw) == 12 and h.size() == 12
    assert raw[0] == 0x0F and raw[1:4] == b"\xab\xc1\x23" and raw[4:6] == b"\xbe\xef"
    assert raw[6:9] == b"\x45\x67\x89" and raw[9] == 200 and raw[10:12] == b"\xe3\xff"
    back, n = Header.from_bytes(raw + b"x" + TAG)
    assert n == 12 and back == h and back.prio == 3 and back.last and back.index == 1023


def test_data_like_frames_are_never_long():
    # the L form (epoch in the header) exists for ACK and ADVERT only: a
    # data-like header with an epoch cannot be encoded, and one on the air
    # (L set, 14 bytes) is refused before any crypto
    for t in (DATA, DOWN, PING, PONG):
        h = Header(t, 5, 6, counter=1, epoch=0x0102, origin=7, dest=8, down=(t == DOWN))
        try:
            h.to_bytes()
        except MeshProtocolError as e:
            assert e.reason == "long", e.reason
        else:
            raise AssertionError("long %d header encoded" % t)
        h.epoch = None
        raw = h.to_bytes()
        assert len(raw) == 12 and not raw[0] & 0x10
        long = bytes([raw[0] | 0x10]) + raw[1:6] + b"\x01\x02" + raw[6:]
        _bad(long + b"x" + TAG, "long")
    raw = Header(ACK, 5, 6, epoch=3, acked=1).to_bytes()   # ACK and ADVERT keep it
    assert len(raw) == 11 and raw[0] & 0x10


def test_every_type_round_trips():
    cases = [
        Header(DOWN, 5, 6, 1, None, 3, 7, 8, 1, 0, False, True, 4),
        Header(PING, 5, 6, 2, None, 1, 7, 8, 2, 0, True, False, 0),
        Header(PONG, 5, 6, 3, None, 1, 7, 8, 3, 1, True, True, 0),
        Header(ACK, 5, 6, 4, 9, acked=0x1234, status=2),
        Header(ADVERT, 5, BROADCAST, 5, 9),
    ]
    for h in cases:
        body = TAG if h.ptype == ACK else b"p" + TAG
        back, n = Header.from_bytes(h.to_bytes() + body)
        assert back == h and n == h.size() <= 12, h
    assert Header(ACK, 5, 6, 4, 9).size() == 11 and Header(ADVERT, 5, BROADCAST).size() == 6


def test_bad_frames():
    good = Header(DATA, 5, 6, origin=7, dest=8).to_bytes()
    _bad(b"", "truncated")
    _bad(good[:5], "truncated")
    _bad(good[:11], "truncated")
    _bad(good + TAG, "truncated")                          # no payload byte
    _bad(bytes([0xC0]) + good[1:] + b"x" + TAG, "type")     # type 6
    _bad(good[:10] + b"\x04\x00" + b"x" + TAG, "reserved")
    _bad(good[:1] + b"\x00\x00\x06" + good[4:] + b"x" + TAG, "address")   # tx 0
    _bad(good[:1] + b"\x00\x5f\xff" + good[4:] + b"x" + TAG, "address")   # rx all
    _bad(good[:6] + b"\x00\x00\x08" + good[9:] + b"x" + TAG, "address")   # origin 0
    _bad(good[:10] + b"\x10\x00" + b"x" + TAG, "direction")  # DATA marked down
    ack = Header(ACK, 5, 6, acked=1, status=0).to_bytes()
    _bad(ack[:-1] + b"\x03" + TAG, "status")
    _bad(ack + b"x" + TAG, "length")
    adv = Header(ADVERT, 5, BROADCAST).to_bytes()
    _bad(adv[:3] + b"\x06" + adv[4:] + TAG, "address")   # advert must be broadcast


def test_message_header_digest():
    payload = bytes(range(256)) * 3
    msg = message_header("DC-0001", "", payload) + payload
    assert parse_message(msg) == ("DC-0001", "", payload)
    down = message_header("GW-1", "DC-0042", b"ack") + b"ack"
    assert parse_message(down) == ("GW-1", "DC-0042", b"ack")
    for i in (0, 3, len(msg) // 2, len(msg) - 1):
        bad = bytearray(msg)
        bad[i] ^= 0x40
        try:
            parse_message(bytes(bad))
        except MeshProtocolError as e:
            assert e.reason == "message"
        else:
            raise AssertionError("altered byte %d accepted" % i)
    for cut in (0, 1, 5, len(msg) - 1):
        try:
            parse_message(msg[:cut])
        except MeshProtocolError:
            pass
        else:
            raise AssertionError("truncated message accepted")
    try:
        parse_message(msg + b"x")
    except MeshProtocolError:
        pass
    else:
        raise AssertionError("longer message accepted")
