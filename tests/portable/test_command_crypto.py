"""SHA-512 (FIPS 180-4) and Ed25519 (RFC 8032 §7.1) on the pure-Python code
paths, against the published vectors in tests/vectors/crypto/. Portable: runs
under pytest and in MicroPython (where hashlib has no sha512 and the pure code
is the only one). Ed25519 is slow in MicroPython, so this file verifies two
RFC vectors; tests/test_command_format.py checks all of them on CPython."""

from agent.ed25519 import sha512, sha512_python, verify, verify_python


def _vectors(name):
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    out = []
    with open(here + "/../vectors/crypto/" + name) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line.split())
    return out


def _h(s):
    return b"" if s == "-" else bytes.fromhex(s)


def test_sha512_fips180_vectors():
    vs = _vectors("sha512_fips180.txt")
    assert len(vs) == 3
    for msg, digest in vs:
        assert sha512_python(_h(msg)) == _h(digest)
        assert sha512(_h(msg)) == _h(digest)


def test_sha512_padding_boundaries_agree():
    # lengths around the 111/112-byte boundary need one or two padding blocks
    for n in (110, 111, 112, 113, 127, 128, 129):
        assert sha512_python(b"a" * n) == sha512(b"a" * n)
        assert len(sha512_python(b"a" * n)) == 64


def test_ed25519_rfc8032_test1_and_test2_verify():
    vs = _vectors("ed25519_rfc8032.txt")
    assert len(vs) == 4
    for _secret, public, msg, sig in vs[:2]:
        assert verify_python(_h(public), _h(msg), _h(sig))
        assert verify(_h(public), _h(msg), _h(sig))


def test_ed25519_rejects_a_flipped_signature_bit():
    _secret, public, msg, sig = _vectors("ed25519_rfc8032.txt")[1]
    bad = bytearray(_h(sig))
    bad[3] ^= 0x10
    assert not verify_python(_h(public), _h(msg), bytes(bad))


def test_ed25519_rejects_s_not_below_the_group_order():
    from agent.ed25519 import L
    _secret, public, msg, sig = _vectors("ed25519_rfc8032.txt")[0]
    s = int.from_bytes(_h(sig)[32:], "little") + L     # same point, non-canonical S
    assert not verify_python(_h(public), _h(msg), _h(sig)[:32] + s.to_bytes(32, "little"))


def test_ed25519_rejects_bad_lengths_without_raising():
    assert not verify_python(bytes(31), b"", bytes(64))
    assert not verify_python(bytes(32), b"", bytes(63))
    assert not verify(bytes(32), b"", bytes(65))
