"""The body of a batch, section by section (docs/batch-format.md §3), as the
decoder reads it: meter table, OBIS table, row counts, row shapes,
timestamps, register columns, events, cycle results; and the small
string/OBIS codes both sides use.

Portable (CPython and MicroPython). Owns the order of the sections; value
columns are ``agent.batch_columns``; the encoder's side is
``agent.batch_encode`` (same sections, from a ``Readings``). Reads the state
(never changes it: ``CodecState.advance`` does, after an ack). Must not know
the byte header or the envelope.
"""
# ruff: noqa: B905 (MicroPython's zip() has no strict= argument)

from agent.batch_bits import BatchError, BitReader, BitWriter, read_column
from agent.batch_columns import decode_column
from agent.batch_relations import order, predictor

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true at run time: MicroPython has no typing
    from typing import Any

HOUR = 3600
MAX_METERS = 4096
MAX_OBIS = 1024
MAX_ROWS = 1 << 17
MAX_ITEMS = 1 << 17
MAX_STR = 255


def _text(r: BitReader) -> str:
    return r.raw(r.count(MAX_STR)).decode()


def _put_text(w: BitWriter, s: str) -> None:
    b = s.encode()
    if len(b) > MAX_STR:
        raise BatchError("bad_length", "string longer than %d bytes" % MAX_STR)
    w.count(len(b))
    w.raw(b)


def _is_obis(o: str) -> bool:
    parts = o.split(".")
    return len(parts) == 6 and all(p.isdigit() and str(int(p)) == p and int(p) < 256
                                   for p in parts)


def _put_obis(w: BitWriter, o: str) -> None:
    if _is_obis(o):
        w.bits(1, 1)
        w.raw(bytes(int(p) for p in o.split(".")))
    else:
        w.bits(0, 1)
        _put_text(w, o)


def _obis(r: BitReader) -> str:
    if r.bit():
        return "%d.%d.%d.%d.%d.%d" % tuple(r.raw(6))
    return _text(r)


def _bitmap(w: BitWriter, flags: "list[Any]") -> None:
    for f in flags:
        w.bits(1 if f else 0, 1)


def _group(items: "list[Any]", meters: "list[Any]") -> "dict[Any, Any]":
    out: "dict[Any, Any]" = {}
    for it in items:
        out.setdefault(it[0], []).append(it)
    return out


def _columns(meters: "list[Any]", by_meter: "dict[Any, Any]", table: "list[Any]", st: "object",
             code: "object") -> "tuple[Any, Any] | None":
    """Visit the register columns in coding order (agent.batch_relations.order),
    giving each its cells' rows, state entries and relation predictor;
    ``code(o, rows, entries, rel)`` decodes one column and returns the
    column's entries after it, per meter. Returns (meters, [(obis, entries
    after)]): what ``CodecState.advance`` would compute.

    A relation's sources are read from the rows themselves (their columns are
    coded first: the decoder has filled them in by then) and their previous
    values from earlier rows or the state, so nothing but the current column
    is held while coding. (``agent.batch_encode`` visits the same order.)"""
    per_meter = [by_meter.get(m, []) for m in meters]
    used = set(o for rs in per_meter for r in rs for o in r[2])
    cols = order(table, used)
    single = all(len(rs) == 1 for rs in per_meter)  # the hourly batch: one row per meter
    one: "list[int]" = [0]
    none: "list[Any]" = []                           # (shared, never mutated)
    done: "set[str]" = set()                         # columns coded so far
    after: "list[Any]" = []
    for o, rel in cols:
        if single:
            where = [one if o in rs[0][2] else none for rs in per_meter]
        else:
            where = [[ri for ri, row in enumerate(rs) if o in row[2]] for rs in per_meter]
        pred = None
        if rel is not None:
            pred = predictor(rel, _context(rel[2], meters, per_meter, where, st, done),
                             len(meters))
        if single:
            rows = [rs if ris else none for rs, ris in zip(per_meter, where)]
        else:
            rows = [[rs[ri] for ri in ris] for rs, ris in zip(per_meter, where)]
        finals = code(o, rows, st.entries(o, meters), pred)  # type: ignore[operator,attr-defined]
        if finals is not None:
            after.append((o, finals))
        done.add(o)
    return (meters, after) if after else None


def _context(srcs: "list[str]", meters: "list[Any]", per_meter: "list[Any]",
             where: "list[Any]", st: "object", done: "set[str]") -> "Any":
    """``cells(i)``: per cell of meter i in the target column, per source:
    (value, previous value) or None (no value, or a source not coded yet)."""
    ready = [s in done for s in srcs]

    def cells(mi: int) -> "list[Any]":
        rs = per_meter[mi]
        out = []
        for ri in where[mi]:
            row = rs[ri][2]
            got: "list[Any]" = []
            for s, ok in zip(srcs, ready):
                v = row.get(s) if ok else None
                got.append(None if v is None else (v, _before(rs, ri, s, meters[mi], st)))
            out.append(got)
        return out
    return cells


def _before(rs: "list[Any]", ri: int, s: str, meter: str, st: "object") -> "Any":
    """The last value of ``s`` before row ``ri`` of a meter: an earlier row's,
    else the state's (None if none)."""
    while ri:
        ri -= 1
        v = rs[ri][2].get(s)
        if v is not None:
            return v
    return st.value(meter, s)  # type: ignore[attr-defined]


