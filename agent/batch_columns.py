"""Value columns of the batch codec: exact decimal mantissas, residuals against
the acknowledged state, and the per-column choice of predictor.

Portable (CPython and MicroPython). Owns how one register's cells (all its
values in one batch, meter by meter, row by row) become bits and back, and the
per-(meter, register) state step that encoder, decoder and
``CodecState.advance`` share so both ends predict identically. Must not know
the batch header, meters' identities or the envelope.

A cell entry (what the state remembers per meter and register) is a tuple
``(value, dm, dk)``: the last non-null value and the last step between two
consecutive values as an integer mantissa ``dm`` at decimal exponent ``dk``
(``None`` when unknown).
"""
# ruff: noqa: B905 (MicroPython's zip() has no strict= argument)

import struct

from agent.batch_bits import (
    BatchError,
    BitReader,
    BitWriter,
    column_cost,
    read_column,
    write_column,
)

T_INT = 0       # every value an int: mantissa = value
T_DEC = 1       # every value a float equal to m / 10**k for one k in 0..15
T_RAW = 2       # anything else: per value 1 bit type, then an int or a binary64
MAX_EXP = 15
P_ABS, P_DELTA, P_DOD = 0, 1, 2
POW10 = [10 ** i for i in range(MAX_EXP + 1)]
EXACT = 1 << 53


def _negzero(v: float) -> bool:
    return v == 0 and struct.pack(">d", v)[0] & 0x80 != 0


def exponent(v: "int | float") -> int:
    """Smallest k with ``m / 10**k == v`` exactly (k = 0 and type int for ints);
    -1 when no k <= 15 works (nan, inf, -0.0, 0.1 + 0.2, huge floats)."""
    if isinstance(v, int):
        return 0
    if v != v or v in (float("inf"), float("-inf")) or _negzero(v):
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
        return v * POW10[k] if -EXACT < v * POW10[k] < EXACT else None
    e = exponent(v)
    if e < 0 or e > k:
        return None
    return round(v * POW10[e]) * POW10[k - e]


def step(entry: "tuple | None", v: "int | float") -> tuple:
    """The state entry after value ``v`` follows ``entry``."""
    if entry is None:
        return (v, None, 0)
    prev = entry[0]
    ep, ev = exponent(prev), exponent(v)
    if ep < 0 or ev < 0:
        return (v, None, 0)
    k = ep if ep > ev else ev
    t = T_INT if isinstance(prev, int) and isinstance(v, int) else T_DEC
    a, b = mantissa(prev, k, t), mantissa(v, k, t)
    if a is None or b is None:
        return (v, None, 0)
    return (v, b - a, k)


def _prev_step(entry: tuple, k: int) -> int:
    dm, dk = entry[1], entry[2]
    if dm is None or dk > k:
        return 0
    return dm * POW10[k - dk]


def column_type(values: list) -> "tuple[int, int]":
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


def encode_column(w: BitWriter, cells: list, entries: list) -> list:
    """Write one register's cells. ``cells``: per meter, its list of values
    (None = null) in row order; ``entries``: per meter its state entry (or
    None). Returns the entries after the batch."""
    flat = [v for vs in cells for v in vs]
    nulls = [v is None for v in flat]
    present = [v for v in flat if v is not None]
    t, k = column_type(present)
    w.bits(t, 2)
    if t == T_DEC:
        w.bits(k, 4)
    if any(nulls):
        w.bits(1, 1)
        for n in nulls:
            w.bits(1 if n else 0, 1)
    else:
        w.bits(0, 1)
    if t == T_RAW:
        for v in present:
            _write_raw(w, v)
        return _walk(cells, entries, None, 0, 0)
    fresh: list = []
    known: list = [[], [], []]        # residuals for ABS, DELTA, DOD
    _walk(cells, entries, (fresh, known), t, k)
    best = 0
    cost = [column_cost(rs) for rs in known]
    for p in (1, 2):
        if cost[p] < cost[best]:
            best = p
    write_column(w, fresh)
    if known[0]:
        w.bits(best, 2)
        write_column(w, known[best])
    return _walk(cells, entries, None, 0, 0)


def _walk(cells: list, entries: list, sink: "tuple | None", t: int, k: int) -> list:
    """Run the state through the cells; with a sink, collect fresh mantissas
    and the residuals every predictor would leave."""
    out = []
    for vs, entry in zip(cells, entries):
        for v in vs:
            if v is None:
                continue
            if sink is not None:
                m = mantissa(v, k, t)
                a = mantissa(entry[0], k, t) if entry is not None else None
                if a is None:
                    sink[0].append(m)
                else:
                    sink[1][0].append(m)
                    sink[1][1].append(m - a)
                    sink[1][2].append(m - a - _prev_step(entry, k))
            entry = step(entry, v)
        out.append(entry)
    return out


def decode_column(r: BitReader, shape: "list[int]", entries: list) -> "tuple[list, list]":
    """Inverse of ``encode_column``: ``shape`` is the number of cells per meter.
    Returns (cells, entries after the batch)."""
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
        return cells, _walk(cells, entries, None, 0, 0)
    # Which cells are fresh (no usable prediction) follows from the state and
    # the null map alone, so the two streams can be read before any value.
    n_fresh, n_known, pos = 0, 0, 0
    for count, entry in zip(shape, entries):
        usable = entry is not None and mantissa(entry[0], k, t) is not None
        for _ in range(count):
            if not nulls[pos]:
                if usable:
                    n_known += 1
                else:
                    n_fresh += 1
                    usable = True
            pos += 1
    fresh = read_column(r, n_fresh)
    p = r.bits(2) if n_known else 0
    if p > P_DOD:
        raise BatchError("bad_value", "predictor %d" % p)
    known = read_column(r, n_known)
    return _rebuild(shape, entries, nulls, fresh, known, p, t, k)


def _value(m: int, t: int, k: int) -> "int | float":
    return m if t == T_INT else m / POW10[k]


def _rebuild(shape: list, entries: list, nulls: list, fresh: list, known: list, p: int,
             t: int, k: int) -> "tuple[list, list]":
    cells, out = [], []
    pos, fi, ki = 0, 0, 0
    for count, entry in zip(shape, entries):
        vs: list = []
        for _ in range(count):
            if nulls[pos]:
                vs.append(None)
                pos += 1
                continue
            pos += 1
            a = mantissa(entry[0], k, t) if entry is not None else None
            if a is None:
                m = fresh[fi]
                fi += 1
            else:
                rr = known[ki]
                ki += 1
                m = rr if p == P_ABS else rr + a if p == P_DELTA else rr + a + _prev_step(entry, k)
            if t == T_DEC and not -EXACT < m < EXACT:
                raise BatchError("bad_value", "mantissa out of range")
            v = _value(m, t, k)
            vs.append(v)
            entry = step(entry, v)
        cells.append(vs)
        out.append(entry)
    return cells, out


def _split(vals: list, shape: "list[int]") -> list:
    cells, i = [], 0
    for n in shape:
        cells.append(vals[i:i + n])
        i += n
    return cells
