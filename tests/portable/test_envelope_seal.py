"""The envelope: seal/open, typed rejections, boot epochs, replay window.
Portable: runs under pytest and in MicroPython (pure-Python AES there)."""

from agent.envelope import (
    REASONS,
    EnvelopeError,
    Keyring,
    MemoryBootStore,
    ReplayWindow,
    Sealer,
    derive_key,
    open_envelope,
    peek,
)

ROOT = bytes(range(32))
OTHER = bytes(range(1, 33))


def _ring():
    ks = Keyring()
    ks.add("dc-0001", ROOT)
    return ks


def _reason(fn):
    try:
        fn()
    except EnvelopeError as e:
        assert e.reason in REASONS
        return e.reason
    raise AssertionError("no EnvelopeError")


def test_seal_open_round_trip_and_header():
    s = Sealer("dc-0001", ROOT, MemoryBootStore())
    data = s.seal(b"batch bytes")
    assert len(data) == 15 + 7 + 11 + 8
    h = peek(data)
    assert (h.device, h.boot, h.counter, h.length, h.key_epoch) == ("dc-0001", 1, 0, 11, 0)
    o = open_envelope(data, _ring(), ReplayWindow())
    assert o.payload == b"batch bytes"
    assert o.header.counter == 0
    assert peek(s.seal(b"")).counter == 1


def test_every_tampered_byte_is_rejected():
    data = Sealer("dc-0001", ROOT, MemoryBootStore()).seal(b"0123456789")
    ks = _ring()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        assert _reason(lambda: open_envelope(bytes(bad), ks)) in (  # noqa: B023
            "bad_tag", "bad_version", "bad_length", "truncated", "unknown_key")


def test_typed_reasons():
    data = Sealer("dc-0001", ROOT, MemoryBootStore()).seal(b"x")
    ks = _ring()
    assert _reason(lambda: open_envelope(data[:-1], ks)) == "truncated"
    assert _reason(lambda: open_envelope(data[:3], ks)) == "truncated"
    assert _reason(lambda: open_envelope(b"", ks)) == "truncated"
    assert _reason(lambda: open_envelope(data + b"\x00", ks)) == "bad_length"
    assert _reason(lambda: open_envelope(b"\x09" + data[1:], ks)) == "bad_version"
    assert _reason(lambda: open_envelope(data, Keyring())) == "unknown_key"
    ks.revoke("dc-0001")
    assert _reason(lambda: open_envelope(data, ks)) == "revoked_key"
    wrong = Keyring()
    wrong.add("dc-0001", OTHER)
    assert _reason(lambda: open_envelope(data, wrong)) == "bad_tag"


def test_replay_and_out_of_order_within_window():
    s = Sealer("dc-0001", ROOT, MemoryBootStore())
    msgs = [s.seal(bytes((i,))) for i in range(5)]
    ks, w = _ring(), ReplayWindow()
    for i in (0, 3, 1, 4, 2):
        assert open_envelope(msgs[i], ks, w).payload == bytes((i,))
    for m in msgs:
        assert _reason(lambda: open_envelope(m, ks, w)) == "replay"  # noqa: B023
    e = None
    try:
        open_envelope(msgs[2], ks, w)
    except EnvelopeError as x:
        e = x
    assert e is not None and e.device == "dc-0001" and e.counter == 2


def test_boot_epoch_survives_restarts():
    store = MemoryBootStore()
    a = Sealer("dc-0001", ROOT, store)
    first = a.seal(b"a")
    b = Sealer("dc-0001", ROOT, store)       # a reboot: counter restarts at 0
    second = b.seal(b"b")
    assert peek(first).boot == 1 and peek(second).boot == 2
    assert peek(first).counter == peek(second).counter == 0
    ks, w = _ring(), ReplayWindow()
    open_envelope(first, ks, w)
    open_envelope(second, ks, w)
    assert _reason(lambda: open_envelope(first, ks, w)) == "replay"   # older boot epoch


def test_window_drops_too_old_and_persists():
    w = ReplayWindow(8)
    for c in (0, 1, 2, 20):
        w.check(5, c)
        w.accept(5, c)
    for c in (12, 1, 20):
        assert _reason(lambda: w.check(5, c)) == "replay"  # noqa: B023
    w.check(5, 13)
    w2 = ReplayWindow.from_bytes(w.to_bytes())
    assert (w2.size, w2.boot, w2.top, w2.bits) == (w.size, w.boot, w.top, w.bits)
    assert _reason(lambda: w2.check(4, 999)) == "replay"
    w2.check(6, 0)
    fresh = ReplayWindow.from_bytes(ReplayWindow().to_bytes())
    fresh.check(0, 0)


def test_keys_never_leak():
    s = Sealer("dc-0001", ROOT, MemoryBootStore())
    key = derive_key(ROOT, "dc-0001")
    ks = _ring()
    texts = [repr(s), repr(ks), str(ks)]
    try:
        open_envelope(s.seal(b"x")[:-1] + b"\x00", ks)
    except EnvelopeError as e:
        texts.append(str(e))
        texts.append(repr(e))
    for t in texts:
        for secret in (ROOT, key):
            assert secret.hex() not in t
            assert repr(secret) not in t


def test_derived_keys_differ_by_device_purpose_epoch():
    ks = set([derive_key(ROOT, "a"), derive_key(ROOT, "b"), derive_key(ROOT, "a", "command"),
              derive_key(ROOT, "a", "batch", 1), derive_key(OTHER, "a")])
    assert len(ks) == 5
    assert all(len(k) == 16 for k in ks)


def test_key_epochs():
    s = Sealer("dc-0001", OTHER, MemoryBootStore(), key_epoch=2)
    ks = _ring()
    ks.add("dc-0001", OTHER, epoch=2)
    assert open_envelope(s.seal(b"e2"), ks).payload == b"e2"
    ks.revoke("dc-0001", 2)
    assert _reason(lambda: open_envelope(s.seal(b"e2"), ks)) == "revoked_key"


def test_file_boot_store():
    import os

    from agent.envelope import FileBootStore
    path = "/tmp/wum-boot-%d" % (id(ROOT) & 0xFFFFFF)
    try:
        os.remove(path)
    except OSError:
        pass
    store = FileBootStore(path)
    assert store.load() == 0
    assert Sealer("dc-0001", ROOT, store).boot == 1
    assert Sealer("dc-0001", ROOT, FileBootStore(path)).boot == 2
    assert FileBootStore(path).load() == 2
    os.remove(path)
