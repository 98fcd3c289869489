"""HES-lite ingest throughput: readings/s through verify + decrypt + decode +
store into SQLite, for a burst of hourly batches from many concentrators
(default 10,000 × 64 meters × 27 values), plus export rows/s per format.

Two bursts are timed: hour 1 (keyframes: every concentrator's first batch)
and hour 2 (deltas against the codec state the HES holds: the steady state).
Each batch carries its meters' cycle results, as the agent's do.
Batches are generated with the real encoder (``agent.batch`` +
``agent.envelope`` through ``hes_lite.wire``) before the clock starts.
``--workers N`` decodes in N processes while the main process verifies and
writes SQLite (the bulk path ``Ingestor.ingest_stream``); ``--workers 0``
decodes inline. ``--repeat N`` (default 3) runs both bursts N times, each into
a fresh database, and reports the medians (and each run). Prints one JSON
document.

    .venv/bin/python bench/hes_ingest.py [--concentrators N] [--workers N] [--sync ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hes_lite import export, wire  # noqa: E402
from hes_lite.ingest import Ack, Ingestor  # noqa: E402
from hes_lite.store import open_store  # noqa: E402

T0 = 1780272000 + 24 * 3600
KEY = bytes(range(32))
ENERGY = ["1.0.1.8.%d.255" % t for t in range(5)] + ["1.0.2.8.%d.255" % t for t in range(5)] \
    + ["1.0.3.8.0.255", "1.0.4.8.0.255"]
INSTANT = ["1.0.%d.7.0.255" % c for c in (32, 52, 72, 31, 51, 71, 21, 41, 61, 1, 3, 13, 14)]
STATUS = ["0.0.96.3.10.255", "0.0.97.97.0.255"]


def meter_values(c: int, m: int, values: int, hour: int) -> dict[str, int | float]:
    """A plausible meter: growing energy registers, wandering instantaneous values."""
    k = c * 64 + m
    v: dict[str, int | float] = {}
    for i, o in enumerate(ENERGY):
        v[o] = 1_000_000 + k * 37 + i * 1013 + hour * (300 + (k * 7 + i) % 900)
    for i, o in enumerate(INSTANT):
        j = k * 7 + i * 3 + hour * 5
        v[o] = round(229.0 + (j % 200) / 10, 1) if i < 3 else \
            round((j % 5000) / 1000, 3) if i < 6 else (j * 11) % 4000
    v[STATUS[0]] = 1
    v[STATUS[1]] = k % 3
    return dict(list(v.items())[:values])


def generate(job: tuple[int, int, int, int]) -> list[tuple[bytes, bytes]]:
    """Hour-1 keyframe and hour-2 delta, sealed, for concentrators [lo, hi)."""
    lo, hi, meters, values = job
    out = []
    for c in range(lo, hi):
        device = "conc-%05d" % c
        ids = ["%08d" % (10_000_000 + c * meters + m) for m in range(meters)]
        sealed, state = [], None
        results: list[tuple[str, str, str | None]] = [(mid, "read", None) for mid in ids]
        for hour in (1, 2):
            rows = {mid: [(T0 + 3600 * hour, meter_values(c, m, values, hour))]
                    for m, mid in enumerate(ids)}
            data, state = wire.encode(device, hour, rows, base=state, statuses=results)
            sealed.append(wire.seal(KEY, device, 0, hour, data))
        out.append((sealed[0], sealed[1]))
    return out


def load_or_generate(args: argparse.Namespace, jobs: list[tuple[int, int, int, int]]
                     ) -> list[tuple[bytes, bytes]]:
    """Generating takes minutes at full size (the portable encoder, ~20 ms
    per 64-meter batch), so ``--cache FILE`` keeps the sealed batches between
    runs."""
    tag = (args.concentrators, args.meters, args.values, "results")
    if args.cache and os.path.exists(args.cache):
        with open(args.cache, "rb") as f:
            cached_tag, pairs = pickle.load(f)
        if cached_tag == tag:
            return list(pairs)
    with ProcessPoolExecutor(max(1, args.gen_workers),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        pairs = [p for part in pool.map(generate, jobs) for p in part]
    if args.cache:
        with open(args.cache, "wb") as f:
            pickle.dump((tag, pairs), f)
    return pairs


def burst(ing: Ingestor, envs: list[bytes], group: int, workers: int) -> float:
    groups = ([(e, None, None) for e in envs[i:i + group]] for i in range(0, len(envs), group))
    t = time.perf_counter()
    for acks in ing.ingest_stream(groups, workers):
        bad = [a for a in acks if not isinstance(a, Ack) or a.status != "accepted"]
        assert not bad, bad[:3]
    return time.perf_counter() - t


def run(args: argparse.Namespace) -> dict[str, object]:
    work = tempfile.mkdtemp(prefix="hes-bench-", dir=args.workdir)
    try:
        n, per = args.concentrators, max(1, args.concentrators // 16)
        jobs = [(lo, min(n, lo + per), args.meters, args.values) for lo in range(0, n, per)]
        t = time.perf_counter()
        pairs = load_or_generate(args, jobs)
        gen_s = time.perf_counter() - t
        readings = n * args.meters * args.values
        sample = [wire.open_envelope(p[0], KEY) for p in pairs[: max(1, n // 20)]]
        t = time.perf_counter()
        for plain in sample:
            wire.decode(plain, None)
        decode_rate = len(sample) * args.meters * args.values / (time.perf_counter() - t)
        runs = []
        for i in range(max(1, args.repeat)):
            last = i == max(1, args.repeat) - 1
            runs.append(one_run(args, pairs, os.path.join(work, "hes-%d.db" % i), keep=last))
        store, db_bytes = runs[-1][2], runs[-1][3]
        key_all = [r[0] for r in runs]
        delta_all = [r[1] for r in runs]
        key_s, delta_s = statistics.median(key_all), statistics.median(delta_all)
        result: dict[str, object] = {
            "concentrators": n, "meters_per_batch": args.meters, "values_per_meter": args.values,
            "readings_per_burst": readings, "workers": args.workers, "sync": args.sync,
            "group": args.group, "generate_s": round(gen_s, 1), "repeats": len(runs),
            "keyframe_burst": {"s": round(key_s, 2), "readings_per_s": round(readings / key_s),
                               "readings_per_s_each": [round(readings / s) for s in key_all],
                               "batch_bytes_mean": round(sum(len(p[0]) for p in pairs) / n)},
            "delta_burst": {"s": round(delta_s, 2), "readings_per_s": round(readings / delta_s),
                            "readings_per_s_each": [round(readings / s) for s in delta_all],
                            "batch_bytes_mean": round(sum(len(p[1]) for p in pairs) / n)},
            "db_bytes": db_bytes,
            "keyframe_decode_only_values_per_s_one_core": round(decode_rate),
        }
        result["export_rows_per_s"] = export_rates(store, work, args.export_rows)
        store.close()
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def one_run(args: argparse.Namespace, pairs: list[tuple[bytes, bytes]], path: str,
            keep: bool) -> tuple[float, float, Any, int]:
    """Both bursts into a fresh database: (keyframe s, delta s, store, db bytes)."""
    n = args.concentrators
    store = open_store(path, durable=args.sync != "off")
    store.add_keys([("conc-%05d" % c, 0, KEY) for c in range(n)], 0.0)
    if args.sync == "full":
        store._sync = lambda level: store._conn.execute("PRAGMA synchronous = FULL")  # type: ignore[method-assign]
    ing = Ingestor(store)
    key_s = burst(ing, [p[0] for p in pairs], args.group, args.workers)
    delta_s = burst(ing, [p[1] for p in pairs], args.group, args.workers)
    counts = store.counts()
    assert counts["readings"] == 2 * n * args.meters * args.values, counts
    with_results = store._conn.execute(  # every meter's cycle result landed, once
        "SELECT count(*) FROM meters WHERE result_since = ?", (T0 + 3600,)).fetchone()[0]
    assert with_results == n * args.meters, with_results
    db_bytes = os.path.getsize(path)
    if not keep:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
    return key_s, delta_s, store, db_bytes


def export_rates(store, work: str, limit: int) -> dict[str, object]:
    """Meter-hour rows (27 values each) per second, per format."""
    units = store.units()
    out: dict[str, object] = {"values_per_row": len(units)}
    for fmt in export.FORMATS:
        n = limit if fmt != "xlsx" else min(limit, 50_000)
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
    p.add_argument("--workers", type=int, default=2, help="decode processes (0 = inline)")
    p.add_argument("--gen-workers", type=int, default=2, help="processes generating batches")
    p.add_argument("--sync", choices=("full", "normal", "off"), default="normal",
                   help="normal: raw batches FULL, derived rows NORMAL (the default "
                        "store); full: everything FULL; off: no fsync at all")
    p.add_argument("--export-rows", type=int, default=100_000,
                   help="meter-hour rows per export format (xlsx at most 50k)")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of both bursts, each into a fresh database; the median is "
                        "reported (this machine is shared and noisy)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--cache", metavar="FILE", help="keep/reuse the generated batches here")
    print(json.dumps(run(p.parse_args()), indent=2))


if __name__ == "__main__":
    main()
