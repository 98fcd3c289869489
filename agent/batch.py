"""The batch codec: one hour of a concentrator's readings, events and cycle
results as a few hundred bytes, delta-coded against what the HES acknowledged.

Portable (CPython and MicroPython). Owns ``Batch`` and the format
(docs/batch-format.md): a byte header naming the base state, then one bit
stream: meter and OBIS tables as deltas of the state's tables, row shapes,
timestamps against the hourly grid, one column per register (exact decimal
mantissas, residuals against the acknowledged state, Rice or fixed-width
codes; ``agent.batch_columns``), events and cycle results. The body's writer
is ``agent.batch_encode``, its reader ``agent.batch_sections``;
``CodecState`` lives in ``agent.batch_codecstate``. Must not know the
envelope, the transport or how the HES stores anything.

API (stable):
    Batch(device, seq, created, readings=(), events=(), statuses=())
        readings: (meter, ts, {obis: int | float | None}) rows (copied), or a
        ``Readings`` (kept: the same rows column by column, ``rows.add(meter,
        ts, values)``; what a board builds); events: (meter, ts, code);
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

from agent.batch_bits import BATCH_REASONS, BatchError, BitReader, BitWriter
from agent.batch_codecstate import CodecState
from agent.batch_encode import write_body
from agent.batch_readings import Readings, name, values
from agent.batch_sections import _put_text, _text, read_body

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true at run time: MicroPython has no typing
    from typing import Any

__all__ = ["BATCH_REASONS", "Batch", "BatchError", "BatchHeader", "CodecState", "Readings",
           "decode_batch", "encode_batch", "peek_batch"]

FORMAT = 1
DAY = 86400
_NUMBER = (int, float)   # built once: MicroPython builds a literal tuple at every use


class Batch:
    __slots__ = ("device", "seq", "created", "readings", "events", "statuses", "keyframe",
                 "_after")

    def __init__(self, device: str, seq: int, created: int, readings: "object" = (),
                 events: "object" = (), statuses: "object" = ()) -> None:
        self.device = device
        self.seq = int(seq)
        self.created = int(created)
        # a Readings is kept as it is (a board's hour, column by column);
        # other rows are copied as (meter, ts, {obis: value})
        self.readings: "Any" = readings if isinstance(readings, Readings) else [
            (name(m), int(ts), values(vals)) for m, ts, vals in readings]  # type: ignore[attr-defined]
        self.events = [(name(m), int(ts), int(c))
                       for m, ts, c in events]  # type: ignore[attr-defined]
        self.statuses = [(name(m), name(s), None if e is None else str(e))
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
        rows = self.readings
        if isinstance(rows, Readings):
            readings = [rows[i] for i in rows.order()]
        else:
            order = [(r[0], r[1], i) for i, r in enumerate(rows)]
            order.sort()
            readings = [rows[i] for _, _, i in order]
        return readings, sorted(self.events), self.statuses_in_order()

    def statuses_in_order(self) -> "list[Any]":
        """The statuses by meter, stable (as ``canonical``)."""
        sts = self.statuses
        by = [(x[0], i) for i, x in enumerate(sts)]
        by.sort()
        return [sts[i] for _, i in by]

    def meters(self) -> "list[str]":
        rows = self.readings
        s = set(rows.meters if isinstance(rows, Readings) else [r[0] for r in rows])
        s.update([e[0] for e in self.events])
        s.update([x[0] for x in self.statuses])
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
    rows = batch.readings
    if not isinstance(rows, Readings):
        rows = Readings.of(rows)        # the encoder works on columns
    for col in rows.cols:
        if type(col) is list:           # (an array holds floats only)
            for v in col:
                if v is not None and not isinstance(v, _NUMBER):
                    raise BatchError("bad_value", "values must be int, float or None, not %s"
                                     % type(v).__name__)
    write_body(w, batch, st, rows)
    del rows
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