def read_body(r: BitReader, batch: "object", st: "object") -> "tuple[Any, Any] | None":
    """Fill ``batch`` from the body; returns the state's entries after it
    (``_columns``)."""
    old = st.meters  # type: ignore[attr-defined]
    if old and not r.bit():
        keep = [r.bit() for _ in old]
    else:
        keep = [1] * len(old)
    new = [_text(r) for _ in range(r.count(MAX_METERS))]
    meters = [m for m, k in zip(old, keep) if k] + new
    if len(set(meters)) != len(meters) or len(meters) > MAX_METERS:
        raise BatchError("bad_value", "meter table")
    new_obis = [_obis(r) for _ in range(r.count(MAX_OBIS))]
    table = st.obis + new_obis  # type: ignore[attr-defined]
    if len(set(table)) != len(table):
        raise BatchError("bad_value", "OBIS table")
    counts = [1] * len(meters)
    if meters and not r.bit():
        counts = read_column(r, len(meters))
    if any(c < 0 for c in counts) or sum(counts) > MAX_ROWS:
        raise BatchError("bad_value", "row counts")
    rows: "list[Any]" = []
    after = None
    if sum(counts):
        rows = _read_rows(r, meters, counts, table, st, batch.created)  # type: ignore[attr-defined]
        after = _read_columns(r, meters, rows, table, st)
    # sorted on (key, position): stable on MicroPython too (its sort is not)
    order = [(x[0], x[1], i) for i, x in enumerate(rows)]
    order.sort()
    batch.readings = [rows[i] for _, _, i in order]  # type: ignore[attr-defined]
    batch.events = _read_events(r, meters, batch.created)  # type: ignore[attr-defined]
    batch.statuses = _read_statuses(r, meters, st)  # type: ignore[attr-defined]
    return after


def _read_rows(r: BitReader, meters: "list[Any]", counts: "list[Any]", table: "list[Any]",
               st: "object",
               created: int) -> "list[Any]":
    order = [m for m, c in zip(meters, counts) for _ in range(c)]
    prev = dict(st.schema)  # type: ignore[attr-defined]
    all_same = r.bit()
    shapes = []
    for m in order:
        if all_same or r.bit():
            s = prev.get(m)
            if s is None:
                raise BatchError("bad_value", "row shape refers to an unknown one")
        else:
            s = tuple(sorted(o for o in table if r.bit()))
        shapes.append(s)
        prev[m] = s
    res = read_column(r, len(order))
    last = dict(st.last_ts)  # type: ignore[attr-defined]
    grid = created - created % HOUR
    rows = []
    for m, s, d in zip(order, shapes, res):
        t0 = last.get(m)
        ts = d + (grid if t0 is None else t0 + HOUR)
        last[m] = ts
        rows.append((m, ts, dict.fromkeys(s)))
    return rows


def _read_columns(r: BitReader, meters: "list[Any]", rows: "list[Any]", table: "list[Any]",
                  st: "object") -> "tuple[Any, Any] | None":
    def code(o: str, rs: "list[Any]", entries: "list[Any]",
             pred: "tuple[Any, ...] | None") -> "list[Any]":
        cells, _, finals = decode_column(r, [len(x) for x in rs], entries, pred, False)
        for rows_m, vs in zip(rs, cells):
            for row, v in zip(rows_m, vs):
                row[2][o] = v
        return finals
    return _columns(meters, _group(rows, meters), table, st, code)


def _read_events(r: BitReader, meters: "list[Any]", created: int) -> "list[Any]":
    n = r.count(MAX_ITEMS)
    if not n:
        return []
    idx = read_column(r, n)
    ts = read_column(r, n)
    codes = read_column(r, n)
    if any(i < 0 or i >= len(meters) for i in idx):
        raise BatchError("bad_value", "event meter index")
    return [(meters[i], created + t, c) for i, t, c in zip(idx, ts, codes)]


def _read_statuses(r: BitReader, meters: "list[Any]", st: "object") -> "list[Any]":
    held = st.status  # type: ignore[attr-defined]
    if r.bit():
        if not meters:
            raise BatchError("bad_value", "status shortcut without meters")
        out = []
        for m in meters:
            h = held.get(m)
            if h is None:
                raise BatchError("bad_value", "no acknowledged status for %s" % m)
            out.append((m, h[0], h[1]))
        return out
    strings = [_text(r) for _ in range(r.count(MAX_ITEMS))]
    counts = read_column(r, len(meters))
    if any(c < 0 for c in counts) or sum(counts) > MAX_ITEMS:
        raise BatchError("bad_value", "status counts")
    owners = [m for m, c in zip(meters, counts) for _ in range(c)]
    si = read_column(r, len(owners))
    ei = read_column(r, len(owners))
    if any(s < 0 or s >= len(strings) for s in si) or any(e < 0 or e > len(strings) for e in ei):
        raise BatchError("bad_value", "status string index")
    out = [(m, strings[s], None if e == 0 else strings[e - 1]) for m, s, e in zip(owners, si, ei)]
    order = [(x[0], i) for i, x in enumerate(out)]
    order.sort()                    # stable on MicroPython too, as above
    out = [out[i] for _, i in order]
    return out
