"""AES (FIPS-197), AES-CCM (RFC 3610), HMAC/HKDF-SHA256 (RFC 5869) against the
published vectors in tests/vectors/crypto/, on the portable code paths (the
pure-Python AES everywhere, so MicroPython and CPython run the same code)."""

from crypto_vectors import h as _h
from crypto_vectors import vectors as _vectors

from drivers.aes import AES
from drivers.crypto import (
    CryptoFailure,
    ccm_open,
    ccm_seal,
    equal,
    hkdf,
    hkdf_expand,
    hkdf_extract,
    hmac_sha256,
)


def test_aes_fips197():
    vs = _vectors("aes_fips197.txt")
    assert len(vs) == 4
    for key, pt, ct in vs:
        assert AES(_h(key)).encrypt_block(_h(pt)) == _h(ct)


def test_ccm_rfc3610_packet_vectors():
    vs = _vectors("ccm_rfc3610.txt")
    assert len(vs) == 6
    for key, nonce, hlen, packet, output in vs:
        k, n, pkt, out = _h(key), _h(nonce), _h(packet), _h(output)
        h = int(hlen)
        sealed = ccm_seal(k, n, pkt[:h], pkt[h:], 8, backend="python")
        assert pkt[:h] + sealed == out
        assert ccm_open(k, n, pkt[:h], out[h:], 8, backend="python") == pkt[h:]


def test_ccm_rejects_any_flipped_bit():
    key, nonce = bytes(range(16)), bytes(13)
    sealed = ccm_seal(key, nonce, b"hdr", b"payload bytes", 8, backend="python")
    for i in range(len(sealed)):
        for bit in (0, 7):
            bad = bytearray(sealed)
            bad[i] ^= 1 << bit
            try:
                ccm_open(key, nonce, b"hdr", bytes(bad), 8, backend="python")
            except CryptoFailure:
                continue
            raise AssertionError("tampered byte %d accepted" % i)
    try:
        ccm_open(key, nonce, b"hdX", sealed, 8, backend="python")
    except CryptoFailure:
        pass
    else:
        raise AssertionError("tampered header accepted")


def test_ccm_empty_and_long_messages():
    key, nonce = bytes(range(32)), bytes(range(13))
    for n in (0, 1, 15, 16, 17, 100):
        msg = bytes(i & 0xFF for i in range(n))
        s = ccm_seal(key, nonce, b"", msg, 16, backend="python")
        assert len(s) == n + 16
        assert ccm_open(key, nonce, b"", s, 16, backend="python") == msg


def test_hkdf_rfc5869():
    vs = _vectors("hkdf_rfc5869.txt")
    assert len(vs) == 2
    for ikm, salt, info, length, prk, okm in vs:
        assert hkdf_extract(_h(salt), _h(ikm)) == _h(prk)
        assert hkdf_expand(_h(prk), _h(info), int(length)) == _h(okm)
        assert hkdf(_h(ikm), _h(salt), _h(info), int(length)) == _h(okm)


def test_hmac_rfc4231_case_2():
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
    mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert mac == bytes.fromhex(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_equal():
    assert equal(b"abc", b"abc")
    assert not equal(b"abc", b"abd")
    assert not equal(b"abc", b"ab")
