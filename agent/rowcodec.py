"""The archive's compact row format: one load-profile row or register
snapshot as a short byte string.

Owns only this at-rest encoding (not the wire format, which is the batch
codec). A row is a sequence of ``(obis id, value)``; each value is tagged:
0 = null, 1 = integer (zigzag varint), 2 = decimal (one byte k, zigzag varint
mantissa, value = m / 10**k), 3 = IEEE-754 binary64. Typically 3–5 bytes a
value, so 64 meters × 45 days × 24 h × 27 values stay far below 32 MB.
"""

from __future__ import annotations

import struct

from agent import AgentError
from agent.batch_bits import unzigzag, zigzag
from agent.batch_columns import exponent


class RowCodecError(AgentError):
    """An archived row does not decode (a corrupted archive)."""


Value = int | float | None


def _varint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _decimal(v: float) -> tuple[int, int] | None:
    """(k, m) with m / 10**k == v exactly: the batch codec's exponent search."""
    k = exponent(v)
    return None if k < 0 else (k, round(v * 10**k))


def encode_row(items: list[tuple[int, Value]]) -> bytes:
    out = bytearray()
    for oid, v in items:
        _varint(oid, out)
        if v is None:
            out.append(0)
        elif isinstance(v, bool):
            out.append(1)
            _varint(zigzag(int(v)), out)
        elif isinstance(v, int):
            out.append(1)
            _varint(zigzag(v), out)
        else:
            d = _decimal(v)   # None for nan, inf, -0.0 and non-decimal floats
            if d is None:
                out.append(3)
                out += struct.pack("<d", v)
            else:
                out.append(2)
                out.append(d[0])
                _varint(zigzag(d[1]), out)
    return bytes(out)


def decode_row(data: bytes) -> list[tuple[int, Value]]:
    items: list[tuple[int, Value]] = []
    i, n = 0, len(data)

    def varint() -> int:
        nonlocal i
        shift = val = 0
        while True:
            if i >= n or shift > 70:
                raise RowCodecError("truncated varint in archived row")
            b = data[i]
            i += 1
            val |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return val

    while i < n:
        oid = varint()
        if i >= n:
            raise RowCodecError("truncated archived row")
        tag = data[i]
        i += 1
        v: Value
        if tag == 0:
            v = None
        elif tag == 1:
            v = unzigzag(varint())
        elif tag == 2:
            if i >= n:
                raise RowCodecError("truncated archived row")
            k = data[i]
            i += 1
            if k > 22:
                raise RowCodecError("bad decimal exponent %d" % k)
            v = unzigzag(varint()) / 10**k
        elif tag == 3:
            if i + 8 > n:
                raise RowCodecError("truncated archived row")
            v = struct.unpack("<d", data[i:i + 8])[0]
            i += 8
        else:
            raise RowCodecError("bad value tag %d in archived row" % tag)
        items.append((oid, v))
    return items
