"""AES (FIPS-197) block encryption in plain Python: the fallback block
primitive for MicroPython builds without ``cryptolib`` (the WebAssembly port).

Portable. Owns only the forward cipher (CCM and CTR never decrypt a block).
Byte-oriented (no 32-bit tables) so it needs no big integers on 32-bit
MicroPython. Slow (~ms per block) but exact; CPython uses ``cryptography``
and devices ``cryptolib`` instead (see ``drivers.crypto.block_cipher``).
Must not know about envelopes or keys' meaning.
"""


def _tables() -> "tuple[bytes, bytes, bytes]":
    # S-box from the multiplicative inverse in GF(2^8) and the affine map
    # (FIPS-197 §5.1.1); xtime table for MixColumns (§4.2.1).
    exp = [0] * 512
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x ^= ((x << 1) ^ (0x1B if x & 0x80 else 0)) & 0xFF   # x * 3
    for i in range(255, 512):
        exp[i] = exp[i - 255]
    sbox = bytearray(256)
    for a in range(256):
        inv = 0 if a == 0 else exp[255 - log[a]]
        s = inv
        for _ in range(4):
            inv = ((inv << 1) | (inv >> 7)) & 0xFF
            s ^= inv
        sbox[a] = s ^ 0x63
    xt = bytearray(256)
    for a in range(256):
        xt[a] = ((a << 1) ^ (0x1B if a & 0x80 else 0)) & 0xFF
    rcon = bytearray(15)
    r = 1
    for i in range(15):
        rcon[i] = r
        r = xt[r]
    return bytes(sbox), bytes(xt), bytes(rcon)


SBOX, XTIME, RCON = _tables()


def expand_key(key: bytes) -> "list[bytes]":
    """Round keys (FIPS-197 §5.2) for a 16-, 24- or 32-byte key."""
    nk = len(key) // 4
    if len(key) not in (16, 24, 32):
        raise ValueError("AES key must be 16, 24 or 32 bytes")
    rounds = nk + 6
    w = bytearray(key)
    i = nk
    while len(w) < 16 * (rounds + 1):
        t = w[-4:]
        if i % nk == 0:
            t = bytearray((SBOX[t[1]] ^ RCON[i // nk - 1], SBOX[t[2]], SBOX[t[3]], SBOX[t[0]]))
        elif nk > 6 and i % nk == 4:
            t = bytearray((SBOX[t[0]], SBOX[t[1]], SBOX[t[2]], SBOX[t[3]]))
        base = len(w) - 4 * nk
        w.extend(bytes((w[base] ^ t[0], w[base + 1] ^ t[1], w[base + 2] ^ t[2],
                        w[base + 3] ^ t[3])))
        i += 1
    return [bytes(w[16 * r:16 * r + 16]) for r in range(rounds + 1)]


class AES:
    """``AES(key).encrypt_block(16 bytes) -> 16 bytes``. The key schedule is
    kept in the instance; ``repr`` never shows it."""

    __slots__ = ("_rk",)

    def __init__(self, key: bytes) -> None:
        self._rk = expand_key(bytes(key))

    def __repr__(self) -> str:
        return "AES(<%d-bit key>)" % (32 * (len(self._rk) - 7))

    def encrypt_block(self, block: bytes) -> bytes:
        if len(block) != 16:
            raise ValueError("AES block must be 16 bytes")
        rk = self._rk
        sb = SBOX
        xt = XTIME
        s = bytearray(block[i] ^ rk[0][i] for i in range(16))
        last = len(rk) - 1
        for r in range(1, last + 1):
            # SubBytes + ShiftRows (state is column-major: s[4c + row]).
            t = bytes((sb[s[0]], sb[s[5]], sb[s[10]], sb[s[15]],
                       sb[s[4]], sb[s[9]], sb[s[14]], sb[s[3]],
                       sb[s[8]], sb[s[13]], sb[s[2]], sb[s[7]],
                       sb[s[12]], sb[s[1]], sb[s[6]], sb[s[11]]))
            k = rk[r]
            if r == last:
                return bytes(t[i] ^ k[i] for i in range(16))
            for c in range(0, 16, 4):
                a0, a1, a2, a3 = t[c], t[c + 1], t[c + 2], t[c + 3]
                u = a0 ^ a1 ^ a2 ^ a3
                s[c] = a0 ^ u ^ xt[a0 ^ a1] ^ k[c]
                s[c + 1] = a1 ^ u ^ xt[a1 ^ a2] ^ k[c + 1]
                s[c + 2] = a2 ^ u ^ xt[a2 ^ a3] ^ k[c + 2]
                s[c + 3] = a3 ^ u ^ xt[a3 ^ a0] ^ k[c + 3]
        return bytes(s)  # not reached
