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
so they are made once per shape.

``ReadingRows`` writes the rows of ``readings`` itself (one per reading:
``meter_id int4 | obis_id int2 | ts int8 | i int8 | f float8``), for the
direct ``COPY`` into a month's partition (the steady state: nothing there
yet). A meter-hour is one ``struct`` call: per shape the readings are laid
out ints first, then floats, then empty cells, so the row's meter id, time
and values go into the argument list by three or four slice assignments.
Must not know SQL beyond the column lists, nor connections.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import Any, Generic, TypeVar

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
COLUMNS = "meter_id, ts, io, iv, fo, fv, no"
STAGING_DDL = ("CREATE TEMP TABLE IF NOT EXISTS readings_in (meter_id integer, ts bigint, "
               "io smallint[], iv bigint[], fo smallint[], fv double precision[], "
               "no smallint[]) ON COMMIT DELETE ROWS")

READING_COLUMNS = "meter_id, obis_id, ts, i, f"

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


Values = Sequence[int | float | None]
S = TypeVar("S")


class _CopyRows(Generic[S]):
    """What both COPY builders share: the parts of the binary COPY data and
    the cache of row shapes, keyed by (OBIS ids, value kinds)."""

    def __init__(self, make: Callable[[tuple[int, ...], tuple[type, ...]], S]) -> None:
        self._make = make
        self._shapes: dict[tuple[tuple[int, ...], tuple[type, ...]], S] = {}
        self._parts: list[bytes] = [SIGNATURE]
        self.rows = 0

    def _shape(self, oids: tuple[int, ...], values: Values) -> tuple[S, Values]:
        """The shape of these values (made once), and the values as the store
        takes them: bools are ints to it."""
        kinds = tuple(map(type, values))
        shape = self._shapes.get((oids, kinds))
        if shape is None:
            if any(k is bool for k in kinds):
                return self._shape(oids, [int(v) if type(v) is bool else v for v in values])
            shape = self._shapes[(oids, kinds)] = self._make(oids, kinds)
        return shape, values

    def data(self) -> bytes:
        return b"".join(self._parts) + TRAILER


class StagingRows(_CopyRows[_Shape]):
    """Builds the COPY data of many rows: ``add(meter_id, ts, oids, values)``
    then ``data()``. Shapes are cached across calls."""

    def __init__(self) -> None:
        super().__init__(_Shape)

    def reset(self) -> None:
        self._parts = [SIGNATURE]
        self.rows = 0
        if len(self._shapes) > 4096:
            self._shapes.clear()

    def add(self, meter_id: int, ts: int, oids: tuple[int, ...], values: Values) -> None:
        shape, values = self._shape(oids, values)
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


class _ReadingShape:
    """One meter-hour of a shape as readings rows: the packer and the
    argument template (field counts, lengths and OBIS ids filled in)."""

    __slots__ = ("pack", "args", "ni", "nf", "nn", "fbase", "nbase", "ints", "floats")

    # per reading: 5 fields, int4 meter id, int2 OBIS id, int8 ts, then
    # i and f: (8, int, -1) | (-1, 8, float) | (-1, -1)
    def __init__(self, oids: tuple[int, ...], kinds: tuple[type, ...]) -> None:
        io = [o for o, k in zip(oids, kinds, strict=True) if k is int]
        fo = [o for o, k in zip(oids, kinds, strict=True) if k is float]
        no = [o for o, k in zip(oids, kinds, strict=True) if k is not int and k is not float]
        self.ni, self.nf, self.nn = len(io), len(fo), len(no)
        self.ints = _getter([i for i, k in enumerate(kinds) if k is int])
        self.floats = _getter([i for i, k in enumerate(kinds) if k is float])
        fmt = ">" + "hiiihiqiqi" * self.ni + "hiiihiqiid" * self.nf + "hiiihiqii" * self.nn
        self.pack = struct.Struct(fmt).pack
        args: list[int | float] = []
        for o in io:
            args += [5, 4, 0, 2, o, 8, 0, 8, 0, -1]
        for o in fo:
            args += [5, 4, 0, 2, o, 8, 0, -1, 8, 0.0]
        for o in no:
            args += [5, 4, 0, 2, o, 8, 0, -1, -1]
        self.args = args
        self.fbase = 10 * self.ni
        self.nbase = 10 * (self.ni + self.nf)


def _getter(idx: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The values at ``idx`` as a tuple (``itemgetter``'s, one index or none included)."""
    if not idx:
        return lambda v: ()
    if len(idx) == 1:
        i = idx[0]
        return lambda v: (v[i],)
    return itemgetter(*idx)


class ReadingRows(_CopyRows[_ReadingShape]):
    """Builds the COPY data of ``readings`` rows from meter-hours:
    ``add(meter_id, ts, oids, values)`` then ``data()``."""

    def __init__(self) -> None:
        super().__init__(_ReadingShape)

    def add(self, meter_id: int, ts: int, oids: tuple[int, ...], values: Values) -> None:
        shape, values = self._shape(oids, values)
        a = shape.args[:]
        n = shape.ni + shape.nf
        a[2:10 * n:10] = [meter_id] * n
        a[6:10 * n:10] = [ts] * n
        if shape.ni:
            a[8:shape.fbase:10] = shape.ints(values)
        if shape.nf:
            a[shape.fbase + 9:shape.nbase:10] = shape.floats(values)
        if shape.nn:
            a[shape.nbase + 2::9] = [meter_id] * shape.nn
            a[shape.nbase + 6::9] = [ts] * shape.nn
        try:
            self._parts.append(shape.pack(*a))
        except struct.error:
            raise CopyError("an integer reading beyond 64 bits: meter id %d, ts %d"
                            % (meter_id, ts)) from None
        self.rows += len(values)
