"""The HES's stored form of a concentrator's codec state: the decoder's
columns as packed arrays, so that loading one is a few dozen C calls
(``array.frombytes`` + ``tolist`` per column) instead of a Python step per
entry, and a worker that does not hold a concentrator's state parsed (a
shared subscription's normal case) pays about what one that does pays.

The canonical bytes of a state (``agent.batch_state``, docs/batch-format.md
§5) stay what both ends hash: the packed form carries the 4-byte digest of
the canonical bytes it stands for, computed when it is written (the
decoder checks a delta's base digest against it). ``load`` reads both forms:
states stored before this form existed (canonical, ``WCS\\x02``) decode as
they always did and are written packed after their next batch.

Packed layout (little-endian; ``PACKED`` is its version)::

    "WHS\\x01"  digest(4)  meta_len:u32  meta (JSON)
    per register, in the state's register order:
        value column   kind:1  len:u32  bytes
        step column    kind:1  len:u32  bytes
        exponents      n bytes (one per meter, each <= 64)

    meta: [device, seq, keyframe_ts, meters, obis, last_ts (per meter, or
           null), shapes (lists of register indices), shape per meter (-1:
           none), statuses ([status, error]), status per meter (-1: none)]
    kind: N every slot empty; b h i q ints (array typecodes: 1, 2, 4, 8
          bytes); d floats; M mixed: n type bytes (0 empty, 1 int, 2 float),
          ints:u32, that many int64, then the floats

A state with something the packed form does not hold (an int beyond 64
bits, a value of another type) is written canonical: ``load`` reads that too.

Owns the packed form and nothing else; must not know SQL or how a batch is
coded. Reads and fills ``CodecState``'s columns directly (the agent's class
keeps them as lists per register: ``agent.batch_codecstate``).
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from typing import Any

from agent import batch
from agent.batch_bits import BatchError
from agent.batch_state import MAGIC as CANONICAL

PACKED = b"WHS\x01"
_U32 = struct.Struct("<I")
_SWAP = sys.byteorder != "little"
_TRY = ("h", "i", "q")
_SIZE = {c: array(c).itemsize for c in "bhiqd"}
_NONE = type(None)
assert _SIZE == {"b": 1, "h": 2, "i": 4, "q": 8, "d": 8}, _SIZE


class _Unpackable(Exception):
    """A column the packed form does not hold: the state is written canonical."""


def dump(st: batch.CodecState) -> bytes:
    """The stored form of ``st`` (packed; canonical when it cannot be)."""
    try:
        return _pack(st)
    except _Unpackable:
        return bytes(st.to_bytes())


def load(data: bytes) -> batch.CodecState:
    """A state from either stored form; ``BatchError`` for anything else."""
    if data[:4] == CANONICAL:
        return batch.CodecState.from_bytes(data)
    if data[:4] != PACKED:
        raise BatchError("bad_version", "not a stored codec state")
    try:
        return _unpack(memoryview(data))
    except BatchError:
        raise
    except (IndexError, ValueError, KeyError, TypeError, OverflowError, UnicodeError,
            struct.error, RecursionError):
        raise BatchError("bad_value", "not a stored codec state") from None


# -- writing ---------------------------------------------------------------------
def _pack(st: batch.CodecState) -> bytes:
    meters, obis = st.meters, st.obis
    oi = st._oi
    shapes: dict[tuple[str, ...], int] = {}
    statuses: dict[tuple[Any, ...], int] = {}
    last = st.last_ts
    schema, status = st.schema, st.status
    for m in meters:
        ts = last.get(m)
        if ts is not None and type(ts) is not int:
            raise _Unpackable
    meta = [st.device, st.seq, st.keyframe_ts, meters, obis,
            [last.get(m) for m in meters],
            None, [_index(shapes, schema.get(m)) for m in meters],
            None, [_index(statuses, status.get(m)) for m in meters]]
    meta[6] = [[oi[o] for o in sh] for sh in shapes]
    meta[8] = [list(s) for s in statuses]
    head = json.dumps(meta, separators=(",", ":")).encode()
    parts = [PACKED, st.digest(), _U32.pack(len(head)), head]
    for vals, dms, dks in zip(st._vals, st._dms, st._dks, strict=True):
        _column(parts, vals)
        _column(parts, dms)
        parts.append(bytes(dks))
    return b"".join(parts)


def _index(table: dict[Any, int], key: Any) -> int:
    if key is None:
        return -1
    return table.setdefault(key, len(table))


def _column(parts: list[bytes], col: Any) -> None:
    if type(col) is array and col.typecode == "d":
        parts += [b"d", _U32.pack(len(col) * 8), _bytes(col)]
        return
    for code in _TRY:       # ints, in the narrowest of these (an array refuses the rest)
        try:
            a = array(code, col)
        except OverflowError:
            continue
        except TypeError:   # not all ints
            break
        parts += [code.encode(), _U32.pack(len(a) * a.itemsize), _bytes(a)]
        return
    else:
        raise _Unpackable   # an int beyond 64 bits
    kinds = set(map(type, col))
    if kinds == {float}:
        parts += [b"d", _U32.pack(len(col) * 8), _bytes(array("d", col))]
    elif kinds == {_NONE}:
        parts += [b"N", _U32.pack(0)]
    elif kinds <= {int, float, _NONE}:
        tags = bytes([0 if v is None else 1 if type(v) is int else 2 for v in col])
        try:
            ints = array("q", [v for v in col if type(v) is int])
        except OverflowError:
            raise _Unpackable from None
        floats = array("d", [v for v in col if type(v) is float])
        body = b"".join((tags, _U32.pack(len(ints)), _bytes(ints), _bytes(floats)))
        parts += [b"M", _U32.pack(len(body)), body]
    else:
        raise _Unpackable


def _bytes(a: array[Any]) -> bytes:
    if _SWAP:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


# -- reading ---------------------------------------------------------------------
def _unpack(d: memoryview) -> batch.CodecState:
    (n,) = _U32.unpack_from(d, 8)
    meta = json.loads(bytes(d[12:12 + n]))
    p = 12 + n
    device, seq, kts, meters, obis, last, shapes, shape_of, statuses, status_of = meta
    nm, no = len(meters), len(obis)
    if not (isinstance(device, str) and _ints([seq, kts]) and _strs(meters)
            and _strs(obis) and len(set(meters)) == nm and len(set(obis)) == no
            and len(last) == nm and len(shape_of) == nm and len(status_of) == nm):
        raise BatchError("bad_value", "stored codec state tables")
    st = batch.CodecState(device)
    st.seq, st.keyframe_ts = seq, kts
    st.meters, st.obis = list(meters), list(obis)
    st._mi = {m: i for i, m in enumerate(meters)}
    st._oi = {o: j for j, o in enumerate(obis)}
    st.last_ts = {m: ts for m, ts in zip(meters, last, strict=True) if ts is not None}
    if not _ints(st.last_ts.values()):
        raise BatchError("bad_value", "stored codec state times")
    table = [tuple(obis[j] for j in _indices(sh, no)) for sh in shapes]
    st.schema = {m: table[k] for m, k in zip(meters, shape_of, strict=True)
                 if _at(k, len(table))}
    sts = [(s, e) for s, e in statuses]
    if not all(isinstance(s, str) and (e is None or isinstance(e, str)) for s, e in sts):
        raise BatchError("bad_value", "stored codec state results")
    st.status = {m: sts[k] for m, k in zip(meters, status_of, strict=True)
                 if _at(k, len(sts))}
    vals, dms, dks = st._vals, st._dms, st._dks
    for _ in range(no):
        col, p = _read_column(d, p, nm)
        vals.append(col)
        col, p = _read_column(d, p, nm)
        dms.append(col)
        ks = bytearray(d[p:p + nm])
        p += nm
        if len(ks) != nm or (nm and max(ks) > 64):
            raise BatchError("bad_value", "stored codec state exponents")
        dks.append(ks)
    if p != len(d):
        raise BatchError("bad_length", "bytes after the stored codec state")
    st._digest = bytes(d[4:8])
    return st


def _read_column(d: memoryview, p: int, n: int) -> tuple[list[Any], int]:
    kind = bytes(d[p:p + 1])
    (size,) = _U32.unpack_from(d, p + 1)
    p += 5
    body = d[p:p + size]
    if len(body) != size:
        raise BatchError("truncated", "stored codec state ends early")
    p += size
    if kind == b"N":
        if size:
            raise BatchError("bad_value", "stored codec state column")
        return [None] * n, p
    if kind == b"M":
        return _mixed(body, n), p
    code = kind.decode("ascii")
    if code not in _SIZE or size != n * _SIZE[code]:
        raise BatchError("bad_value", "stored codec state column")
    return _array(code, body).tolist(), p


def _array(code: str, body: memoryview) -> array[Any]:
    a = array(code)
    a.frombytes(body)
    if _SWAP:
        a.byteswap()
    return a


def _mixed(body: memoryview, n: int) -> list[Any]:
    tags = bytes(body[:n])
    (k,) = _U32.unpack_from(body, n)
    ints = _array("q", body[n + 4:n + 4 + 8 * k]).tolist()
    floats = _array("d", body[n + 4 + 8 * k:]).tolist()
    if len(tags) != n or len(ints) != k or tags.count(1) != k \
            or tags.count(2) != len(floats) or tags.count(0) + k + len(floats) != n \
            or len(body) != n + 4 + 8 * (k + len(floats)):
        raise BatchError("bad_value", "stored codec state column")
    ii, fi = iter(ints), iter(floats)
    return [None if t == 0 else next(ii) if t == 1 else next(fi) for t in tags]


def _ints(xs: Any) -> bool:
    return all(type(x) is int for x in xs)


def _strs(xs: Any) -> bool:
    return isinstance(xs, list) and all(type(x) is str for x in xs)


def _indices(xs: Any, n: int) -> list[int]:
    if not isinstance(xs, list) or not all(type(x) is int and 0 <= x < n for x in xs):
        raise BatchError("bad_value", "stored codec state shape")
    return xs


def _at(k: Any, n: int) -> bool:
    if type(k) is not int or not -1 <= k < n:
        raise BatchError("bad_value", "stored codec state index")
    return k >= 0
