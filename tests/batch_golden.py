"""Deterministic batch chains for the golden-bytes test of the batch codec
(tests/test_batch_golden.py): the wire format must not change when the
codec's code does (memory work on boards, speed work at the HES), so the
SHA-256 of every batch and of every codec state after it, recorded once in
tests/vectors/batch/golden.json, is checked on every run.

The chains cover what the codec distinguishes: keyframes and deltas, the
relation predictors (tariff totals, phase sums, phase currents), decimals,
raw floats (nan, inf, -0.0, 0.1 + 0.2), bools, huge and negative ints, nulls,
missing registers, shape changes, meters that come and go, several rows per
meter, events and cycle results. Inputs come from ``random.Random(seed)``
only (stable across Python versions), not from the simulators.

Regenerate (only when the format changes on purpose):
    .venv/bin/python tests/batch_golden.py --write
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

from agent.batch import Batch, CodecState, decode_batch, encode_batch

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "vectors" / "batch" / "golden.json"
T0 = 1780272000

TARIFF = ["1.0.1.8.%d.255" % e for e in range(5)] + ["1.0.2.8.%d.255" % e for e in range(5)]
PHASES = ["1.0.21.7.0.255", "1.0.41.7.0.255", "1.0.61.7.0.255", "1.0.1.7.0.255"]
VOLTS = ["1.0.32.7.0.255", "1.0.52.7.0.255", "1.0.72.7.0.255"]
AMPS = ["1.0.31.7.0.255", "1.0.51.7.0.255", "1.0.71.7.0.255"]
OTHER = ["1.0.14.7.0.255", "1.0.13.7.0.255", "0.0.96.3.10.255", "0.0.97.97.0.255",
         "vendor:temp"]
ODD = [float("nan"), float("inf"), float("-inf"), -0.0, 0.1 + 0.2, 1e300, True, False,
       2 ** 70, -(2 ** 40) - 3, 5e-324]


class Meter:
    """A meter whose registers move like a real one's (counters, tariffs that
    sum to their total, phases, currents from power and voltage)."""

    def __init__(self, rng: random.Random, name: str) -> None:
        self.rng = rng
        self.name = name
        self.rates = [rng.randrange(0, 10 ** 7) for _ in range(4)]
        self.export = [rng.randrange(0, 1000) for _ in range(4)]
        self.odd = rng.random() < 0.3

    def values(self) -> dict[str, Any]:
        rng = self.rng
        for i in range(4):
            self.rates[i] += rng.randrange(0, 900) if i == rng.randrange(4) else 0
            self.export[i] += rng.randrange(0, 3)
        out: dict[str, Any] = {}
        out[TARIFF[0]] = sum(self.rates)
        for i in range(4):
            out[TARIFF[1 + i]] = self.rates[i]
        out[TARIFF[5]] = sum(self.export)
        for i in range(4):
            out[TARIFF[6 + i]] = self.export[i]
        powers = [rng.randrange(-50, 4000) for _ in range(3)]
        for o, p in zip(PHASES, powers, strict=False):
            out[o] = p
        out[PHASES[3]] = max(0, sum(powers)) if rng.random() < 0.8 else rng.randrange(0, 9000)
        for p, ov, oa in zip(powers, VOLTS, AMPS, strict=True):
            v = rng.randrange(2150, 2450) / 10
            out[ov] = v
            out[oa] = round(abs(p) / v, 3) if rng.random() < 0.9 else rng.randrange(0, 30000) / 1000
        out[OTHER[0]] = rng.randrange(4990, 5010) / 100
        out[OTHER[1]] = rng.randrange(800, 1000) / 1000
        out[OTHER[2]] = rng.randrange(0, 3)
        out[OTHER[3]] = 0
        out[OTHER[4]] = rng.randrange(-400, 900) / 10
        for o in list(out):
            r = rng.random()
            if r < 0.03:
                out[o] = None
            elif r < 0.05:
                del out[o]
            elif self.odd and r < 0.08:
                out[o] = rng.choice(ODD)
        return out


def chain(seed: int, meters: int, hours: int) -> list[Batch]:
    """One concentrator's batches, hour after hour."""
    rng = random.Random(seed)
    pool = [Meter(rng, "%d-%04d" % (seed, i)) for i in range(meters + 3)]
    out = []
    for h in range(hours):
        created = T0 + 86400 * (seed % 5) + 3600 * h + rng.choice([0, 0, 11, 59])
        grid = created - created % 3600
        live = [m for i, m in enumerate(pool) if i < meters or (i - meters) < h // 2]
        if rng.random() < 0.3:
            live = [m for m in live if rng.random() > 0.1]
        rows, statuses = [], []
        for m in live:
            for k in range(3 if rng.random() < 0.08 else 1):
                rows.append((m.name, grid - 3600 * k + rng.choice([0, 0, 0, 7]), m.values()))
            failed = rng.random() < 0.05
            statuses.append((m.name, "failed" if failed else "read",
                             "MeterTimeout: no answer" if failed else None))
        events = [(rng.choice(live).name, created - rng.randrange(0, 3600),
                   rng.choice([1, 2, 40, 41, 47])) for _ in range(rng.randrange(0, 4))] \
            if live else []
        out.append(Batch("dc-%d" % seed, h + 1, created, rows, events, statuses))
    return out


SCENARIOS = [(1, 64, 4), (2, 12, 8), (3, 5, 12), (4, 1, 6), (5, 30, 5)]


def same(a: Batch, b: Batch) -> bool:
    """Equal batches, value types included, nan equal to nan."""
    def norm(x: Batch) -> str:
        rows, events, statuses = x.canonical()
        return repr(([(m, ts, sorted(v.items())) for m, ts, v in rows], events, statuses))
    return norm(a) == norm(b)


def run(seed: int, meters: int, hours: int) -> list[list[str]]:
    """Per batch: [sha256 of the batch, of the agent's state after it]. The
    HES side (decode, advance) must reach the same state: asserted here."""
    agent: CodecState | None = None
    hes: CodecState | None = None
    out = []
    for i, b in enumerate(chain(seed, meters, hours)):
        data = encode_batch(b, agent, keyframe=(i == 0))
        got = decode_batch(data, hes)
        assert same(got, b)
        nxt = CodecState(b.device) if agent is None else agent
        nxt.advance(b)
        agent = nxt
        hes = CodecState(b.device) if hes is None else CodecState.from_bytes(hes.to_bytes())
        hes.advance(got)
        state = agent.to_bytes()
        assert hes.to_bytes() == state and hes.digest() == agent.digest()
        out.append([hashlib.sha256(data).hexdigest(), hashlib.sha256(state).hexdigest()])
    return out


def main() -> int:
    got = {"%d-%d-%d" % s: run(*s) for s in SCENARIOS}
    if "--write" in sys.argv:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    print(json.dumps({k: len(v) for k, v in got.items()}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.exit(main())
