"""``CodecState``: what the HES acknowledged, held identically at both ends of
the batch codec, and how an acknowledged batch moves it (docs/batch-format.md
§5). ``agent.batch`` re-exports it; its bytes are ``agent.batch_state``.

Portable (CPython and MicroPython). In memory the entries (value, dm, dk) are
three columns per register, one slot per meter (value None: no entry), not a
dict of tuples: a board holds this state all the time. On MicroPython a
register's value column becomes an ``array('d')`` while every meter holds a
float there (``COMPACT``; 8 bytes a value instead of a pointer and a boxed
float; nothing else changes: it reads as the list did). Must not know the
bit stream of a batch or how the HES stores the state.
"""

import hashlib
import sys
from array import array

from agent.batch_bits import BatchError
from agent.batch_columns import step
from agent.batch_readings import Readings

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true at run time: MicroPython has no typing
    from typing import Any

# Float columns as arrays: on MicroPython (a board's heap). CPython (the HES,
# which loads a state per batch) keeps lists; tests switch it on there too.
COMPACT = sys.implementation.name == "micropython"


def _clean(v: "Any") -> bool:
    """A value an ``array('d')`` gives back as it was: a float, not nan."""
    return type(v) is float and v == v


class CodecState:
    """The meter and OBIS tables, per meter the last row's ts and OBIS set and
    the last cycle result, per (meter, OBIS) the last value and step. Both
    ends call ``advance`` with each acknowledged batch, in order.
    ``entry(meter, obis)`` reads one entry."""

    def __init__(self, device: str = "") -> None:
        self.device = device
        self.seq = -1
        self.keyframe_ts = -1
        self.meters: "list[str]" = []
        self.obis: "list[str]" = []
        self.last_ts: "dict[str, int]" = {}
        self.schema: "dict[str, tuple[Any, ...]]" = {}
        self.status: "dict[str, tuple[Any, ...]]" = {}
        self._mi: "dict[str, int]" = {}          # meter -> its slot in every column
        self._oi: "dict[str, int]" = {}          # OBIS -> its column
        self._vals: "list[Any]" = []             # per column: last value per meter
        self._dms: "list[list[Any]]" = []        # per column: last step mantissa
        self._dks: "list[bytearray]" = []        # per column: its decimal exponent
        self._digest: "bytes | None" = None
        # The bytes this state was loaded from while it has not moved since:
        # to_bytes() returns them and digest() hashes them, without
        # re-serializing (the HES loads a state per batch and checks its
        # digest). A non-canonical input thus names itself, not the state an
        # encoder would name: a delta against it is refused (base_mismatch),
        # never decoded against the wrong base.
        self._source: "bytes | None" = None
        # Changes on every advance(); a Batch decoded against this state
        # carries the state's entries after it, valid while this holds.
        self._token: "object" = object()

    def __repr__(self) -> str:
        return "CodecState(%r, seq=%d, %d meters, %d registers)" % (
            self.device, self.seq, len(self.meters), len(self.obis))

    def copy(self) -> "CodecState":
        return CodecState.from_bytes(self.to_bytes())

    def add_tables(self, meters: "list[str]", obis: "list[str]") -> None:
        """Append meters and registers (new ones: a name already held is a
        ``BatchError``), with empty entries."""
        for m in meters:
            if m in self._mi:
                raise BatchError("bad_value", "meter %s twice in the codec state" % m)
            self._mi[m] = len(self.meters)
            self.meters.append(m)
        if meters:
            k = len(meters)
            for j in range(len(self._vals)):
                if type(self._vals[j]) is not list:     # empty slots: a list again
                    self._vals[j] = list(self._vals[j])
                self._vals[j].extend([None] * k)
                self._dms[j].extend([None] * k)
                self._dks[j].extend(bytes(k))
        n = len(self.meters)
        for o in obis:
            if o in self._oi:
                raise BatchError("bad_value", "register %s twice in the codec state" % o)
            self._oi[o] = len(self.obis)
            self.obis.append(o)
            self._vals.append([None] * n)
            self._dms.append([None] * n)
            self._dks.append(bytearray(n))

    def compact(self) -> None:
        """Value columns that hold a float for every meter become arrays."""
        vals = self._vals
        for j in range(len(vals)):
            col = vals[j]
            if type(col) is list and col:
                for v in col:
                    if not _clean(v):
                        break
                else:
                    vals[j] = array("d", col)

    def entry(self, meter: str, obis: str) -> "tuple[Any, ...] | None":
        """The entry (value, dm, dk) of one cell, or None."""
        i, j = self._mi.get(meter), self._oi.get(obis)
        if i is None or j is None or self._vals[j][i] is None:
            return None
        return (self._vals[j][i], self._dms[j][i], self._dks[j][i])

    def value(self, meter: str, obis: str) -> "Any":
        """The last value of one cell, or None."""
        i, j = self._mi.get(meter), self._oi.get(obis)
        return None if i is None or j is None else self._vals[j][i]

    def entries(self, obis: str, meters: "list[str]") -> "list[Any]":
        """Per meter of ``meters``, its entry for register ``obis`` or None
        (made for one column at a time: the codec's working set)."""
        j = self._oi.get(obis)
        if j is None:
            return [None] * len(meters)
        vals, dms, dks = self._vals[j], self._dms[j], self._dks[j]
        mi = self._mi
        out: "list[Any]" = []
        for m in meters:
            i = mi.get(m)
            if i is None or vals[i] is None:
                out.append(None)
            else:
                out.append((vals[i], dms[i], dks[i]))
        return out

    def advance(self, batch: "Any") -> None:
        """Apply an acknowledged batch (``batch.keyframe`` set by the codec)."""
        if batch.keyframe is None:
            raise BatchError("bad_value", "advance() needs a batch that was encoded or decoded")
        after = batch._after
        fast = after is not None and after[2] is not None and (
            after[0] is None if batch.keyframe else after[0] is self and after[1] is self._token)
        if batch.keyframe:
            self.__init__(batch.device)  # type: ignore[misc]
            self.keyframe_ts = batch.created
        rows = batch.readings
        known = self._mi
        shapes: "dict[Any, Any]" = {}
        if isinstance(rows, Readings):
            ko = self._oi
            self.add_tables([m for m in batch.meters() if m not in known],
                            sorted([o for o in rows.obis if o not in ko]))
            self._advance_columns(rows)
        else:
            readings = batch.canonical()[0]
            ko = self._oi
            self.add_tables([m for m in batch.meters() if m not in known],
                            sorted(set(o for r in readings for o in r[2] if o not in ko)))
            if fast:
                # the entries the decoder computed cell by cell
                self._apply(after[2])
            for m, ts, vals in readings:
                if not fast:
                    self._step_row(known[m], vals)
                self.last_ts[m] = ts
                shape = tuple(sorted(vals))
                self.schema[m] = shapes.setdefault(shape, shape)   # one tuple per shape
        for m, s, e in batch.statuses_in_order():
            self.status[m] = shapes.setdefault((s, e), (s, e))
        self.seq = batch.seq
        self._digest = None
        self._source = None
        self._token = object()
        if COMPACT:
            self.compact()

    def _apply(self, after: "tuple[Any, ...]") -> None:
        meters, cols = after
        slots = [self._mi[m] for m in meters]
        for o, finals in cols:
            j = self._oi[o]
            vals, dms, dks = self._vals[j], self._dms[j], self._dks[j]
            if type(vals) is not list:
                vals = self._vals[j] = list(vals)
            for i, e in zip(slots, finals):  # noqa: B905
                if e is not None:
                    vals[i], dms[i], dks[i] = e

    def _step_row(self, i: int, vals: "dict[str, Any]") -> None:
        """Every non-null value of a row steps its entry (as ``step``)."""
        oi = self._oi
        for o, v in vals.items():
            if v is None:
                continue
            j = oi[o]
            col = self._vals[j]
            prev = col[i]
            if type(col) is not list and not _clean(v):
                col = self._vals[j] = list(col)
            if type(prev) is int and type(v) is int:     # step(), inline
                col[i], self._dms[j][i], self._dks[j][i] = v, v - prev, 0
            else:
                col[i], self._dms[j][i], self._dks[j][i] = step(
                    None if prev is None else (prev, self._dms[j][i], self._dks[j][i]), v)

    def _advance_columns(self, rows: Readings) -> None:
        """``_step_row`` for a ``Readings``, a register at a time, rows in
        (meter, ts) order; then every row's ts and shape."""
        order = rows.order()
        mi = self._mi
        slots = [mi[m] for m in rows.meters]
        shapes = rows.shapes
        for c, o in enumerate(rows.obis):
            j = self._oi[o]
            col, vals, dms, dks = rows.cols[c], self._vals[j], self._dms[j], self._dks[j]
            last, has = None, False
            for r in order:
                sh = shapes[r]
                if sh is not last:
                    last, has = sh, o in sh
                if not has:
                    continue
                v = col[r]
                if v is None:
                    continue
                i = slots[r]
                prev = vals[i]
                if type(vals) is not list and not _clean(v):
                    vals = self._vals[j] = list(vals)
                if type(prev) is int and type(v) is int:
                    vals[i], dms[i], dks[i] = v, v - prev, 0
                else:
                    vals[i], dms[i], dks[i] = step(
                        None if prev is None else (prev, dms[i], dks[i]), v)
        ms, ts = rows.meters, rows.ts
        for r in order:
            self.last_ts[ms[r]] = ts[r]
            self.schema[ms[r]] = shapes[r]

    def digest(self) -> bytes:
        """4 bytes naming this exact state (SHA-256 of ``to_bytes``), hashed
        as it is serialized, piece by piece (a board never holds it whole)."""
        if self._digest is None:
            if self._source is not None:
                h = hashlib.sha256(self._source)
            else:
                from agent.batch_state import write_state
                h = hashlib.sha256()
                write_state(self, h.update)
            self._digest = bytes(h.digest()[:4])
        return self._digest

    def to_bytes(self) -> bytes:
        """Canonical serialization (docs/batch-format.md §5); the HES persists it."""
        if self._source is not None:
            return self._source
        parts: "list[bytes]" = []
        self.write(parts.append)
        return b"".join(parts)

    def write(self, sink: "Any") -> None:
        """Feed ``to_bytes()`` to ``sink(chunk)`` in pieces of a few KB (a board
        writes its state file this way, without holding it whole)."""
        if self._source is not None:
            sink(self._source)
            return
        from agent.batch_state import write_state
        write_state(self, sink)

    @classmethod
    def from_bytes(cls, data: bytes) -> "CodecState":
        from agent.batch_state import state_from_bytes
        st = cls()
        data = bytes(data)
        state_from_bytes(st, data)
        st._source = data
        if COMPACT:
            st.compact()
        return st
