"""Portable cryptographic primitives for the envelope: AES-CCM (RFC 3610),
HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869).

Portable. Owns the constructions only, built on an AES block primitive chosen
at run time (``block_cipher``): ``cryptography`` on CPython, ``cryptolib`` on
MicroPython boards, the pure-Python ``agent.aes`` elsewhere (the WebAssembly
port). On CPython ``ccm_seal``/``ccm_open`` use OpenSSL's AES-CCM directly;
the generic code computes the same bytes (tests compare them). Key material
never appears in a repr or an exception message. Must not know the envelope's
header or any device.
"""
# ruff: noqa: B905 (MicroPython's zip() has no strict= argument)

import hashlib

try:  # CPython with the `cryptography` package (OpenSSL)
    from cryptography.exceptions import InvalidTag as _InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
    from cryptography.hazmat.primitives.ciphers import algorithms as _alg
    from cryptography.hazmat.primitives.ciphers import modes as _modes
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM as _AESCCM
except ImportError:
    _Cipher = None  # type: ignore[assignment,misc]
    _AESCCM = None  # type: ignore[assignment,misc]

try:  # MicroPython boards
    import cryptolib as _cryptolib
except ImportError:
    _cryptolib = None

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true at run time: MicroPython has no typing
    from typing import Any


class CryptoFailure(Exception):
    """The tag did not verify (the only error a caller may see; no detail)."""


class _OpenSSLBlock:
    __slots__ = ("_enc",)

    def __init__(self, key: bytes) -> None:
        self._enc = _Cipher(_alg.AES(key), _modes.ECB()).encryptor()

    def __repr__(self) -> str:
        return "AESBlock(openssl)"

    def encrypt_block(self, block: bytes) -> bytes:
        return bytes(self._enc.update(block))


class _CryptolibBlock:
    __slots__ = ("_aes",)

    def __init__(self, key: bytes) -> None:
        self._aes = _cryptolib.aes(key, 1)  # mode 1 = ECB

    def __repr__(self) -> str:
        return "AESBlock(cryptolib)"

    def encrypt_block(self, block: bytes) -> bytes:
        return bytes(self._aes.encrypt(block))


def block_cipher(key: bytes, backend: str = "") -> "object":
    """An object with ``encrypt_block(16 bytes) -> 16 bytes`` (AES, ECB).
    ``backend`` forces ``"openssl"``, ``"cryptolib"`` or ``"python"``."""
    if backend == "openssl" or (not backend and _Cipher is not None):
        return _OpenSSLBlock(key)
    if backend == "cryptolib" or (not backend and _cryptolib is not None):
        return _CryptolibBlock(key)
    from agent.aes import AES
    return AES(key)


def equal(a: "bytes | bytearray", b: "bytes | bytearray") -> bool:
    """Constant-time comparison (no early exit)."""
    if len(a) != len(b):
        return False
    acc = 0
    for x, y in zip(a, b):
        acc |= x ^ y
    return acc == 0


def _ccm_check(nonce: bytes, tag_len: int) -> int:
    if not 7 <= len(nonce) <= 13:
        raise ValueError("CCM nonce must be 7..13 bytes")
    if tag_len not in (4, 6, 8, 10, 12, 14, 16):
        raise ValueError("CCM tag length must be even, 4..16")
    return 15 - len(nonce)   # L


def _absorb(eb: "object", x: "bytearray", parts: "tuple[Any, ...]") -> None:
    """CBC-MAC: run the state ``x`` (16 bytes, updated in place) over the
    concatenation of ``parts`` zero-padded to a whole block, byte by byte
    into ``x`` itself (nothing joined: a board seals without copies)."""
    n = 0
    for part in parts:
        for b in part:
            x[n] ^= b
            n += 1
            if n == 16:
                _put(x, eb(x))  # type: ignore[operator]
                n = 0
    if n:
        _put(x, eb(x))  # type: ignore[operator]


def _put(x: "bytearray", s: bytes, at: int = 0) -> None:
    # x[at:at + len(s)] = s, without slice assignment (not in every MicroPython build)
    for j in range(len(s)):
        x[at + j] = s[j]


