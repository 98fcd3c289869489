"""HES-lite ingest throughput: readings/s through verify + decrypt + decode +
store into SQLite, for a burst of hourly batches from many concentrators
(default 10,000 × 64 meters × 27 values), plus export rows/s per format.

Batches are generated with the real encoder (through ``hes_lite.wire``) before
the clock starts. Prints one JSON document. ``--concentrators`` scales down.

    .venv/bin/python bench/hes_ingest.py [--concentrators N] [--sync full|normal|off]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hes_lite import export, wire  # noqa: E402
from hes_lite.ingest import Ingestor  # noqa: E402
from hes_lite.store import open_store  # noqa: E402

T0 = 1780272000 + 24 * 3600
ENERGY = ["1.0.1.8.%d.255" % t for t in range(5)] + ["1.0.2.8.%d.255" % t for t in range(5)] \
    + ["1.0.3.8.0.255", "1.0.4.8.0.255"]
INSTANT = ["1.0.%d.7.0.255" % c for c in (32, 52, 72, 31, 51, 71, 21, 41, 61, 1, 3, 13, 14)]
STATUS = ["0.0.96.3.10.255", "0.0.97.97.0.255"]


def meter_values(c: int, m: int, values: int) -> dict[str, int | float]:
    k = c * 64 + m
    v: dict[str, int | float] = {}
    for i, o in enumerate(ENERGY):
        v[o] = 1_000_000 + k * 37 + i * 1013
    for i, o in enumerate(INSTANT):
        v[o] = round(229.0 + ((k * 7 + i * 3) % 200) / 10, 1) if i < 3 else \
            round(((k * 13 + i) % 5000) / 1000, 3) if i < 6 else (k * 11 + i) % 4000
    v[STATUS[0]] = 1
    v[STATUS[1]] = k % 3
    return dict(list(v.items())[:values])


def generate(n: int, meters: int, values: int, key: bytes) -> list[bytes]:
    out = []
    for c in range(n):
        device = "conc-%05d" % c
        rows = {"%08d" % (10_000_000 + c * meters + m): [(T0, meter_values(c, m, values))]
                for m in range(meters)}
        out.append(wire.seal_batch(key, device, 1, 1, 1, rows))
    return out


def run(args: argparse.Namespace) -> dict[str, object]:
    key = bytes(range(32))
    work = tempfile.mkdtemp(prefix="hes-bench-", dir=args.workdir)
    try:
        t = time.perf_counter()
        envs = generate(args.concentrators, args.meters, args.values, key)
        gen_s = time.perf_counter() - t
        store = open_store(os.path.join(work, "hes.db"), durable=args.sync != "off")
        store.add_keys([("conc-%05d" % c, 1, key) for c in range(args.concentrators)], 0.0)
        readings = args.concentrators * args.meters * args.values
        # phases alone, on a sample, to show where the time goes
        sample = envs[: max(1, len(envs) // 10)]
        t = time.perf_counter()
        plain = [wire.open_envelope(e, key) for e in sample]
        open_s = (time.perf_counter() - t) * len(envs) / len(sample)
        t = time.perf_counter()
        for p in plain:
            wire.decode(p, None)
        decode_s = (time.perf_counter() - t) * len(envs) / len(sample)
        ing = Ingestor(store)
        if args.sync == "full":
            store._sync = lambda level: store._conn.execute("PRAGMA synchronous = FULL")  # type: ignore[method-assign]
        t = time.perf_counter()
        for i in range(0, len(envs), args.group):
            acks = ing.submit_many([(e, None, None) for e in envs[i:i + args.group]])
            assert all(getattr(a, "status", "") == "accepted" for a in acks), acks[:3]
        ingest_s = time.perf_counter() - t
        stored = sum(1 for _ in store.rows())
        result: dict[str, object] = {
            "concentrators": args.concentrators, "meters_per_batch": args.meters,
            "values_per_meter": args.values, "readings": readings,
            "batch_bytes_mean": round(sum(map(len, envs)) / len(envs), 1),
            "generate_s": round(gen_s, 2), "ingest_s": round(ingest_s, 2),
            "readings_per_s": round(readings / ingest_s),
            "phase_estimate_s": {"open": round(open_s, 2), "decode": round(decode_s, 2),
                                 "store_and_rest": round(ingest_s - open_s - decode_s, 2)},
            "sync": args.sync, "group": args.group, "meter_hours_stored": stored,
            "db_bytes": os.path.getsize(os.path.join(work, "hes.db")),
        }
        result["export_rows_per_s"] = export_rates(store, work, args.export_rows)
        store.close()
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_rates(store, work: str, limit: int) -> dict[str, float]:
    units = store.units()
    out = {}
    for fmt in export.FORMATS:
        n = limit if fmt != "xlsx" else min(limit, 100_000)
        rows = _take(store.rows(), n)
        path = os.path.join(work, "out." + fmt)
        t = time.perf_counter()
        export.write(fmt, path, rows, units)
        out[fmt] = round(n / (time.perf_counter() - t))
        os.unlink(path)
    return out


def _take(it, n):
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concentrators", type=int, default=10_000)
    p.add_argument("--meters", type=int, default=64)
    p.add_argument("--values", type=int, default=27)
    p.add_argument("--group", type=int, default=256, help="batches per transaction")
    p.add_argument("--sync", choices=("full", "normal", "off"), default="normal",
                   help="normal: raw batches FULL, derived rows NORMAL (the default "
                        "store); full: everything FULL; off: no fsync at all")
    p.add_argument("--export-rows", type=int, default=200_000,
                   help="meter-hour rows per export format (xlsx at most 100k)")
    p.add_argument("--workdir", default=None)
    print(json.dumps(run(p.parse_args()), indent=2))


if __name__ == "__main__":
    main()
