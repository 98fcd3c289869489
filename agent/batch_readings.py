"""An hour's readings held column by column: what a board fills while it reads
its meters and what the batch encoder consumes, without a dict per row.

Portable (CPython and MicroPython). Owns this in-memory form only (not the
wire format, not the state): per row its meter, timestamp and shape (its
register codes, sorted; one tuple shared by every row with the same codes),
per register one column of values by row: an ``array('d')`` while every
value in it is a float (8 bytes a value instead of a pointer and a boxed
float), an ``array('i')`` while every value is an int of 32 bits (grown 8
values at a time, where a list doubles), else a list (None, big ints, mixed
types, anything). A cell of a register a row does not have holds a filler
that nothing reads (the shape says so). 64 meters x 27 registers: ~11 KB on
MicroPython, where ``[(meter, ts, {obis: value})]`` takes ~29 KB. Must not
know the bit stream or the codec state.

    rows = Readings()
    rows.add(meter, ts, {obis: int | float | None})     # bools become ints
    Batch(device, seq, created, rows, events, statuses)  # the batch keeps it
    len(rows); rows[i] and iter(rows) -> (meter, ts, {obis: value}), built on demand
"""

from array import array

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true at run time: MicroPython has no typing
    from collections.abc import Iterator
    from typing import Any

# One str object per register code, meter id and status across rows and
# batches (a code parsed per reading would otherwise cost 32 bytes per value
# on MicroPython, a meter id read every hour 32 bytes per meter). Bounded:
# cleared when full.
_KEYS: "dict[str, str]" = {}


def name(s: object) -> str:
    """``str(s)``, the one object held for that text."""
    t = str(s)
    if len(_KEYS) > 4096:
        _KEYS.clear()
    return _KEYS.setdefault(t, t)


def values(vals: "dict[str, Any]") -> "dict[str, Any]":
    """A row's values (a copy), bools as ints (MicroPython's bool is no int
    subclass), register codes shared through ``name``."""
    if len(_KEYS) > 4096:
        _KEYS.clear()
    keys = _KEYS
    out = {}
    for k, v in vals.items():
        if v is True or v is False:
            v = int(v)
        out[keys.setdefault(k, k)] = v
    return out


LIST, FLOATS, INTS = 0, 1, 2
FILLER = (None, 0.0, 0)
_INT = 1 << 31          # array('i') holds 32 bits (and wraps silently beyond)


def _kind(v: "Any") -> int:
    """The column kind that holds ``v`` exactly: an array('d') a float (not
    nan: its bits are kept as they came), an array('i') a 32-bit int."""
    t = type(v)
    if t is float:
        return FLOATS if v == v else LIST
    if t is int:
        return INTS if -_INT <= v < _INT else LIST
    return LIST


class Readings:
    """Rows ``(meter, ts, {obis: value})`` stored column by column (see the
    module's docstring). Append-only."""

    def __init__(self) -> None:
        self.meters: "list[str]" = []       # per row
        self.ts: "list[int]" = []           # per row
        self.shapes: "list[tuple[str, ...]]" = []   # per row: its codes, sorted
        self.obis: "list[str]" = []         # per column: its register code
        self.cols: "list[Any]" = []         # per column: per row its value
        self._kinds = bytearray()           # per column: LIST, FLOATS or INTS
        self._ci: "dict[str, int]" = {}     # code -> column
        self._shapes: "dict[tuple[str, ...], tuple[str, ...]]" = {}

    @classmethod
    def of(cls, rows: "Any") -> "Readings":
        """From ``(meter, ts, {obis: value})`` rows."""
        out = cls()
        for m, ts, vals in rows:
            out.add(m, ts, vals)
        return out

    def add(self, meter: str, ts: int, vals: "dict[str, Any]") -> None:
        """Append a row; ``vals`` is not kept."""
        n = len(self.meters)
        cols, kinds, ci, keys = self.cols, self._kinds, self._ci, _KEYS
        if len(keys) > 4096:
            keys.clear()
        codes = []
        for k, v in vals.items():
            if v is True or v is False:
                v = int(v)
            c = ci.get(k)
            if c is None:
                k = keys.setdefault(k, k)
                c = ci[k] = len(cols)
                self.obis.append(k)
                kind = _kind(v)
                kinds.append(kind)
                # earlier rows do not have it: fillers
                cols.append(array("d", [0.0] * n) if kind == FLOATS else
                            array("i", [0] * n) if kind == INTS else [None] * n)
            else:
                k = self.obis[c]
                kind = kinds[c]
                if kind and not (type(v) is float and v == v if kind == FLOATS else
                                 type(v) is int and -_INT <= v < _INT):
                    cols[c] = list(cols[c])         # does not fit: a list from now on
                    kinds[c] = LIST
            codes.append(k)
            cols[c].append(v)
        for c in range(len(cols)):
            col = cols[c]
            if len(col) == n:                   # a register this row has not
                col.append(FILLER[kinds[c]])
        codes.sort()
        shape = tuple(codes)
        self.meters.append(name(meter))
        self.ts.append(int(ts))
        self.shapes.append(self._shapes.setdefault(shape, shape))

    def __len__(self) -> int:
        return len(self.meters)

    def __getitem__(self, r: int) -> "tuple[str, int, dict[str, Any]]":
        cols, ci = self.cols, self._ci
        return (self.meters[r], self.ts[r], dict((o, cols[ci[o]][r]) for o in self.shapes[r]))

    def __iter__(self) -> "Iterator[tuple[str, int, dict[str, Any]]]":
        for r in range(len(self.meters)):
            yield self[r]

    def column(self, obis: str) -> "Any":
        """Register ``obis``'s column (values by row; a list or an array)."""
        return self.cols[self._ci[obis]]

    def order(self) -> "list[int]":
        """Row indices by (meter, ts), stable: the order ``Batch.canonical``
        gives (sorted on (key, position) tuples: MicroPython's sort is not
        stable and calls a key function at every comparison)."""
        ms, ts = self.meters, self.ts
        keyed = [(ms[r], ts[r], r) for r in range(len(ms))]
        keyed.sort()
        return [k[2] for k in keyed]

    def __repr__(self) -> str:
        return "Readings(%d rows, %d registers)" % (len(self.meters), len(self.obis))
