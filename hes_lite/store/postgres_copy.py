"""Meter-hour rows as PostgreSQL binary ``COPY`` data, for the staging
table the PostgreSQL store merges readings from.

Owns the byte layout only (PostgreSQL docs, "COPY — Binary Format" and the
array send format of ``array_send``). One staging row per meter and
instant, its values split by kind so that no array holds a NULL and every
element has the same size:

    meter_id int4 | ts int8 | io int2[] | iv int8[] | fo int2[] | fv float8[] | no int2[]

``io``/``iv`` are the OBIS ids and values of the integer cells, ``fo``/``fv``
those of the float cells, ``no`` the ids of empty cells. The id arrays
depend only on the row's shape (its OBIS ids and which cell is which kind),
so they are made once per shape. Must not know SQL beyond the column list,
nor connections.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
COLUMNS = "meter_id, ts, io, iv, fo, fv, no"
STAGING_DDL = ("CREATE TEMP TABLE IF NOT EXISTS readings_in (meter_id integer, ts bigint, "
               "io smallint[], iv bigint[], fo smallint[], fv double precision[], "
               "no smallint[]) ON COMMIT DELETE ROWS")

INT2, INT8, FLOAT8 = 21, 20, 701   # pg_type oids
_HEAD = struct.Struct(">hiiiq")      # 7 fields, int4 meter id, int8 ts
_INT_MAX = (1 << 63) - 1


class CopyError(ValueError):
    """A value that the staging row cannot carry (an int beyond int64)."""


def _array(oid: int, fmt: str, values: Sequence[int | float]) -> bytes:
    """One array field (its length prefix included) of fixed-size elements."""
    if not values:
        body = struct.pack(">iii", 0, 0, oid)
    else:
        size = struct.calcsize(">" + fmt)
        body = struct.pack(">iiiii", 1, 0, oid, len(values), 1) + b"".join(
            struct.pack(">i" + fmt, size, v) for v in values)
    return struct.pack(">i", len(body)) + body


class _Shape:
    """The constant parts of rows with one shape, and the packers of the
    value arrays (element lengths interleaved by slice assignment)."""

    __slots__ = ("io", "fo", "no", "ipack", "iargs", "fpack", "fargs")

    def __init__(self, oids: tuple[int, ...], kinds: tuple[type, ...]) -> None:
        io = [o for o, k in zip(oids, kinds, strict=True) if k is int]
        fo = [o for o, k in zip(oids, kinds, strict=True) if k is float]
        no = [o for o, k in zip(oids, kinds, strict=True) if k is not int and k is not float]
        self.io, self.fo, self.no = (_array(INT2, "h", io), _array(INT2, "h", fo),
                                     _array(INT2, "h", no))
        self.ipack, self.iargs = self._packer(INT8, "q", len(io))
        self.fpack, self.fargs = self._packer(FLOAT8, "d", len(fo))

    @staticmethod
    def _packer(oid: int, fmt: str, n: int) -> tuple[struct.Struct, list[int | float]]:
        if n == 0:
            return struct.Struct(">iiii"), [12, 0, 0, oid]
        s = struct.Struct(">iiiiii" + ("i" + fmt) * n)
        args: list[int | float] = [s.size - 4, 1, 0, oid, n, 1]
        return s, args + [8, 0] * n


class StagingRows:
    """Builds the COPY data of many rows: ``add(meter_id, ts, oids, values)``
    then ``data()``. Shapes are cached across calls."""

    def __init__(self) -> None:
        self._shapes: dict[tuple[tuple[int, ...], tuple[type, ...]], _Shape] = {}
        self._parts: list[bytes] = [SIGNATURE]
        self.rows = 0

    def reset(self) -> None:
        self._parts = [SIGNATURE]
        self.rows = 0
        if len(self._shapes) > 4096:
            self._shapes.clear()

    def add(self, meter_id: int, ts: int, oids: tuple[int, ...],
            values: Sequence[int | float | None]) -> None:
        kinds = tuple(map(type, values))
        shape = self._shapes.get((oids, kinds))
        if shape is None:
            if any(k is bool for k in kinds):     # bools are ints to the store
                self.add(meter_id, ts, oids, [int(v) if type(v) is bool else v
                                              for v in values])
                return
            shape = self._shapes[(oids, kinds)] = _Shape(oids, kinds)
        ints = [v for v in values if type(v) is int]
        a = shape.iargs[:]
        a[7::2] = ints
        floats = [v for v in values if type(v) is float]
        b = shape.fargs[:]
        b[7::2] = floats
        try:
            self._parts += (_HEAD.pack(7, 4, meter_id, 8, ts), shape.io, shape.ipack.pack(*a),
                            shape.fo, shape.fpack.pack(*b), shape.no)
        except struct.error:
            big = [v for v in ints if not -_INT_MAX - 1 <= v <= _INT_MAX]
            raise CopyError("an integer reading beyond 64 bits: meter id %d, ts %d, %r"
                            % (meter_id, ts, big[:1])) from None
        self.rows += 1

    def extend(self, rows: Iterable[tuple[int, int, tuple[int, ...],
                                          Sequence[int | float | None]]]) -> None:
        for r in rows:
            self.add(*r)

    def data(self) -> bytes:
        return b"".join(self._parts) + TRAILER
