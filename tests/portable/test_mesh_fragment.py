"""mesh.fragment and mesh.custody: reassembly in any order with duplicates
gives the message, a missing fragment a timeout, never a wrong one; the
custody queue orders by priority, pushes back when full, backs off."""

from mesh import MeshBusy, MeshLocalError
from mesh.custody import CustodyQueue, Item, backoff
from mesh.fragment import COMPLETE, CONFLICT, DUPLICATE, NEW, Reassembler, split
from mesh.packet import message_header, parse_message
from mesh.trickle import XorShift


def _message(n, seed=1):
    r = XorShift(seed)
    payload = bytes(r(0, 256) for _ in range(n))
    return payload, message_header("DC-0001", "", payload) + payload


def test_split_sizes():
    assert split(b"", 10) == [b""]
    assert split(b"abcdefghij", 5) == [b"abcde", b"fghij"]
    assert [len(c) for c in split(b"x" * 23, 10)] == [10, 10, 3]
    try:
        split(b"x" * 2000, 1)
    except MeshLocalError as e:
        assert e.reason == "too_big"
    else:
        raise AssertionError("1024+ fragments accepted")


def test_any_order_with_duplicates():
    payload, msg = _message(1000)
    chunks = split(msg, 97)
    n = len(chunks)
    r = XorShift(9)
    order = list(range(n)) + [r(0, n) for _ in range(5)]
    for i in range(len(order) - 1, 0, -1):               # shuffle
        j = r(0, i + 1)
        order[i], order[j] = order[j], order[i]
    ra = Reassembler()
    out = None
    statuses = []
    for k in order:
        status, data = ra.add(42, k, k == n - 1, chunks[k], 0)
        statuses.append(status)
        if status == COMPLETE:
            out = data
    assert statuses.count(COMPLETE) == 1 and DUPLICATE in statuses
    assert parse_message(out)[2] == payload
    assert ra.add(42, 0, False, chunks[0], 5)[0] == DUPLICATE     # late copy
    assert len(ra) == 0 and ra.bytes == 0


def test_missing_fragment_times_out():
    _, msg = _message(500)
    chunks = split(msg, 100)
    ra = Reassembler(timeout_ms=1000)
    for k in range(len(chunks)):
        if k != 2:
            assert ra.add(7, k, k == len(chunks) - 1, chunks[k], 0)[0] == NEW
    assert ra.expire(999) == 0
    assert ra.expire(1000) == 1 and ra.timeouts == 1 and ra.bytes == 0


def test_mixed_messages_never_give_a_wrong_one():
    # two messages under one key (an origin that reused an id): the joined
    # bytes fail the digest, they are never taken for either message
    _, m1 = _message(300, 1)
    _, m2 = _message(300, 2)
    c1, c2 = split(m1, 100), split(m2, 100)
    ra = Reassembler()
    ra.add(1, 0, False, c1[0], 0)
    assert ra.add(1, 0, False, c2[0], 0)[0] == CONFLICT
    ra.add(1, 1, False, c2[1], 0)
    ra.add(1, 2, False, c2[2], 0)
    status, data = ra.add(1, 3, True, c2[3], 0)
    assert status == COMPLETE
    try:
        parse_message(data)
    except Exception as e:                          # MeshProtocolError
        assert e.reason == "message"
    else:
        raise AssertionError("a mixed message was accepted")
    # inconsistent "last" markers are refused too
    ra2 = Reassembler()
    ra2.add(2, 3, True, b"x", 0)
    assert ra2.add(2, 5, False, b"y", 0)[0] == CONFLICT
    assert ra2.add(2, 1, True, b"z", 0)[0] == CONFLICT


def test_reassembly_bound():
    ra = Reassembler(max_bytes=250)
    ra.add(1, 0, False, b"a" * 200, 0)
    try:
        ra.add(2, 0, False, b"b" * 100, 0)
    except MeshBusy as e:
        assert e.reason == "reassembly_full"
    else:
        raise AssertionError("new message beyond the bound accepted")
    ra.add(1, 1, False, b"a" * 200, 0)                  # a started message may finish


def _item(prio, mid=None, size=10):
    return Item(0, 1, 2, 0, 0, True, prio, False, b"x" * size, 15, mid, 0)


def test_custody_priorities_and_back_pressure():
    q = CustodyQueue(relay_limit=30, own_limit=25)
    a, b, c, d = _item(2), _item(0), _item(2), _item(1, mid=1)
    for it in (a, b, c, d):
        q.push(it)
    assert q.items == [b, d, a, c]                      # priority, then arrival
    assert q.relay_bytes == 30 and q.own_bytes == 10 and not q.fits_relay(1)
    q.reserve_own(15)
    try:
        q.reserve_own(16)
    except MeshBusy as e:
        assert e.reason == "queue_full"
    else:
        raise AssertionError("own budget exceeded")
    assert q.drop_message(1) == 1 and q.own_bytes == 0
    assert q.remove(a) and not q.remove(a) and q.relay_bytes == 20


def test_backoff_doubles_with_jitter():
    r = XorShift(3)
    for attempt in range(1, 8):
        base = 500 << (attempt - 1)
        d = backoff(attempt, 500, 60000, r)
        lo = min(base, 60000)
        assert lo <= d < 2 * lo, (attempt, d)
    assert backoff(0, 0, 100, r) == 0
