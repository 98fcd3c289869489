"""Value columns of the batch codec: exact decimal mantissas, residuals against
the acknowledged state, and the per-column choice of predictor.

Portable (CPython and MicroPython). Owns a column's type and exponent, the
mantissas, predictors and raw values of one register's cells (all its values
in one batch, meter by meter, row by row), reading them back from bits, and
the per-(meter, register) state step that encoder, decoder and
``CodecState.advance`` share so both ends predict identically (the encoder's
column writer is ``agent.batch_encode``). Must not know the batch header,
meters' identities or the envelope.

A cell entry (what the state remembers per meter and register) is a tuple
``(value, dm, dk)``: the last non-null value and the last step between two
consecutive values as an integer mantissa ``dm`` at decimal exponent ``dk``
(``None`` when unknown).
"""
# ruff: noqa: B905 (MicroPython's zip() has no strict= argument)

import struct
import sys

from agent.batch_bits import (
    BatchError,
    BitReader,
    BitWriter,
    read_column,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true at run time: MicroPython has no typing
    from typing import Any

T_INT = 0       # every value an int: mantissa = value
T_DEC = 1       # every value a float equal to m / 10**k for one k in 0..15
T_RAW = 2       # anything else: per value 1 bit type, then an int or a binary64
MAX_EXP = 15
P_ABS, P_DELTA, P_DOD = 0, 1, 2
POW10 = [10 ** i for i in range(MAX_EXP + 1)]
EXACT = 1 << 53


def _negzero(v: float) -> bool:
    return v == 0 and struct.pack(">d", v)[0] & 0x80 != 0


_memo: "dict[float, tuple[int, int]]" = {}
# The memo serves the HES, which decodes thousands of batches whose floats
# repeat; a board codes one batch an hour and has no heap for it (up to
# 8192 floats: ~200 KB on MicroPython). Per float: its exponent and its
# mantissa there, so that ``mantissa`` and ``step`` are a look-up or two.
MEMO_MAX = 0 if sys.implementation.name == "micropython" else 8192


def _scaled(v: float) -> "tuple[int, int]":
    """(exponent(v), round(v * 10**exponent(v))) of a float, remembered
    (CPython only; -0.0, 0.0 and nan never are: 0.0 == -0.0 as keys)."""
    got = _memo.get(v)
    if got is None:
        e = _exponent(v)
        got = (e, round(v * POW10[e]) if e >= 0 else 0)
        if v == v and not (v == 0):
            if len(_memo) > MEMO_MAX:
                _memo.clear()
            _memo[v] = got
    return got


def exponent(v: "int | float") -> int:
    """Smallest k with ``m / 10**k == v`` exactly (k = 0 and type int for ints);
    -1 when no k <= 15 works (nan, inf, -0.0, 0.1 + 0.2, huge floats)."""
    if isinstance(v, int):
        return 0
    if MEMO_MAX and type(v) is float:
        return _scaled(v)[0]
    return _exponent(v)


def _exponent(v: float) -> int:
    if not -EXACT < v < EXACT or _negzero(v):       # also nan and inf
        return -1
    for k in range(MAX_EXP + 1):
        m = round(v * POW10[k])
        if -EXACT < m < EXACT and m / POW10[k] == v:
            return k
    return -1


def mantissa(v: "int | float", k: int, t: int) -> "int | None":
    """Integer mantissa of ``v`` at exponent ``k`` in a column of type ``t``,
    or None when ``v`` cannot serve there (used for predictions only)."""
    if t == T_INT:
        return v if isinstance(v, int) else None
    if isinstance(v, int):
        # an int prediction in a decimal column
        return v * POW10[k] if -EXACT < v * POW10[k] < EXACT else None
    if MEMO_MAX and type(v) is float:              # the same, remembered
        e, me = _scaled(v)
        return None if e < 0 or e > k else me * POW10[k - e]
    e = exponent(v)
    if e < 0 or e > k:
        return None
    m: int = round(v * POW10[e]) * POW10[k - e]
    return m


def step(entry: "tuple[Any, ...] | None", v: "int | float") -> "tuple[Any, ...]":
    """The state entry after value ``v`` follows ``entry``."""
    if entry is None:
        return (v, None, 0)
    prev = entry[0]
    if type(prev) is int and type(v) is int:   # the common case, same result as below
        return (v, v - prev, 0)
    if MEMO_MAX and type(prev) is float and type(v) is float:   # as below, remembered
        ep, mp = _scaled(prev)
        ev, mv = _scaled(v)
        if ep < 0 or ev < 0:
            return (v, None, 0)
        k = ep if ep > ev else ev
        return (v, mv * POW10[k - ev] - mp * POW10[k - ep], k)
    ep, ev = exponent(prev), exponent(v)
    if ep < 0 or ev < 0:
        return (v, None, 0)
    k = ep if ep > ev else ev
    t = T_INT if isinstance(prev, int) and isinstance(v, int) else T_DEC
    a, b = mantissa(prev, k, t), mantissa(v, k, t)
    if a is None or b is None:
        return (v, None, 0)
    return (v, b - a, k)


def _prev_step(entry: "tuple[Any, ...]", k: int) -> int:
    dm, dk = entry[1], entry[2]
    if dm is None or dk > k:
        return 0
    s: int = dm * POW10[k - dk]
    return s


def column_type(values: "list[Any]") -> "tuple[int, int]":
    """-> (type, k) for the non-null values of a column."""
    if all(isinstance(v, int) for v in values):
        return T_INT, 0
    if any(isinstance(v, int) for v in values):
        return T_RAW, 0
    k = 0
    for v in values:
        e = exponent(v)
        if e < 0:
            return T_RAW, 0
        if e > k:
            k = e
    for v in values:     # decoding must give back exactly v
        m = mantissa(v, k, T_DEC)
        if m is None or not -EXACT < m < EXACT or m / POW10[k] != v:
            return T_RAW, 0
    return T_DEC, k


def _write_raw(w: BitWriter, v: "int | float") -> None:
    if isinstance(v, int):
        w.bits(0, 1)
        w.count(2 * v if v >= 0 else -2 * v - 1)
    else:
        w.bits(1, 1)
        w.raw(struct.pack(">d", v))


def _read_raw(r: BitReader) -> "int | float":
    if r.bit():
        return float(struct.unpack(">d", r.raw(8))[0])
    z = r.count(1 << 4000)
    return z >> 1 if not z & 1 else -((z + 1) >> 1)


P_REL = 3           # a relation to other registers of the row (agent.batch_relations)


def _cell_kind(kind: str, pr: "Any") -> str:
    """A cell's prediction is an int of the relation's kind or (kind, int)."""
    return str(pr[0]) if isinstance(pr, tuple) else kind


def _rel_pred(kind: str, pr: "Any", a: "int | None") -> "int | None":
    if pr is None:
        return None
    if isinstance(pr, tuple):
        kind, pr = pr
    if kind == "step" and a is None:
        return None
    v: int = a + pr if kind == "step" else pr
    return v


def _walk(cells: "list[Any]", entries: "list[Any]") -> "tuple[list[Any], list[Any]]":
    """Per meter, the previous value of each cell, and its state entry after
    its last cell (what ``CodecState.advance`` computes)."""
    out, finals = [], []
    for vs, entry in zip(cells, entries):
        ps = []
        for v in vs:
            ps.append(None if entry is None else entry[0])
            if v is not None:
                entry = step(entry, v)
        out.append(ps)
        finals.append(entry)
    return out, finals


def decode_column(r: BitReader, shape: "list[int]", entries: "list[Any]",
                  rel: "tuple[Any, ...] | None" = None, prevs: bool = True
                  ) -> "tuple[list[Any], Any, list[Any]]":
    """One register's cells as ``agent.batch_encode`` wrote them: ``shape`` is
    the number of cells per meter.
    Returns (cells, previous values per cell — None unless ``prevs`` —, state
    entries after them)."""
    t = r.bits(2)
    if t > T_RAW:
        raise BatchError("bad_value", "column type %d" % t)
    k = r.bits(4) if t == T_DEC else 0
    if k > MAX_EXP:
        raise BatchError("bad_value", "decimal exponent %d" % k)
    total = sum(shape)
    nulls = [r.bit() for _ in range(total)] if r.bit() else [0] * total
    if t == T_RAW:
        vals = [None if n else _read_raw(r) for n in nulls]
        cells = _split(vals, shape)
        return (cells,) + _walk(cells, entries)
    if not total or all(nulls):
        cells = _split([None] * total, shape)
        return (cells,) + _walk(cells, entries)
    p = r.bits(2)
    kind, preds = "", None
    if p == P_REL:
        if rel is None:
            raise BatchError("bad_value", "relation mode without a relation")
        kind, preds = rel[0], rel[1](t, k)
        if preds is None:
            raise BatchError("bad_value", "relation mode without a relation")
    # Which cells are fresh follows from the state, the null map and the
    # relation's availability, so both streams are read before any value.
    # ``first``: per meter, its state value's mantissa at this column's scale.
    if t == T_INT:      # mantissa() for ints, inline
        first = [e[0] if e is not None and isinstance(e[0], int) else None for e in entries]
    else:
        first = [None if e is None else mantissa(e[0], k, t) for e in entries]
    n_fresh = 0
    pos = 0
    for mi, count in enumerate(shape):
        usable = first[mi] is not None
        if count == 1 and preds is None:        # the common case, as below
            if not usable and not nulls[pos]:
                n_fresh += 1
            pos += 1
            continue
        for ci in range(count):
            if not nulls[pos]:
                if not usable and not (preds is not None and preds[mi][ci] is not None
                                       and _cell_kind(kind, preds[mi][ci]) != "step"):
                    n_fresh += 1
                usable = True
            pos += 1
    n_known = total - sum(1 for n in nulls if n) - n_fresh
    fresh = read_column(r, n_fresh)
    known = read_column(r, n_known)
    if t == T_INT and preds is None and not prevs and shape.count(1) == len(shape):
        return _rebuild_ints(entries, first, nulls, fresh, known, p)
    return _rebuild(shape, entries, first, nulls, fresh, known, p, t, k, kind, preds, prevs)


def _rebuild_ints(entries: "list[Any]", first: "list[Any]", nulls: "list[Any]",
                  fresh: "list[Any]", known: "list[Any]", p: int
                  ) -> "tuple[list[Any], Any, list[Any]]":
    """``_rebuild`` for the hourly batch's usual column, step for step: ints,
    one cell per meter, no relation, no previous values wanted."""
    cells: "list[Any]" = []
    finals: "list[Any]" = []
    fi, ki = 0, 0
    for entry, a, null in zip(entries, first, nulls):
        if null:
            cells.append([None])
            finals.append(entry)
            continue
        if a is None:
            m = fresh[fi]
            fi += 1
        else:
            rr = known[ki]
            ki += 1
            m = rr if p == P_ABS else rr + a if p != P_DOD else rr + a + _prev_step(entry, 0)
        cells.append([m])
        prev = None if entry is None else entry[0]
        finals.append((m, m - prev, 0) if type(prev) is int else step(entry, m))
    return cells, None, finals


def _rebuild(shape: "list[Any]", entries: "list[Any]", first: "list[Any]", nulls: "list[Any]",
             fresh: "list[Any]", known: "list[Any]", p: int, t: int, k: int, kind: str,
             preds: "list[Any] | None", want: bool = True) -> "tuple[list[Any], Any, list[Any]]":
    """The cells from their residuals, with their previous values (when
    ``want``) and the entries after them (as ``_walk``), in one pass. The hot loop of decoding
    at the HES: the state value's mantissa comes from ``first``, ``step`` is
    inlined for ints."""
    cells, prevs, finals = [], [], []
    pos, fi, ki = 0, 0, 0
    is_int = t == T_INT
    scale = POW10[k]
    for mi, (count, entry) in enumerate(zip(shape, entries)):
        vs: "list[Any]" = []
        ps: "list[Any]" = []
        a = first[mi]
        for ci in range(count):
            prev = None if entry is None else entry[0]
            if want:
                ps.append(prev)
            if nulls[pos]:
                vs.append(None)
                pos += 1
                continue
            pos += 1
            if ci:
                a = None if entry is None else mantissa(entry[0], k, t)
            pr = _rel_pred(kind, preds[mi][ci], a) if preds is not None else None
            if pr is not None:
                m = known[ki] + pr
                ki += 1
            elif a is None:
                m = fresh[fi]
                fi += 1
            else:
                rr = known[ki]
                ki += 1
                m = rr if p == P_ABS else rr + a if p != P_DOD else rr + a + _prev_step(entry, k)
            if is_int:
                vs.append(m)
                entry = (m, m - prev, 0) if type(prev) is int else step(entry, m)
            else:
                if not -EXACT < m < EXACT:
                    raise BatchError("bad_value", "mantissa out of range")
                v = m / scale
                vs.append(v)
                entry = step(entry, v)
        cells.append(vs)
        if want:
            prevs.append(ps)
        finals.append(entry)
    return cells, prevs if want else None, finals


def _split(vals: "list[Any]", shape: "list[int]") -> "list[Any]":
    cells, i = [], 0
    for n in shape:
        cells.append(vals[i:i + n])
        i += n
    return cells
