"""Relations between registers of one row that the batch codec uses as
predictors (docs/batch-format.md §4.3), derived from the OBIS structure alone
(IEC 62056-61 value groups):

- ``tariff``: a total register ``A.B.C.8.0.F`` grows by the sum of what its
  rate registers ``A.B.C.8.e.F`` (e >= 1) grew ("step" relation);
- ``phases``: an all-phase instantaneous value ``A.B.C.7.E.F`` (C 1..20) is
  the sum of its phase values C+20, C+40, C+60 (import/export powers, C 1 and
  2, never below zero);
- ``current``: a phase current (C 31, 51, 71) is |phase active power (C-10)|
  divided by the phase voltage (C+1), in integer arithmetic.

Portable (CPython and MicroPython). A relation only predicts; a wrong
prediction costs bits, never exactness. Must not know the bit layout.
"""

from agent.batch_columns import POW10, T_INT, exponent, mantissa

TYPE_CHECKING = False
if TYPE_CHECKING:  # never true at run time: MicroPython has no typing
    from typing import Any

STEP = "step"
ABS = "abs"


def _groups(o: str) -> "list[int] | None":
    parts = o.split(".")
    if len(parts) != 6:
        return None
    try:
        g = [int(p) for p in parts]
    except ValueError:
        return None
    return g


def _name(g: "list[Any]") -> str:
    return "%d.%d.%d.%d.%d.%d" % tuple(g)


def relation(o: str, used: "set[str]") -> "tuple[Any, ...] | None":
    """-> (kind, name, sources) for register ``o`` given the registers used in
    the batch, or None."""
    g = _groups(o)
    if g is None:
        return None
    a, b, c, d, e, f = g
    if d == 8 and e == 0:
        srcs = [_name([a, b, c, 8, x, f]) for x in range(1, 64)]
        srcs = [s for s in srcs if s in used]
        return (STEP, "tariff", srcs) if srcs else None
    if d == 7 and 1 <= c <= 20:
        srcs = [_name([a, b, c + 20 * i, 7, e, f]) for i in (1, 2, 3)]
        name = "phases+" if c in (1, 2) else "phases"
        return (ABS, name, srcs) if all(s in used for s in srcs) else None
    if d == 7 and c in (31, 51, 71):
        srcs = [_name([a, b, c - 10, 7, e, f]), _name([a, b, c + 1, 7, e, f])]
        return (ABS, "current", srcs) if all(s in used for s in srcs) else None
    return None


def order(table: "list[str]", used: "set[str]") -> "list[tuple[Any, ...]]":
    """Columns to code, sources before the registers they predict: a list of
    (obis, relation or None) in (depth, table position) order."""
    rels = {o: relation(o, used) for o in table if o in used}
    depth: "dict[str, int]" = {}

    def level(o: str, seen: int) -> int:
        if o in depth:
            return depth[o]
        r = rels.get(o)
        d = 0
        if r is not None and seen < 8:
            d = 1 + max(level(s, seen + 1) for s in r[2])
        depth[o] = d
        return d

    cols = [(level(o, 0), i, o) for i, o in enumerate(table) if o in used]
    cols.sort()
    return [(o, rels[o]) for _, _, o in cols]


def _ratio(v: "Any") -> "tuple[int, int] | None":
    if v is None:
        return None
    e = exponent(v)
    if e < 0:
        return None
    if isinstance(v, int):
        return v, 0
    return round(v * POW10[e]), e


def predictor(rel: "tuple[Any, ...]", cells: "Any", n: int) -> "tuple[Any, ...]":
    """(kind, preds(t, k)) for ``agent.batch_columns``, for ``n`` meters:
    ``cells(i)`` gives, per cell of meter i in the target column, per source
    of ``rel`` (in order) its (value, previous value) or None — asked for
    one meter at a time, so no context of the whole column is held."""
    kind, name, srcs = rel

    def preds(t: int, k: int) -> "list[Any]":
        return [[_one(name, srcs, got, t, k) for got in cells(i)] for i in range(n)]
    return (kind, preds)


def _tariff(got: "list[Any]", t: int, k: int) -> "Any":
    """The total's step (sum of the rates' steps) when every rate has a previous
    value, else the total itself as the sum of the rates (a keyframe, a new
    meter): (ABS, value)."""
    step: "int | None" = 0
    total = 0
    for v, p in got:
        mv = mantissa(v, k, t)
        if mv is None:
            return None
        total += mv
        mp = mantissa(p, k, t) if p is not None and step is not None else None
        step = None if mp is None or step is None else step + mv - mp
    return step if step is not None else (ABS, total)


def _one(name: str, srcs: "list[Any]", got: "list[Any]", t: int, k: int) -> "Any":
    if any(x is None or x[0] is None for x in got):
        return None
    if name == "tariff":
        return _tariff(got, t, k)
    if name in ("phases", "phases+"):
        total = 0
        for v, _ in got:
            mv = mantissa(v, k, t)
            if mv is None:
                return None
            total += mv
        return max(0, total) if name == "phases+" else total
    p, v = _ratio(got[0][0]), _ratio(got[1][0])
    if p is None or v is None or v[0] <= 0:
        return None
    # |P| / V at exponent k: |pm| * 10^(kv + k) // (vm * 10^kp)
    num = abs(p[0]) * POW10[v[1]] * (POW10[k] if t != T_INT else 1)
    q: int = num // (v[0] * POW10[p[1]])
    return q
