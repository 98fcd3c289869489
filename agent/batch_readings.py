"""An hour's readings held column by column: what a board fills while it reads
its meters and what the batch encoder consumes, without a dict per row.

Portable (CPython and MicroPython). Owns this in-memory form only (not the
wire format, not the state): per row its meter, timestamp and shape (its
register codes, sorted; one tuple shared by every row with the same codes),
per register one column of values by row, an ``array('d')`` while every value
in it is a float (8 bytes a value instead of a pointer and a boxed float),
else a list (ints, None, anything). A cell of a register a row does not have
holds a filler that nothing reads (the shape says so). 64 meters x 27
registers: ~11 KB on MicroPython, where ``[(meter, ts, {obis: value})]``
takes ~29 KB. Must not know the bit stream or the codec state.

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


class Readings:
    """Rows ``(meter, ts, {obis: value})`` stored column by column (see the
    module's docstring). Append-only."""

    def __init__(self) -> None:
        self.meters: "list[str]" = []       # per row
        self.ts: "list[int]" = []           # per row
        self.shapes: "list[tuple[str, ...]]" = []   # per row: its codes, sorted
        self.obis: "list[str]" = []         # per column: its register code
        self.cols: "list[Any]" = []         # per column: per row its value
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
        cols, ci, keys = self.cols, self._ci, _KEYS
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
                # earlier rows do not have it: fillers
                cols.append(array("d", [0.0] * n) if type(v) is float and v == v
                            else [None] * n)
            else:
                k = self.obis[c]
            codes.append(k)
            col = cols[c]
            if type(col) is not list and not (type(v) is float and v == v):
                col = cols[c] = list(col)       # an int, a None or a nan: a list
            col.append(v)
        for col in cols:
            if len(col) == n:                   # a register this row has not
                col.append(0.0 if type(col) is not list else None)
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
