"""Ed25519 (RFC 8032, "pure" variant, no context) and SHA-512 (FIPS 180-4)
in portable Python, for verifying signed commands on any concentrator.

Portable (CPython and MicroPython). Owns the curve arithmetic, point
encoding/decoding, signature verification and, for tests and tools, signing.
Written from the text of RFC 8032 §5.1 (edwards25519: p = 2^255 - 19,
d = -121665/121666, extended homogeneous coordinates, the complete addition
law of §5.1.4) and FIPS 180-4 §4.1.3, §4.2.3, §5.1.2, §6.4. Verification is
cofactorless (RFC 8032 §5.1.7 step 3 permits it): it recomputes
R' = [S]B - [k]A and compares its encoding with R, as OpenSSL does, so both
give the same answers (tests compare them).

Not constant-time: verifying touches only public data; ``sign`` is for tests
and benchmarks (the HES signs with ``cryptography``). On CPython with
``cryptography`` importable, ``verify``/``sign`` use it (OpenSSL); the pure
code computes the same results. ``hashlib.sha512`` is used when present (the
WebAssembly MicroPython has only ``sha256``). Must not know what is signed.

API (stable):
    sha512(data) -> 64 bytes
    public_key(secret32) -> 32 bytes
    sign(secret32, msg) -> 64 bytes
    verify(public32, msg, sig64) -> bool      (never raises on bad input)
"""

import hashlib

try:  # CPython with the `cryptography` package (OpenSSL)
    from cryptography.exceptions import InvalidSignature as _InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey as _PrivKey,
    )
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PublicKey as _PubKey,
    )
except ImportError:
    _PubKey = None  # type: ignore[assignment,misc]
    _PrivKey = None  # type: ignore[assignment,misc]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# --- SHA-512, FIPS 180-4 -------------------------------------------------------

_M64 = (1 << 64) - 1
_SHA: "list[Any]" = []      # [K (80 words), H0 (8 words)], computed on first use


def _bitlen(n: int) -> int:
    """``n.bit_length()`` for n >= 0 (MicroPython's int has no such method)."""
    if n <= 0:
        return 0
    h = "%x" % n
    return (len(h) - 1) * 4 + len(bin(int(h[0], 16))) - 2


def _iroot(n: int, k: int) -> int:
    """floor(n ** (1/k)) for big n (Newton's method on integers, from above)."""
    x = 1 << ((_bitlen(n) + k - 1) // k)
    while True:
        y = ((k - 1) * x + n // x ** (k - 1)) // k
        if y >= x:
            return x
        x = y


def _primes(n: int) -> "list[int]":
    out: "list[int]" = []
    c = 2
    while len(out) < n:
        if all(c % q for q in out if q * q <= c):
            out.append(c)
        c += 1
    return out


def _sha_constants() -> "list[Any]":
    # FIPS 180-4 §4.2.3: the first 64 bits of the fractional parts of the cube
    # roots of the first 80 primes; §5.3.5: square roots of the first 8 primes.
    if not _SHA:
        ps = _primes(80)
        _SHA.append([_iroot(q << 192, 3) & _M64 for q in ps])
        _SHA.append([_iroot(q << 128, 2) & _M64 for q in ps[:8]])
    return _SHA


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (64 - n))) & _M64


def _sha512_block(h: "list[int]", block: bytes, K: "list[int]") -> None:
    w = [int.from_bytes(block[i:i + 8], "big") for i in range(0, 128, 8)]
    for t in range(16, 80):     # §6.4.2 step 1
        x, y = w[t - 15], w[t - 2]
        s0 = _rotr(x, 1) ^ _rotr(x, 8) ^ (x >> 7)
        s1 = _rotr(y, 19) ^ _rotr(y, 61) ^ (y >> 6)
        w.append((s1 + w[t - 7] + s0 + w[t - 16]) & _M64)
    a, b, c, d, e, f, g, hh = h
    for t in range(80):         # §6.4.2 step 3
        t1 = (hh + (_rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41))
              + ((e & f) ^ ((e ^ _M64) & g)) + K[t] + w[t]) & _M64
        t2 = ((_rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))) & _M64
        hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & _M64, c, b, a, (t1 + t2) & _M64
    for i, v in enumerate((a, b, c, d, e, f, g, hh)):
        h[i] = (h[i] + v) & _M64


def sha512_python(data: bytes) -> bytes:
    """SHA-512 in plain Python (FIPS 180-4), whatever ``hashlib`` offers."""
    K, H0 = _sha_constants()
    h = list(H0)
    n = len(data)
    # §5.1.2 padding: 0x80, zeros to 112 mod 128, the length in bits (128 bits)
    msg = bytes(data) + b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
    for i in range(0, len(msg), 128):
        _sha512_block(h, msg[i:i + 128], K)
    return b"".join(v.to_bytes(8, "big") for v in h)


def sha512(data: bytes) -> bytes:
    f = getattr(hashlib, "sha512", None)
    if f is not None:
        return bytes(f(bytes(data)).digest())
    return sha512_python(data)


