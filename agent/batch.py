"""The batch codec: one hour of a concentrator's readings, events and cycle
results as a few hundred bytes, delta-coded against what the HES acknowledged.

Portable (CPython and MicroPython). Owns ``Batch``, ``CodecState`` and the
format (docs/batch-format.md): a byte header naming the base state, then one
bit stream: meter and OBIS tables as deltas of the state's tables, row shapes,
timestamps against the hourly grid, one column per register (exact decimal
mantissas, residuals against the acknowledged state, Rice or fixed-width
codes; ``agent.batch_columns``), events and cycle results. Must not know the
envelope, the transport or how the HES stores anything.

API (stable):
    Batch(device, seq, created, readings=(), events=(), statuses=())
        readings: (meter, ts, {obis: int | float | None}); events: (meter, ts, code);
        statuses: (meter, status, error | None); ``keyframe`` is set by the codec.
    encode_batch(batch, base, keyframe=False) -> bytes
        base: the CodecState both ends hold (None: a keyframe). A keyframe is also
        sent when the base's last keyframe is a day old.
    decode_batch(data, base) -> Batch        (raises BatchError; ``base_mismatch``
        when the batch is a delta against a state other than ``base``)
    peek_batch(data) -> BatchHeader          (seq, created, keyframe, base_seq, digest,
                                              device: a keyframe's, else None)
    CodecState(device=""): .advance(batch) after the HES acknowledged ``batch``;
        .seq, .digest(), .to_bytes(), CodecState.from_bytes(data), .copy()
"""

import hashlib

from agent.batch_bits import BATCH_REASONS, BatchError, BitReader, BitWriter
from agent.batch_columns import step
from agent.batch_sections import (
    _put_text,
    _text,
    read_body,
    write_body,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true at run time: MicroPython has no typing
    from typing import Any

__all__ = ["BATCH_REASONS", "Batch", "BatchError", "BatchHeader", "CodecState", "decode_batch",
           "encode_batch", "peek_batch"]

FORMAT = 1
DAY = 86400
_NUMBER = (int, float)   # built once: MicroPython builds a literal tuple at every use


# One str object per register code, meter id and status across rows and
# batches (a code parsed per reading would otherwise cost 32 bytes per value
# on MicroPython, a meter id read every hour 32 bytes per meter). Bounded:
# cleared when full.
_KEYS: "dict[str, str]" = {}


def _name(s: object) -> str:
    t = str(s)
    if len(_KEYS) > 4096:
        _KEYS.clear()
    return _KEYS.setdefault(t, t)


def _values(vals: "dict[str, Any]") -> "dict[str, Any]":
    """A row's values (a copy), bools as ints (MicroPython's bool is no int
    subclass), register codes shared through ``_KEYS``."""
    if len(_KEYS) > 4096:
        _KEYS.clear()
    keys = _KEYS
    out = {}
    for k, v in vals.items():
        if v is True or v is False:
            v = int(v)
        out[keys.setdefault(k, k)] = v
    return out


class Batch:
    __slots__ = ("device", "seq", "created", "readings", "events", "statuses", "keyframe",
                 "_after")

    def __init__(self, device: str, seq: int, created: int, readings: "object" = (),
                 events: "object" = (), statuses: "object" = ()) -> None:
        self.device = device
        self.seq = int(seq)
        self.created = int(created)
        self.readings = [(_name(m), int(ts), _values(vals))
                         for m, ts, vals in readings]  # type: ignore[attr-defined]
        self.events = [(_name(m), int(ts), int(c))
                       for m, ts, c in events]  # type: ignore[attr-defined]
        self.statuses = [(_name(m), _name(s), None if e is None else str(e))
                         for m, s, e in statuses]  # type: ignore[attr-defined]
        self.keyframe: "bool | None" = None
        # (base state or None for a keyframe, its token, {(meter, obis): entry
        # after this batch}) as computed by the codec; CodecState.advance uses it
        self._after: "tuple[Any, ...] | None" = None

    def canonical(self) -> "tuple[list[Any], list[Any], list[Any]]":
        """Rows by (meter, ts), events by (meter, ts, code), statuses by meter
        (stable): the order ``decode_batch`` returns. Sorted on (key, position)
        tuples: stable on MicroPython too (its sort is not), and without a key
        function (MicroPython calls it at every comparison: garbage)."""
        rows, sts = self.readings, self.statuses
        order = [(r[0], r[1], i) for i, r in enumerate(rows)]
        order.sort()
        readings = [rows[i] for _, _, i in order]
        by = [(x[0], i) for i, x in enumerate(sts)]
        by.sort()
        return readings, sorted(self.events), [sts[i] for _, i in by]

    def meters(self) -> "list[str]":
        s = set(r[0] for r in self.readings)
        s.update(e[0] for e in self.events)
        s.update(x[0] for x in self.statuses)
        return sorted(s)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Batch):
            return False
        return (self.device, self.seq, self.created) == (other.device, other.seq,
                                                          other.created) \
            and self.canonical() == other.canonical()

    def __repr__(self) -> str:
        return "Batch(%r, seq=%d, created=%d, %d rows, %d events, %d statuses)" % (
            self.device, self.seq, self.created, len(self.readings), len(self.events),
            len(self.statuses))


