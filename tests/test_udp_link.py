"""The Wi-Fi mesh link over real UDP sockets on loopback (drivers/udp_link.py):
datagrams both ways, addresses learnt only when the mesh says so, the seeded
loss manipulator drops the configured share, errors are typed."""

from __future__ import annotations

import math
import select

import pytest

from drivers.link import FrameTooLong, LinkClosed, LinkError
from drivers.udp_link import UdpLink, parse_endpoint


def pair(loss_b=0.0, seed=7):
    b = UdpLink("127.0.0.1:0", loss=loss_b, seed=seed)
    b.connect()
    a = UdpLink("127.0.0.1:0", peers=["127.0.0.1:%d" % b.address[1]])
    a.connect()
    return a, b


def test_datagrams_both_ways_and_learning():
    a, b = pair()
    try:
        assert a.send(b"hello") == 0
        got = b.receive(timeout=2.0)
        assert got is not None and got.frame == b"hello" and got.src == a.address
        assert got.rssi is None and got.snr is None and isinstance(got.ts, int)
        b.send(b"nobody yet")                       # b knows no peer: nothing sent
        assert b.counters["sent"] == 0 and a.receive(timeout=0.05) is None
        b.learn(got.src)                             # the mesh authenticated it
        b.send(b"reply")
        assert a.receive(timeout=2.0).frame == b"reply"
        b.send(b"unicast", dest=got.src)
        assert a.receive(timeout=2.0).frame == b"unicast"
        assert b.stats()["peers"] == ["127.0.0.1:%d" % a.address[1]]
    finally:
        a.close()
        b.close()


def test_loss_drops_the_configured_share():
    """2000 datagrams into a link with loss 0.1 (fixed seed): the drops are
    within 4 sigma of 200 (binomial), and none vanished otherwise."""
    a, b = pair(loss_b=0.1, seed=1234)
    n, batch = 2000, 100
    try:
        got = 0
        for start in range(0, n, batch):
            for i in range(start, start + batch):
                a.send(i.to_bytes(2, "big"))
            for _ in range(2 * batch):                     # bounded: a lost datagram fails below
                if b.counters["received"] + b.counters["dropped_loss"] >= start + batch:
                    break
                if b.receive(timeout=0.2) is not None:     # None: the last ones were dropped
                    got += 1
        dropped = b.counters["dropped_loss"]
        assert got + dropped == n
        sigma = math.sqrt(n * 0.1 * 0.9)
        assert abs(dropped - 0.1 * n) < 4 * sigma
    finally:
        a.close()
        b.close()


def test_same_seed_drops_the_same_datagrams():
    def run():
        a, b = pair(loss_b=0.3, seed=99)
        try:
            for i in range(60):
                a.send(bytes([i]))
            kept = []
            while True:
                r = b.receive(timeout=0.1)
                if r is None:
                    return kept
                kept.append(r.frame[0])
        finally:
            a.close()
            b.close()

    first = run()
    assert first == run() and 20 < len(first) < 60


def test_fileno_turns_readable():
    a, b = pair()
    try:
        assert select.select([b.fileno()], [], [], 0)[0] == []
        a.send(b"x")
        assert select.select([b.fileno()], [], [], 2.0)[0] == [b.fileno()]
        assert b.receive().frame == b"x"
    finally:
        a.close()
        b.close()


def test_learnt_neighbours_are_bounded():
    link = UdpLink("127.0.0.1:0", peers=["127.0.0.1:9"], max_learnt=2)
    link.connect()
    try:
        for port in (1001, 1002, 1003):
            link.learn(("127.0.0.1", port))
        link.learn(("127.0.0.1", 9))                 # a static peer is not learnt again
        assert link.peers() == [("127.0.0.1", 9), ("127.0.0.1", 1002), ("127.0.0.1", 1003)]
        link.learnt_ttl_s = -1                       # everything learnt has gone quiet
        assert link.peers() == [("127.0.0.1", 9)]
    finally:
        link.close()


def test_errors_are_typed_and_dead_peers_cost_nothing():
    with pytest.raises(LinkError):
        parse_endpoint("no-port")
    with pytest.raises(LinkError):
        UdpLink(loss=1.0)
    link = UdpLink("127.0.0.1:0", peers=["127.0.0.1:1"], mtu=64)
    with pytest.raises(LinkClosed):
        link.send(b"x")
    link.connect()
    try:
        with pytest.raises(FrameTooLong):
            link.send(b"x" * 65)
        for _ in range(3):
            link.send(b"into the void")              # nobody listens on port 1
            link.receive(timeout=0.05)
        assert link.counters["sent"] + link.counters["send_errors"] == 3
        other = UdpLink("127.0.0.1:%d" % link.address[1])
        with pytest.raises(LinkError) as e:
            other.connect()
        assert e.value.reason == "bind"
    finally:
        link.close()
    with pytest.raises(LinkClosed):
        link.receive()