# --- edwards25519, RFC 8032 §5.1 ----------------------------------------------

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493      # the group order
D = -121665 * pow(121666, P - 2, P) % P
_SQRT_M1 = pow(2, (P - 1) // 4, P)                          # §5.1.3 step 3
_IDENT = (0, 1, 1, 0)
_BASE: "list[Any]" = []


def _add(p1: "tuple[int, int, int, int]", p2: "tuple[int, int, int, int]") -> "Any":
    # §5.1.4, complete for all points of the curve (doubling included)
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * D * t1 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p1: "tuple[int, int, int, int]") -> "Any":
    # §5.1.4, the dedicated doubling formulas
    x1, y1, z1, _ = p1
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    s = (x1 + y1) % P
    e = h - s * s
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _recover_x(y: int, sign: int) -> "int | None":
    # §5.1.3 steps 2-4; None when no such point exists
    if y >= P:
        return None
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    v3 = v * v * v % P
    x = u * v3 * pow(u * v3 * v3 * v % P, (P - 5) // 8, P) % P
    vx2 = v * x * x % P
    if vx2 != u:
        if vx2 != (P - u) % P:
            return None
        x = x * _SQRT_M1 % P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def _decode(s: bytes) -> "Any":
    if len(s) != 32:
        return None
    n = int.from_bytes(s, "little")
    y = n & ((1 << 255) - 1)
    x = _recover_x(y, n >> 255)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def _encode(pt: "tuple[int, int, int, int]") -> bytes:
    # §5.1.2: y little-endian, the low bit of x in the top bit
    zi = pow(pt[2], P - 2, P)
    x = pt[0] * zi % P
    y = pt[1] * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _base() -> "Any":
    if not _BASE:       # §5.1: B = (x, 4/5) with x positive (even)
        y = 4 * pow(5, P - 2, P) % P
        _BASE.append(_decode(y.to_bytes(32, "little")))
    return _BASE[0]


def _mul(k: int, pt: "tuple[int, int, int, int]") -> "Any":
    acc = _IDENT
    for i in range(_bitlen(k) - 1, -1, -1):
        acc = _double(acc)
        if (k >> i) & 1:
            acc = _add(acc, pt)
    return acc


def _double_mul(s: int, p1: "Any", k: int, p2: "Any") -> "Any":
    """[s]p1 + [k]p2 with one chain of doublings (Straus-Shamir)."""
    both = _add(p1, p2)
    acc = _IDENT
    for i in range(max(_bitlen(s), _bitlen(k)) - 1, -1, -1):
        acc = _double(acc)
        bits = ((s >> i) & 1) | (((k >> i) & 1) << 1)
        if bits == 1:
            acc = _add(acc, p1)
        elif bits == 2:
            acc = _add(acc, p2)
        elif bits == 3:
            acc = _add(acc, both)
    return acc


def _expand(secret: bytes) -> "tuple[int, bytes]":
    # §5.1.5: hash the secret, prune the low half into the scalar s
    if len(secret) != 32:
        raise ValueError("an Ed25519 secret key is 32 bytes")
    h = sha512(secret)
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def public_key_python(secret: bytes) -> bytes:
    a, _ = _expand(secret)
    return _encode(_mul(a, _base()))


def sign_python(secret: bytes, msg: bytes) -> bytes:
    """RFC 8032 §5.1.6 in plain Python (not constant-time: tests and tools)."""
    a, prefix = _expand(secret)
    pub = _encode(_mul(a, _base()))
    r = int.from_bytes(sha512(prefix + msg), "little") % L
    rb = _encode(_mul(r, _base()))
    k = int.from_bytes(sha512(rb + pub + msg), "little") % L
    return rb + ((r + k * a) % L).to_bytes(32, "little")


def verify_python(public: bytes, msg: bytes, sig: bytes) -> bool:
    """RFC 8032 §5.1.7, cofactorless, in plain Python."""
    if len(sig) != 64 or len(public) != 32:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= L:                                      # step 1: S in [0, L)
        return False
    a = _decode(public)
    if a is None:
        return False
    k = int.from_bytes(sha512(sig[:32] + public + msg), "little") % L     # step 2
    neg_a = ((P - a[0]) % P, a[1], a[2], (P - a[3]) % P)
    return _encode(_double_mul(s, _base(), k, neg_a)) == bytes(sig[:32])  # step 3


def public_key(secret: bytes) -> bytes:
    if _PrivKey is not None:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
        k = _PrivKey.from_private_bytes(bytes(secret))
        return k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return public_key_python(secret)


def sign(secret: bytes, msg: bytes) -> bytes:
    if _PrivKey is not None:
        return bytes(_PrivKey.from_private_bytes(bytes(secret)).sign(bytes(msg)))
    return sign_python(secret, msg)


def verify(public: bytes, msg: bytes, sig: bytes) -> bool:
    """True when ``sig`` is a valid Ed25519 signature of ``msg`` under ``public``."""
    if _PubKey is None:
        return verify_python(public, msg, sig)
    if len(sig) != 64 or len(public) != 32:
        return False
    try:
        _PubKey.from_public_bytes(bytes(public)).verify(bytes(sig), bytes(msg))
    except (_InvalidSignature, ValueError):
        return False
    return True
