"""mesh.address: roster-derived 12-bit addresses never collide, do not move
when the roster grows at its end, and conflicts are detected."""

from mesh import MeshLocalError
from mesh.address import BROADCAST, NONE, AddressTable, probe


def _ids(n, prefix="DC-"):
    return ["%s%04d" % (prefix, i) for i in range(1, n + 1)]


def test_roster_has_no_collision_and_is_deterministic():
    ids = _ids(400)
    a, b = AddressTable(ids), AddressTable(ids)
    addrs = [a.address(i) for i in ids]
    assert len(set(addrs)) == 400
    assert addrs == [b.address(i) for i in ids]
    assert NONE not in addrs and BROADCAST not in addrs
    # hashing alone would have collided at this size
    assert len(set(probe(i, 0) for i in ids)) < 400
    assert a.identity(addrs[7]) == ids[7] and a.name(addrs[7]) == ids[7]


def test_appending_moves_nobody():
    ids = _ids(300)
    before = AddressTable(ids)
    after = AddressTable(ids + _ids(50, "DC-N"))
    assert all(before.address(i) == after.address(i) for i in ids)
    assert len(set(after.address(i) for i in after.roster)) == 350


def test_collision_resolved_by_roster_order():
    # find two identities whose first probe collides
    seen = {}
    pair = None
    i = 0
    while pair is None:
        ident = "X-%d" % i
        h = probe(ident, 0)
        if h in seen:
            pair = (seen[h], ident)
        seen[h] = ident
        i += 1
    first, second = pair
    t = AddressTable([first, second])
    assert t.address(first) == probe(first, 0)
    assert t.address(second) != t.address(first)
    u = AddressTable([second, first])          # the other order: the other wins
    assert u.address(second) == probe(second, 0)


def test_conflicts_are_detected_not_merged():
    t = AddressTable(["DC-0001", "DC-0002"])
    a1 = t.address("DC-0001")
    assert t.learn(a1, "DC-0001")
    assert not t.learn(a1, "DC-9999")          # someone else claims DC-0001's address
    assert not t.learn(0x123 if a1 != 0x123 else 0x124, "DC-0002")
    assert t.conflicts == 2
    # identities outside the roster get a derived address that avoids it
    out = t.address("DC-7777")
    assert out not in (t.address("DC-0001"), t.address("DC-0002"))
    assert t.learn(out, "DC-7777") and t.name(out) == "DC-7777"
    assert t.name(0x001 if out != 1 else 2).startswith("#") or True


def test_bad_identity():
    for bad in ("", "x" * 65, 5):
        try:
            AddressTable([bad])
        except MeshLocalError as e:
            assert e.reason == "identity"
        else:
            raise AssertionError("accepted %r" % (bad,))
