"""mesh.secure: frames open only under the network key, unaltered, once;
the epoch is persisted so a restart never reuses a nonce; a short header is
checked under the sender's known epoch."""

from mesh import MeshLocalError, MeshProtocolError
from mesh.packet import ACK, ADVERT, BROADCAST, DATA, Header
from mesh.secure import LinkSecurity, MemoryCounterStore

KEY = bytes(range(32))


def _pair(store=None):
    a = LinkSecurity(KEY, 0x010, store if store is not None else MemoryCounterStore())
    b = LinkSecurity(KEY, 0x020, MemoryCounterStore())
    return a, b


def _data(payload=b"fragment"):
    return Header(DATA, 0, 0x020, origin=0x010, dest=0x030), payload


def _refused(sec, frame, reason):
    try:
        sec.open(frame)
    except MeshProtocolError as e:
        assert e.reason == reason, (e.reason, reason)
    else:
        raise AssertionError("frame accepted, expected %s" % reason)


def test_epoch_from_an_advert_then_short_data():
    a, b = _pair()
    f1 = a.seal(Header(ADVERT, 0, BROADCAST), b"\x00\x01x")   # ACK/ADVERT: long by default
    got, payload = b.open(f1)
    assert payload == b"\x00\x01x" and got.tx == 0x010 and got.epoch == a.epoch
    assert f1[0] & 0x10 and b"\x01x" not in f1              # encrypted, not just signed
    h, p = _data(b"fragmen2")
    f2 = a.seal(h, p)                                    # data: always short
    assert len(f2) == 12 + len(p) + 4 and not f2[0] & 0x10
    got, payload = b.open(f2)
    assert payload == b"fragmen2" and got.epoch is None


def test_short_header_needs_a_known_epoch():
    a, b = _pair()
    h, p = _data()
    _refused(b, a.seal(h, p), "unsynced")


def test_altered_injected_and_wrong_key_refused():
    a, b = _pair()
    h, p = _data()
    b.open(a.seal(Header(ADVERT, 0, BROADCAST), b"\x00\x01x"))   # b learns a's epoch
    frame = a.seal(h, p)
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        try:
            b.open(bytes(bad))
        except MeshProtocolError as e:
            assert e.reason in ("bad_tag", "malformed", "truncated", "address", "unsynced",
                                "reserved", "own_address", "long", "type"), e.reason
        else:
            raise AssertionError("bit flip at %d accepted" % i)
    other = LinkSecurity(bytes(32), 0x010, MemoryCounterStore())
    _refused(b, other.seal(Header(ADVERT, 0, BROADCAST), b"\x00\x01x", True), "bad_tag")


def test_replay_refused_window_allows_reordering():
    a, b = _pair()
    frames = [a.seal(Header(ACK, 0, 0x020, acked=i), b"", True) for i in range(40)]
    b.open(frames[0])
    _refused(b, frames[0], "replay")
    b.open(frames[5])
    b.open(frames[3])                                    # late but inside the window
    _refused(b, frames[3], "replay")
    b.open(frames[39])
    _refused(b, frames[4], "replay")                     # fell out of the 32-frame window
    b.open(frames[20])


def test_epoch_persisted_across_restarts():
    store = MemoryCounterStore()
    a = LinkSecurity(KEY, 0x010, store)
    assert a.epoch == 1 and store.value == 1
    b = LinkSecurity(KEY, 0x020, MemoryCounterStore())
    old = a.seal(Header(ACK, 0, 0x020), b"", True)
    b.open(old)
    a2 = LinkSecurity(KEY, 0x010, store)                 # reboot: counter restarts at 0
    assert a2.epoch == 2 and a2.counter == 0
    new = a2.seal(Header(ACK, 0, 0x020), b"", True)
    assert new[4:6] == old[4:6]                          # same counter, other epoch
    assert new[6:8] != old[6:8]
    b.open(new)
    _refused(b, old, "replay")


def test_counter_wrap_moves_to_the_next_epoch():
    store = MemoryCounterStore(7)
    a = LinkSecurity(KEY, 0x010, store)
    a.counter = 0x10000
    a.seal(Header(ACK, 0, 0x020), b"", True)
    assert a.epoch == 9 and store.value == 9 and a.counter == 1


def test_epochs_exhausted():
    try:
        LinkSecurity(KEY, 0x010, MemoryCounterStore(0xFFFF))
    except MeshLocalError as e:
        assert e.reason == "epoch_exhausted"
    else:
        raise AssertionError("epoch 0x10000 accepted")
