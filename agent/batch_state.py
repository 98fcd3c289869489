"""Canonical bytes of a ``CodecState`` (docs/batch-format.md §5): what the HES
persists per concentrator and what the base digest of a delta batch hashes.

Portable (CPython and MicroPython). Byte-oriented (LEB128 integers, tagged
values, binary64 floats) so both ends produce identical bytes. Must not know
the batch body.
"""

import struct

from agent.batch_bits import BatchError, bit_length

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true at run time: MicroPython has no typing
    from typing import Any

MAGIC = b"WCS\x02"
LIMIT = 1 << 20


def _uv(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _tx(out: bytearray, s: str) -> None:
    b = s.encode()
    _uv(out, len(b))
    out.extend(b)


def _val(out: bytearray, v: "object") -> None:
    if v is None:
        out.append(0)
    elif isinstance(v, int):
        out.append(1)
        _uv(out, 2 * v if v >= 0 else -2 * v - 1)
    else:
        out.append(2)
        out.extend(struct.pack(">d", v))


CHUNK = 2048          # write_state hands its bytes on in pieces of about this size


def write_state(st: "object", sink: "object") -> None:
    """The canonical bytes of ``st``, fed to ``sink(bytes)`` a piece at a time
    (about ``CHUNK`` bytes each: a board hashes or writes its state without
    holding it whole)."""
    out = bytearray(MAGIC)
    _tx(out, st.device)  # type: ignore[attr-defined]
    _uv(out, st.seq + 1)  # type: ignore[attr-defined]
    _uv(out, st.keyframe_ts + 1)  # type: ignore[attr-defined]
    meters = st.meters  # type: ignore[attr-defined]
    obis = st.obis  # type: ignore[attr-defined]
    _uv(out, len(meters))
    for m in meters:
        _tx(out, m)
    _uv(out, len(obis))
    for o in obis:
        _tx(out, o)
    oi = st._oi  # type: ignore[attr-defined]
    cols = (st._vals, st._dms, st._dks)  # type: ignore[attr-defined]
    for i, m in enumerate(meters):
        _val(out, st.last_ts.get(m))  # type: ignore[attr-defined]
        sch = st.schema.get(m)  # type: ignore[attr-defined]
        _uv(out, 0 if sch is None else len(sch) + 1)
        if sch:
            idx = [oi[o] for o in sch]
            if max(idx) < 0x80:
                out.extend(bytes(idx))
            else:
                for j in idx:
                    _uv(out, j)
        s = st.status.get(m)  # type: ignore[attr-defined]
        if s is None:
            out.append(0)
        else:
            out.append(1 if s[1] is None else 2)
            _tx(out, s[0])
            if s[1] is not None:
                _tx(out, s[1])
        _put_cells(out, cols, i)
        if len(out) >= CHUNK:
            sink(bytes(out))  # type: ignore[operator]
            out = bytearray()
    sink(bytes(out))  # type: ignore[operator]


def state_to_bytes(st: "object") -> bytes:
    parts: "list[bytes]" = []
    write_state(st, parts.append)
    return b"".join(parts)


def _put_cells(out: bytearray, cols: "tuple[Any, Any, Any]", i: int) -> None:
    """Meter ``i``'s entries in register order and the 0 after them (the hot
    path of saving a state: small indices, ints and floats inline, the rest
    through ``_val``/``_uv``)."""
    vals, dms, dks = cols
    append = out.append
    pack = struct.pack
    for j in range(len(vals)):
        v0 = vals[j][i]
        if v0 is None:
            continue
        if j < 0x7F:
            append(j + 1)
        else:
            _uv(out, j + 1)
        for v in (v0, dms[j][i]):
            if v is None:
                append(0)
            elif type(v) is int:
                n = 2 * v if v >= 0 else -2 * v - 1
                append(1)
                while n > 0x7F:
                    append((n & 0x7F) | 0x80)
                    n >>= 7
                append(n)
            elif type(v) is float:
                append(2)
                out.extend(pack(">d", v))
            else:
                _val(out, v)
        append(dks[j][i])      # dk <= 64: one byte
    append(0)


_MOST: "dict[int, int]" = {}
_BIG = 1 << 4000


def _most(limit: int) -> int:
    m = _MOST.get(limit)
    if m is None:
        m = _MOST[limit] = bit_length(limit) + 7
    return m


class _In:
    __slots__ = ("d", "p")

    def __init__(self, d: bytes) -> None:
        self.d = d
        self.p = 0

    def byte(self) -> int:
        if self.p >= len(self.d):
            raise BatchError("truncated", "codec state ends early")
        self.p += 1
        return self.d[self.p - 1]

    def uv(self, limit: int = 1 << 62) -> int:
        # Hot path of loading a state (one call per value): locals, no calls.
        d, p = self.d, self.p
        end = len(d)
        if p >= end:
            raise BatchError("truncated", "codec state ends early")
        b = d[p]
        p += 1
        if b < 0x80:
            self.p = p
            if b > limit:
                raise BatchError("bad_value", "codec state value over limit")
            return b
        n, shift = b & 0x7F, 7
        most = _most(limit)
        while True:
            if p >= end:
                raise BatchError("truncated", "codec state ends early")
            b = d[p]
            p += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > most:
                raise BatchError("bad_value", "varint too long")
        self.p = p
        if n > limit:
            raise BatchError("bad_value", "codec state value over limit")
        return n

    def raw(self, n: int) -> bytes:
        if self.p + n > len(self.d):
            raise BatchError("truncated", "codec state ends early")
        self.p += n
        return self.d[self.p - n:self.p]

    def tx(self) -> str:
        return self.raw(self.uv(LIMIT)).decode()

    def val(self) -> "object":
        d, p = self.d, self.p
        if p >= len(d):
            raise BatchError("truncated", "codec state ends early")
        t = d[p]
        self.p = p + 1
        if t == 0:
            return None
        if t == 1:
            z = self.uv(_BIG)
            return z >> 1 if not z & 1 else -((z + 1) >> 1)
        if t == 2:
            return float(struct.unpack(">d", self.raw(8))[0])
        raise BatchError("bad_value", "codec state value tag %d" % t)


def state_from_bytes(st: "object", data: bytes) -> None:
    r = _In(data)
    try:
        if r.raw(4) != MAGIC:
            raise BatchError("bad_version", "not a codec state")
        _fill(st, r)
    except BatchError:
        raise
    except (IndexError, ValueError, KeyError, UnicodeError, OverflowError, TypeError):
        raise BatchError("bad_value", "not a codec state") from None
    if r.p != len(data):
        raise BatchError("bad_length", "bytes after the codec state")


def _fill(st: "object", r: _In) -> None:
    st.device = r.tx()  # type: ignore[attr-defined]
    st.seq = r.uv() - 1  # type: ignore[attr-defined]
    st.keyframe_ts = r.uv() - 1  # type: ignore[attr-defined]
    meters = [r.tx() for _ in range(r.uv(LIMIT))]
    obis = [r.tx() for _ in range(r.uv(LIMIT))]
    st.add_tables(meters, obis)  # type: ignore[attr-defined]
    cols = (st._vals, st._dms, st._dks)  # type: ignore[attr-defined]
    for i, m in enumerate(meters):
        ts = r.val()
        if ts is not None:
            st.last_ts[m] = int(ts)  # type: ignore[attr-defined,call-overload]
        n = r.uv(LIMIT)
        if n:
            st.schema[m] = _shape(r, n - 1, obis)  # type: ignore[attr-defined]
        t = r.byte()
        if t:
            s = r.tx()
            st.status[m] = (s, None if t == 1 else r.tx())  # type: ignore[attr-defined]
        r.p = _cells(r, cols, i, len(obis))


def _shape(r: _In, n: int, obis: "list[str]") -> "tuple[str, ...]":
    """A row shape: ``n`` OBIS indices (one-byte ones inline)."""
    d, p = r.d, r.p
    if n == 0:
        return ()
    if p + n <= len(d) and max(d[p:p + n]) < 0x80:
        r.p = p + n
        return tuple([obis[i] for i in d[p:p + n]])
    return tuple([obis[r.uv(LIMIT)] for _ in range(n)])


def _cells(r: _In, cols: "tuple[Any, Any, Any]", mi: int, nob: int) -> int:
    """Meter ``mi``'s entry list, up to its 0 terminator, into the state's
    columns; returns the position after it. The hot path of loading a state
    (a few thousand entries per concentrator, one state per batch at the
    HES): one-byte varints, small ints and floats inline; anything else
    through ``_In`` (same values, same limits, same errors)."""
    d, p = r.d, r.p
    end = len(d)
    vcol, dcol, kcol = cols
    unpack = struct.unpack_from
    most = _most(_BIG)
    try:
        while True:
            i = d[p]
            if i == 0:
                return p + 1
            if i < 0x80:
                p += 1
            else:
                r.p = p
                i = r.uv(LIMIT)
                p = r.p
            if i > nob:
                raise BatchError("bad_value", "codec state OBIS index")
            vals: "list[object]" = []
            for _ in (0, 1):
                t = d[p]
                if t == 1:                  # a zigzag varint, as _In.uv(_BIG)
                    b = d[p + 1]
                    p += 2
                    if b & 0x80:
                        z, shift = b & 0x7F, 7
                        while True:
                            b = d[p]
                            p += 1
                            z |= (b & 0x7F) << shift
                            if not b & 0x80:
                                break
                            shift += 7
                            if shift > most:
                                raise BatchError("bad_value", "varint too long")
                        if z > _BIG:
                            raise BatchError("bad_value", "codec state value over limit")
                    else:
                        z = b
                    vals.append(z >> 1 if not z & 1 else -((z + 1) >> 1))
                elif t == 2 and p + 9 <= end:
                    vals.append(unpack(">d", d, p + 1)[0])
                    p += 9
                elif t == 0:
                    vals.append(None)
                    p += 1
                else:
                    r.p = p
                    vals.append(r.val())
                    p = r.p
            dk = d[p]
            if dk <= 64:
                p += 1
            else:
                r.p = p
                dk = r.uv(64)
                p = r.p
            if vals[0] is None:
                raise BatchError("bad_value", "codec state entry without a value")
            vcol[i - 1][mi] = vals[0]
            dcol[i - 1][mi] = vals[1]
            kcol[i - 1][mi] = dk
    except IndexError:
        raise BatchError("truncated", "codec state ends early") from None