class BatchHeader:
    __slots__ = ("version", "keyframe", "seq", "created", "base_seq", "digest", "size",
                 "device")

    def __init__(self, keyframe: bool, seq: int, created: int, base_seq: int, digest: bytes,
                 size: int, device: "str | None" = None) -> None:
        self.version = FORMAT
        self.keyframe = keyframe
        self.seq = seq
        self.created = created
        self.base_seq = base_seq
        self.digest = digest
        self.size = size          # bytes of header
        self.device = device      # a keyframe names its device; a delta: None (the base's)

    def __repr__(self) -> str:
        return "BatchHeader(seq=%d, keyframe=%r, base_seq=%d)" % (self.seq, self.keyframe,
                                                                   self.base_seq)


def _varint(n: int) -> bytes:
    if n < 0:
        raise BatchError("bad_value", "negative header field")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _get_varint(data: bytes, pos: int) -> "tuple[int, int]":
    n, shift = 0, 0
    while True:
        if pos >= len(data):
            raise BatchError("truncated", "header ends early")
        if shift > 63:
            raise BatchError("bad_value", "varint too long")
        b = data[pos]
        n |= (b & 0x7F) << shift
        pos += 1
        shift += 7
        if not b & 0x80:
            return n, pos


def peek_batch(data: bytes) -> BatchHeader:
    """Read the byte header: version, keyframe flag, seq, created, base."""
    if len(data) < 2:
        raise BatchError("truncated", "no header")
    if data[0] != FORMAT:
        raise BatchError("bad_version", "format %d" % data[0], version=data[0])
    if data[1] & 0xFE:
        raise BatchError("bad_value", "unknown flags 0x%02x" % data[1])
    keyframe = bool(data[1] & 1)
    seq, pos = _get_varint(data, 2)
    created, pos = _get_varint(data, pos)
    base_seq, digest = -1, b""
    if not keyframe:
        base_seq, pos = _get_varint(data, pos)
        if pos + 4 > len(data):
            raise BatchError("truncated", "no base digest")
        digest = bytes(data[pos:pos + 4])
        pos += 4
        return BatchHeader(keyframe, seq, created, base_seq, digest, pos)
    try:
        device = _text(BitReader(data, pos))
    except UnicodeError:
        raise BatchError("bad_value", "device name") from None
    return BatchHeader(keyframe, seq, created, base_seq, digest, pos, device)