def _ccm_mac(enc: "object", nonce: bytes, aad: bytes, msg: "Any", tag_len: int) -> bytearray:
    """The CBC-MAC T of RFC 3610 §2.2 (its first ``tag_len`` bytes)."""
    L = _ccm_check(nonce, tag_len)
    if len(msg) >= 1 << (8 * L):
        raise ValueError("CCM message too long for the nonce size")
    flags = (0x40 if aad else 0) | (((tag_len - 2) // 2) << 3) | (L - 1)   # RFC 3610 §2.2
    eb = enc.encrypt_block  # type: ignore[attr-defined]
    x = bytearray(eb(bytes((flags,)) + nonce + len(msg).to_bytes(L, "big")))     # B0
    if aad:
        size = len(aad).to_bytes(2, "big") if len(aad) < 0xFF00 else \
            b"\xff\xfe" + len(aad).to_bytes(4, "big")
        _absorb(eb, x, (size, aad))
    _absorb(eb, x, (msg,))
    return x[:tag_len]


def _ccm_ctr(enc: "object", nonce: bytes, buf: bytearray, start: int, end: int,
             first: int) -> None:
    """XOR the CTR key stream, counter ``first`` on, into ``buf[start:end]``
    in place (RFC 3610 §2.3: A_i = flags L' | nonce | i)."""
    L = 15 - len(nonce)
    eb = enc.encrypt_block  # type: ignore[attr-defined]
    a = bytearray(16)
    a[0] = L - 1
    _put(a, nonce, 1)
    i = first
    while start < end:
        _put(a, i.to_bytes(L, "big"), 16 - L)
        s = eb(a)
        for j in range(min(16, end - start)):
            buf[start + j] ^= s[j]
        start += 16
        i += 1


def ccm_seal(key: bytes, nonce: bytes, aad: bytes, msg: bytes, tag_len: int = 8,
             backend: str = "", head: bytes = b"") -> bytes:
    """AES-CCM encryption: ``head`` || ciphertext || tag (RFC 3610). ``head``
    (the envelope's header, say) is put in front in the same buffer."""
    if _AESCCM is not None and not backend:
        _ccm_check(nonce, tag_len)
        return bytes(head) + bytes(_AESCCM(key, tag_len).encrypt(nonce, msg, aad))
    enc = block_cipher(key, backend)
    t = _ccm_mac(enc, nonce, aad, msg, tag_len)
    h, n = len(head), len(msg)
    out = bytearray(head)
    out.extend(msg)
    out.extend(t)
    _ccm_ctr(enc, nonce, out, h, h + n, 1)
    _ccm_ctr(enc, nonce, out, h + n, h + n + tag_len, 0)
    return bytes(out)


def ccm_open(key: bytes, nonce: bytes, aad: bytes, sealed: bytes, tag_len: int = 8,
             backend: str = "") -> bytes:
    """AES-CCM decryption; raises ``CryptoFailure`` if the tag does not verify."""
    if len(sealed) < tag_len:
        raise CryptoFailure("too short")
    if _AESCCM is not None and not backend:
        _ccm_check(nonce, tag_len)
        try:
            return bytes(_AESCCM(key, tag_len).decrypt(nonce, sealed, aad))
        except _InvalidTag:
            raise CryptoFailure("tag mismatch") from None
    enc = block_cipher(key, backend)
    n = len(sealed) - tag_len
    msg = bytearray(sealed[:n])
    _ccm_ctr(enc, nonce, msg, 0, n, 1)
    expect = _ccm_mac(enc, nonce, aad, msg, tag_len)
    _ccm_ctr(enc, nonce, expect, 0, tag_len, 0)
    if not equal(expect, sealed[n:]):
        raise CryptoFailure("tag mismatch")
    return bytes(msg)


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) on ``hashlib.sha256`` alone."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    inner = hashlib.sha256(bytes(k ^ 0x36 for k in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(k ^ 0x5C for k in key))
    outer.update(inner.digest())
    return bytes(outer.digest())


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac_sha256(salt if salt else bytes(32), ikm)


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    if length > 255 * 32:
        raise ValueError("HKDF length too large")
    out = b""
    t = b""
    i = 1
    while len(out) < length:
        t = hmac_sha256(prk, t + info + bytes((i,)))
        out += t
        i += 1
    return out[:length]


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869)."""
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)
