"""The mesh link layer's key derivation and nonce, as docs/mesh.md writes
them, checked with an independent implementation (``cryptography``:
OpenSSL's HKDF and AES-CCM), and the portable pure-Python path producing
the same frames as OpenSSL's."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.packet import ACK, DATA, Header
from mesh.secure import LinkSecurity, MemoryCounterStore, link_key

NETWORK_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")


def _oracle_key(network_key: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 16, b"wum mesh v1", b"link").derive(network_key)


def test_link_key_is_hkdf_sha256() -> None:
    assert link_key(NETWORK_KEY) == _oracle_key(NETWORK_KEY)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(1, 0xFFE), st.integers(0, 0xFFFE),
       st.integers(0, 5000), st.binary(min_size=1, max_size=200), st.booleans())
def test_frames_open_with_openssl_by_the_documented_nonce(
        key: bytes, tx: int, epoch: int, counter: int, payload: bytes, long: bool) -> None:
    sec = LinkSecurity(key, tx, MemoryCounterStore(epoch))
    sec.counter = counter
    # a data frame (never long) or an ACK (always long): the epoch in the
    # nonce whether or not the header carries it
    rx = 0x001 if tx != 1 else 0x002
    h = Header(ACK, 0, rx, acked=counter) if long else Header(DATA, 0, rx, origin=tx, dest=0x0AB)
    frame = sec.seal(h, b"" if long else payload)
    hlen = h.size()
    nonce = (tx.to_bytes(2, "big") + (epoch + 1).to_bytes(4, "big")
             + counter.to_bytes(4, "big") + b"\x00\x00\x00")
    assert hlen == (11 if long else 12) and bool(frame[0] & 0x10) == long
    clear = AESCCM(_oracle_key(key), tag_length=4).decrypt(nonce, frame[hlen:], frame[:hlen])
    assert clear == (b"" if long else payload)
    # the pure-Python path (MicroPython's) seals the same bytes
    py = LinkSecurity(key, tx, MemoryCounterStore(epoch), backend="python")
    py.counter = counter
    h2 = Header(ACK, 0, rx, acked=counter) if long else Header(DATA, 0, rx, origin=tx, dest=0x0AB)
    assert py.seal(h2, b"" if long else payload) == frame
