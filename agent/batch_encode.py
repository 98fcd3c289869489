"""The encoder's side of a batch body (docs/batch-format.md §3-4), written
from a ``Readings`` (agent.batch_readings) column by column against the
state's own columns.

Portable (CPython and MicroPython). A board runs this once an hour with the
codec state and the hour's readings already filling most of its heap, so it
copies neither: no row dicts, no state entries built for a whole column, no
list per meter; what it holds is a few lists as long as the batch has rows,
one register at a time. Reads the state, never changes it. The decoder is
``agent.batch_sections`` and ``agent.batch_columns``; the two agree bit for
bit (tests/test_batch_golden.py pins the bytes). Must not know the byte
header or the envelope.
"""
# ruff: noqa: B905 (MicroPython's zip() has no strict= argument)

from agent.batch_bits import column_cost, write_column
from agent.batch_columns import (
    T_DEC,
    T_RAW,
    _prev_step,
    _rel_pred,
    _write_raw,
    column_type,
    mantissa,
    step,
)
from agent.batch_relations import _one, order
from agent.batch_sections import (
    HOUR,
    _bitmap,
    _group,
    _put_obis,
    _put_text,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true at run time: MicroPython has no typing
    from typing import Any

    from agent.batch_bits import BitWriter
    from agent.batch_codecstate import CodecState
    from agent.batch_readings import Readings


def write_body(w: "BitWriter", batch: "Any", st: "CodecState", rows: "Readings") -> None:
    """Write the body of ``batch`` (its readings: ``rows``) against ``st``."""
    # 1. meters: the state's table (presence), then new ones, sorted.
    present = set(rows.meters)
    present.update([e[0] for e in batch.events])
    present.update([x[0] for x in batch.statuses])
    old, known = st.meters, st._mi
    if old:
        flags = [m in present for m in old]
        w.bits(1 if all(flags) else 0, 1)
        if not all(flags):
            _bitmap(w, flags)
        del flags
    new = sorted([m for m in present if m not in known])
    w.count(len(new))
    for m in new:
        _put_text(w, m)
    meters = [m for m in old if m in present] + new
    del present, new
    # 2. OBIS codes new to the state's table, sorted.
    new_obis = sorted([o for o in rows.obis if o not in st._oi])
    w.count(len(new_obis))
    for o in new_obis:
        _put_obis(w, o)
    table = st.obis + new_obis
    # the rows, meter by meter in table order, each meter's in (ts, position) order
    grouped, starts, counts = _by_meter(rows, meters)
    # 3. rows per meter.
    if meters:
        one = all(c == 1 for c in counts)
        w.bits(1 if one else 0, 1)
        if not one:
            write_column(w, counts)
    if grouped:
        _write_rows(w, rows, grouped, table, st, batch.created)
        _Columns(rows, grouped, starts, counts, meters, st).write(w, table)
    del grouped, starts, counts
    _write_events(w, sorted(batch.events), meters, batch.created)
    _write_statuses(w, batch.statuses_in_order(), meters, st)


def _by_meter(rows: "Readings", meters: "list[str]") -> "tuple[list[int], list[int], list[int]]":
    """-> (row indices meter by meter, where each meter's start, how many)."""
    pos = dict((m, i) for i, m in enumerate(meters))
    ms = rows.meters
    canon = rows.order()
    counts = [0] * len(meters)
    for r in canon:
        counts[pos[ms[r]]] += 1
    starts, s = [], 0
    for c in counts:
        starts.append(s)
        s += c
    fill = list(starts)
    grouped = [0] * len(canon)
    for r in canon:
        mi = pos[ms[r]]
        grouped[fill[mi]] = r
        fill[mi] += 1
    return grouped, starts, counts


def _write_rows(w: "BitWriter", rows: "Readings", grouped: "list[int]", table: "list[str]",
                st: "CodecState", created: int) -> None:
    # 4. row shapes: the set of OBIS codes of each row. (A meter's rows are
    # adjacent: the row before is the meter's own or none.)
    held = st.schema
    ms, shapes = rows.meters, rows.shapes
    same = bytearray(len(grouped))
    pm, ps = None, None
    for q, r in enumerate(grouped):
        m, sh = ms[r], shapes[r]
        old = ps if m == pm else held.get(m)
        eq = old is sh or (old is not None and old == sh)
        same[q] = 1 if eq else 0
        pm, ps = m, (old if eq else sh)
    w.bits(1 if all(same) else 0, 1)
    if not all(same):
        for q, r in enumerate(grouped):
            w.bits(same[q], 1)
            if not same[q]:
                sh = shapes[r]
                _bitmap(w, [o in sh for o in table])
    del same
    # 5. timestamps against the hourly grid.
    last = st.last_ts
    grid = created - created % HOUR
    res = []
    pm, pt = None, None
    for r in grouped:
        m, ts = ms[r], rows.ts[r]
        t0 = pt if m == pm else last.get(m)
        res.append(ts - (grid if t0 is None else t0 + HOUR))
        pm, pt = m, ts
    write_column(w, res)


def _write_events(w: "BitWriter", events: "list[Any]", meters: "list[Any]", created: int) -> None:
    # 7. events: meter index, ts - created, code.
    w.count(len(events))
    if events:
        idx = dict((m, i) for i, m in enumerate(meters))
        write_column(w, [idx[e[0]] for e in events])
        write_column(w, [e[1] - created for e in events])
        write_column(w, [e[2] for e in events])


def _write_statuses(w: "BitWriter", statuses: "list[Any]", meters: "list[Any]", st: "object") -> None:
    # 8. cycle results: one bit when every meter repeats its acknowledged one.
    # (Their meters are among ``meters`` and sorted: one each when the counts
    # match and no two neighbours share a meter.)
    held = st.status  # type: ignore[attr-defined]
    fast = bool(meters) and len(statuses) == len(meters)
    pm = None
    for m, s, e in statuses if fast else ():
        h = held.get(m)
        if m == pm or h is None or h[0] != s or h[1] != e:
            fast = False
            break
        pm = m
    w.bits(1 if fast else 0, 1)
    if fast:
        return
    by = _group(statuses, meters)
    strings = sorted(set([s[1] for s in statuses] + [s[2] for s in statuses if s[2] is not None]))
    w.count(len(strings))
    for s in strings:
        _put_text(w, s)
    si = dict((s, i) for i, s in enumerate(strings))
    write_column(w, [len(by.get(m, [])) for m in meters])
    entries = [e for m in meters for e in by.get(m, [])]
    write_column(w, [si[e[1]] for e in entries])
    write_column(w, [0 if e[2] is None else si[e[2]] + 1 for e in entries])


class _Columns:
    """6. One column per register used in the batch, in coding order
    (agent.batch_relations.order): its cells meter by meter, residuals
    against the state's entries, the cheapest predictor."""

    def __init__(self, rows: "Readings", grouped: "list[int]", starts: "list[int]",
                 counts: "list[int]", meters: "list[str]", st: "CodecState") -> None:
        self.rows, self.grouped, self.starts, self.counts = rows, grouped, starts, counts
        self.meters, self.st = meters, st
        self.slots = [st._mi.get(m) for m in meters]    # None: a meter new to the state
        self.done: "set[str]" = set()                    # columns coded so far

    def write(self, w: "BitWriter", table: "list[str]") -> None:
        for o, rel in order(table, set(self.rows.obis)):
            self.code(w, o, rel)
            self.done.add(o)

    def cells(self, o: str) -> "tuple[list[Any], list[int]]":
        """-> (values of the rows that have ``o``, meter by meter; per meter
        how many)."""
        rows, grouped, starts = self.rows, self.grouped, self.starts
        col, shapes = rows.column(o), rows.shapes
        cells, cnt = [], []
        last, has = None, False
        for mi, n in enumerate(self.counts):
            k = 0
            for q in range(starts[mi], starts[mi] + n):
                r = grouped[q]
                if shapes[r] is not last:
                    last = shapes[r]
                    has = o in last
                if has:
                    cells.append(col[r])
                    k += 1
            cnt.append(k)
        return cells, cnt

    def code(self, w: "BitWriter", o: str, rel: "tuple[Any, ...] | None") -> None:
        """As ``agent.batch_columns.encode_column``, from this batch's cells."""
        cells, cnt = self.cells(o)
        present = [v for v in cells if v is not None]
        t, k = column_type(present)
        w.bits(t, 2)
        if t == T_DEC:
            w.bits(k, 4)
        if len(present) < len(cells):
            w.bits(1, 1)
            for v in cells:
                w.bits(1 if v is None else 0, 1)
        else:
            w.bits(0, 1)
        if t == T_RAW:
            for v in present:
                _write_raw(w, v)
            return
        if not present:
            return
        del present
        kind, preds = (rel[0], self.preds(o, rel, t, k)) if rel is not None else ("", None)
        modes = self.modes(o, cells, cnt, t, k, kind, preds)
        del cells, cnt, preds
        fresh = column_cost(modes[0][0])
        best, cost = 0, -1
        for p, mode in enumerate(modes):
            if mode is not None:
                c = (fresh if p < 3 else column_cost(mode[0])) + column_cost(mode[1])
                if cost < 0 or c < cost:
                    best, cost = p, c
        w.bits(best, 2)
        write_column(w, modes[best][0])
        write_column(w, modes[best][1])

    def modes(self, o: str, cells: "list[Any]", cnt: "list[int]", t: int, k: int, kind: str,
              preds: "list[Any] | None") -> "list[Any]":
        """Per predictor mode, (fresh mantissas, residuals); modes 0-2 share
        their fresh list (the same cells are fresh in each). As
        ``agent.batch_columns._modes``."""
        st = self.st
        j = st._oi.get(o)
        vals, dms, dks = (None, None, None) if j is None else (st._vals[j], st._dms[j],
                                                               st._dks[j])
        fresh: "list[int]" = []
        k0: "list[int]" = []
        k1: "list[int]" = []
        k2: "list[int]" = []
        rel: "Any" = None if preds is None else ([], [])
        q = 0
        for mi, n in enumerate(cnt):
            if not n:
                continue
            i = self.slots[mi]
            entry: "Any" = None
            if vals is not None and i is not None and vals[i] is not None:
                entry = (vals[i], dms[i], dks[i])  # type: ignore[index]
            for _ in range(n):
                v = cells[q]
                q += 1
                if v is None:
                    continue
                m: "Any" = mantissa(v, k, t)     # never None: v decides the column's type
                a = mantissa(entry[0], k, t) if entry is not None else None
                if a is None:
                    fresh.append(m)
                else:
                    k0.append(m)
                    k1.append(m - a)
                    k2.append(m - a - _prev_step(entry, k))
                if rel is not None:
                    pr = _rel_pred(kind, preds[q - 1], a)  # type: ignore[index]
                    if pr is not None:
                        rel[1].append(m - pr)
                    elif a is not None:
                        rel[1].append(m - a)
                    else:
                        rel[0].append(m)
                entry = step(entry, v)
        return [(fresh, k0), (fresh, k1), (fresh, k2), rel]

    def preds(self, o: str, rel: "tuple[Any, ...]", t: int, k: int) -> "list[Any]":
        """Per cell of column ``o``, the relation's prediction (as
        ``agent.batch_relations.predictor``): sources read from the same row
        (coded already: the decoder has them by then), their previous values
        from the meter's earlier rows or the state."""
        _, name, srcs = rel
        rows, grouped, starts = self.rows, self.grouped, self.starts
        shapes = rows.shapes
        scols = [rows.column(s) if s in self.done else None for s in srcs]
        out = []
        for mi, n in enumerate(self.counts):
            for q in range(starts[mi], starts[mi] + n):
                r = grouped[q]
                sh = shapes[r]
                if o not in sh:
                    continue
                got: "list[Any]" = []
                for s, sc in zip(srcs, scols):
                    v = sc[r] if sc is not None and s in sh else None
                    got.append(None if v is None else (v, self.before(mi, q, s)))
                out.append(_one(name, srcs, got, t, k))
        return out

    def before(self, mi: int, q: int, s: str) -> "Any":
        """The last value of ``s`` before grouped row ``q`` of meter ``mi``:
        an earlier row's, else the state's (None if none)."""
        rows, shapes, lo = self.rows, self.rows.shapes, self.starts[mi]
        while q > lo:
            q -= 1
            r = self.grouped[q]
            if s in shapes[r]:
                v = rows.column(s)[r]
                if v is not None:
                    return v
        return self.st.value(self.meters[mi], s)