class CodecState:
    """What the HES acknowledged, identical at both ends: the meter and OBIS
    tables, per meter the last row's ts and OBIS set and the last cycle result,
    per (meter, OBIS) the last value and step. Both ends call ``advance`` with
    each acknowledged batch, in order.

    The entries (value, dm, dk) are held as three columns per register, one
    slot per meter (value None: no entry), not as a dict of tuples: a board
    holds this state all the time (64 meters x 27 registers: ~25 KB instead of
    ~180 KB on MicroPython). ``entry(meter, obis)`` reads one."""

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
        self._vals: "list[list[Any]]" = []       # per column: last value per meter
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

    def advance(self, batch: Batch) -> None:
        """Apply an acknowledged batch (``batch.keyframe`` set by the codec)."""
        if batch.keyframe is None:
            raise BatchError("bad_value", "advance() needs a batch that was encoded or decoded")
        after = batch._after
        fast = after is not None and after[2] is not None and (
            after[0] is None if batch.keyframe else after[0] is self and after[1] is self._token)
        if batch.keyframe:
            self.__init__(batch.device)  # type: ignore[misc]
            self.keyframe_ts = batch.created
        readings, _, statuses = batch.canonical()
        known = self._mi
        ko = self._oi
        self.add_tables([m for m in batch.meters() if m not in known],
                        sorted(set(o for r in readings for o in r[2] if o not in ko)))
        if fast:
            # the entries the decoder computed cell by cell
            self._apply(after[2])  # type: ignore[index]
        shapes: "dict[Any, Any]" = {}
        for m, ts, vals in readings:
            if not fast:
                self._step_row(known[m], vals)
            self.last_ts[m] = ts
            shape = tuple(sorted(vals))
            self.schema[m] = shapes.setdefault(shape, shape)   # one tuple per shape
        for m, s, e in statuses:
            self.status[m] = shapes.setdefault((s, e), (s, e))
        self.seq = batch.seq
        self._digest = None
        self._source = None
        self._token = object()

    def _apply(self, after: "tuple[Any, ...]") -> None:
        meters, cols = after
        slots = [self._mi[m] for m in meters]
        for o, finals in cols:
            j = self._oi[o]
            vals, dms, dks = self._vals[j], self._dms[j], self._dks[j]
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
            if type(prev) is int and type(v) is int:     # step(), inline
                col[i], self._dms[j][i], self._dks[j][i] = v, v - prev, 0
            else:
                col[i], self._dms[j][i], self._dks[j][i] = step(
                    None if prev is None else (prev, self._dms[j][i], self._dks[j][i]), v)

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
        return st


def encode_batch(batch: Batch, base: "CodecState | None", keyframe: bool = False) -> bytes:
    """Encode ``batch`` as a delta against ``base`` (not modified), or as a
    keyframe when ``keyframe``, ``base`` is None, has never seen a keyframe, is
    another device's, or its keyframe is a day older than ``batch.created``.
    Sets ``batch.keyframe``."""
    if batch.seq < 0 or batch.created < 0:
        raise BatchError("bad_value", "seq and created must be >= 0")
    kf = keyframe or base is None or base.keyframe_ts < 0 \
        or batch.created - base.keyframe_ts >= DAY or base.device != batch.device
    st = CodecState(batch.device) if kf or base is None else base
    head = bytes((FORMAT, 1 if kf else 0)) + _varint(batch.seq) + _varint(batch.created)
    if not kf:
        head += _varint(st.seq) + st.digest()
    w = BitWriter()
    if kf:
        _put_text(w, batch.device)
    for _, _, vals in batch.readings:
        for v in vals.values():
            if v is not None and not isinstance(v, _NUMBER):
                raise BatchError("bad_value", "values must be int, float or None, not %s"
                                 % type(v).__name__)
    write_body(w, batch, st)
    batch.keyframe = kf
    # no entries kept for advance(): it steps the values itself (a board
    # advances right after sealing and has no room for a second state)
    batch._after = None
    return head + w.getvalue()


def decode_batch(data: bytes, base: "CodecState | None") -> Batch:
    """Decode a batch; ``base`` is the receiver's CodecState (None when it has
    none: only keyframes decode then). Any input gives a Batch or BatchError."""
    data = bytes(data)
    h = peek_batch(data)
    if not h.keyframe:
        if base is None or base.seq != h.base_seq or base.digest() != h.digest:
            raise BatchError("base_mismatch", "delta against a state not held here",
                             seq=h.seq, base_seq=h.base_seq,
                             held_seq=-1 if base is None else base.seq)
    r = BitReader(data, h.size)
    try:
        device = _text(r) if h.keyframe else base.device  # type: ignore[union-attr]
        st = CodecState(device) if h.keyframe else base
        batch = Batch(device, h.seq, h.created)
        after = read_body(r, batch, st)
    except BatchError:
        raise
    except (IndexError, ValueError, KeyError, UnicodeError, OverflowError, TypeError):
        raise BatchError("bad_value", "malformed body", seq=h.seq) from None
    if r.remaining() >= 8 or r.bits(r.remaining()):
        raise BatchError("bad_length", "bytes after the batch", seq=h.seq)
    batch.keyframe = h.keyframe
    batch._after = (None, None, after) if h.keyframe else (
        st, st._token, after)  # type: ignore[union-attr]
    return batch

