"""Property tests (Hypothesis) on the mesh core's parsers and reassembly:
any bytes give a header/advert/message or MeshProtocolError; fragments in any
order, duplicated or missing give the right message or a timeout, never a
wrong one; injected, altered and replayed frames are refused and counted."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh import MeshError, MeshProtocolError
from mesh.actions import Transmit
from mesh.fragment import COMPLETE, Reassembler, split
from mesh.node import Node
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
from mesh.routing import unpack_adverts
from mesh.secure import MemoryCounterStore
from tests.portable.mesh_harness import KEY, Net

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

addr = st.integers(1, 0xFFE)


@FAST
@given(st.binary(max_size=64))
def test_any_bytes_header_or_protocol_error(data: bytes) -> None:
    try:
        h, n = Header.from_bytes(data)
    except MeshProtocolError as e:
        assert e.reason
        return
    assert data[:n] == h.to_bytes()
    assert len(data) - n >= TAG_LEN


@st.composite
def headers(draw: st.DrawFn) -> Header:
    t = draw(st.sampled_from([DATA, DOWN, ACK, ADVERT, PING, PONG]))
    # the L form (an epoch) exists for ACK and ADVERT only
    epoch = None if t in (DATA, DOWN, PING, PONG) else draw(st.none() | st.integers(0, 0xFFFF))
    rx = BROADCAST if t == ADVERT else draw(addr)
    h = Header(t, draw(addr), rx, draw(st.integers(0, 0xFFFF)), epoch, draw(st.integers(0, 15)))
    if t in (DATA, DOWN, PING, PONG):
        h.origin, h.dest, h.msgid = draw(addr), draw(addr), draw(st.integers(0, 255))
        h.prio, h.last, h.index = draw(st.integers(0, 3)), draw(st.booleans()), \
            draw(st.integers(0, 1023))
        h.down = t == DOWN or (t != DATA and draw(st.booleans()))
    elif t == ACK:
        h.acked, h.status = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 2))
    return h


@FAST
@given(headers(), st.binary(min_size=1, max_size=40))
def test_header_round_trip(h: Header, body: bytes) -> None:
    body = b"" if h.ptype == ACK else body
    raw = h.to_bytes()
    assert len(raw) <= 12 and (h.epoch is not None) == bool(raw[0] & 0x10)
    back, n = Header.from_bytes(raw + body + bytes(TAG_LEN))
    assert n == len(raw) and back == h


@FAST
@given(st.binary(max_size=80))
def test_any_bytes_adverts_or_error(data: bytes) -> None:
    try:
        ads = unpack_adverts(data)
    except MeshProtocolError:
        return
    assert b"".join(a.to_bytes() for a in ads) == data


@FAST
@given(st.binary(max_size=120))
def test_any_bytes_message_or_error(data: bytes) -> None:
    try:
        origin, dest, payload = parse_message(data)
    except MeshProtocolError as e:
        assert e.reason == "message"
        return
    assert message_header(origin, dest, payload) + payload == data


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, int, list[int]]:
    payload = draw(st.binary(min_size=0, max_size=2000))
    size = draw(st.integers(16, 300))
    n = len(split(message_header("DC-0001", "", payload) + payload, size))
    idx = st.integers(0, n - 1)
    order = draw(st.lists(idx, max_size=3 * n))
    if draw(st.booleans()):
        order = draw(st.permutations(list(range(n)))) + order   # every one at least once
    return payload, size, order


@settings(max_examples=200, deadline=None)
@given(deliveries())
def test_reassembly_right_message_or_timeout(case: tuple[bytes, int, list[int]]) -> None:
    payload, size, order = case
    msg = message_header("DC-0001", "", payload) + payload
    chunks = split(msg, size)
    ra = Reassembler(timeout_ms=1000)
    done = []
    for k, i in enumerate(order):
        status, data = ra.add(9, i, i == len(chunks) - 1, chunks[i], k)
        if status == COMPLETE:
            done.append(data)
    if set(order) == set(range(len(chunks))):
        assert done == [msg] and parse_message(done[0])[2] == payload
        assert ra.expire(10**6) == 0
    else:
        assert done == []
        assert ra.expire(len(order) + 1000) == (1 if order else 0)
    assert ra.bytes == 0 or not done


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=400), st.integers(16, 120),
       st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=60))
def test_mixed_fragments_never_a_wrong_message(p1: bytes, p2: bytes, size: int,
                                               picks: list[tuple[bool, int]]) -> None:
    m1 = message_header("DC-0001", "", p1) + p1
    m2 = message_header("DC-0001", "", p2) + p2
    c1, c2 = split(m1, size), split(m2, size)
    ra = Reassembler()
    for second, i in picks:
        chunks = c2 if second else c1
        i %= len(chunks)
        status, data = ra.add(1, i, i == len(chunks) - 1, chunks[i], 0)
        if status == COMPLETE:
            try:
                got = parse_message(data)[2]
            except MeshProtocolError:
                return
            assert got in (p1, p2)
            return


def _pair() -> tuple[Net, Node, list[bytes]]:
    net = Net(["G", "A"], [("G", "A")], gateways=["G"], seed=11)
    net.run(20000)
    net.nodes["A"].send_up(b"x" * 3000, 1, net.now)
    net.run(net.now + 5000)
    frames = [a.frame for (_, n, a) in net.sent if n == "A" and isinstance(a, Transmit)]
    return net, net.nodes["G"], frames


NET, GW, FRAMES = _pair()


@FAST
@given(st.binary(max_size=300))
def test_node_receives_any_bytes_without_raising(data: bytes) -> None:
    before = GW.stats(NET.now)
    assert GW.receive(0, data, None, None, NET.now) is None or data in FRAMES
    after = GW.stats(NET.now)
    assert after["counters"]["frames_in"] == before["counters"]["frames_in"] + 1
    assert sum(after["refused"].values()) + after["counters"]["overheard"] >= \
        sum(before["refused"].values()) + before["counters"]["overheard"]


@FAST
@given(st.sampled_from(range(len(FRAMES))), st.data())
def test_altered_or_replayed_frames_refused_and_counted(k: int, data: st.DataObject) -> None:
    frame = bytearray(FRAMES[k])
    how = data.draw(st.sampled_from(["flip", "cut", "extend", "replay"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "cut":
        frame = frame[:data.draw(st.integers(0, len(frame) - 1))]
    elif how == "extend":
        frame += data.draw(st.binary(min_size=1, max_size=8))
    before = GW.stats(NET.now)
    assert GW.receive(0, bytes(frame), None, None, NET.now) is None
    after = GW.stats(NET.now)
    refused = sum(after["refused"].values()) - sum(before["refused"].values())
    overheard = after["counters"]["overheard"] - before["counters"]["overheard"]
    assert refused + overheard == 1
    if how == "replay":
        assert after["refused"]["replay"] == before["refused"]["replay"] + 1


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=32, max_size=32).filter(lambda k: k != KEY),
       st.binary(min_size=1, max_size=60))
def test_frames_under_another_key_refused(key: bytes, payload: bytes) -> None:
    rogue = Node("A", "node", key, [{"kind": "udp"}], MemoryCounterStore(), members=["A", "G"])
    rogue.send_up(payload, 0, 0)
    before = GW.refused["bad_tag"]
    sent = [a for a in rogue.poll(600000) if isinstance(a, Transmit)]   # its advert
    assert sent
    for a in sent:
        assert GW.receive(0, a.frame, None, None, NET.now) is None
    assert GW.refused["bad_tag"] == before + len(sent)


def test_mesh_errors_are_one_family() -> None:
    assert issubclass(MeshProtocolError, MeshError)
