"""HES-lite scale-out: readings/s for an hourly burst of many concentrators
(default 10,000 × 64 meters × 27 values) into PostgreSQL with 1, 2 and 3
HES workers, beside the SQLite single-writer figure of the same run, the
export rate from PostgreSQL, and the cores a 1-million-meter hourly burst
needs to be stored within 5 minutes.

A worker is one process doing what a ``hes-lite serve`` worker does with
uploads that arrived together: ``Ingestor.submit_many`` on ``--group``
batches (verify + decrypt + decode + store; the raw batches committed
synchronously before the acks exist), on its own connection. The burst's
batches are dealt to the workers group by group (as a shared subscription
does), and the clock runs from the workers' common start to the last one's
end. Two bursts are timed into a fresh database per worker count, by the
same worker processes: hour 1 (keyframes) and hour 2 (deltas against the
codec state the database holds: the steady state). A concentrator's delta
goes to the worker that took its keyframe, whose cache of parsed codec
states (``--state-cache``, default: room for every concentrator) then
spares the parse; ``--other-worker`` deals it to another worker, so that
every cache misses (a shared subscription spreading a concentrator's
batches over the workers lies between the two). The SQLite figure is ``bench/hes_ingest.py``'s
bulk path (one writer, ``--sqlite-decoders`` decode processes) on the same
batches, which are made (or read from ``--cache``) by that script's generator.

PostgreSQL: a cluster of this script's own (``tests/pg_cluster.py``, fsync
on, the settings printed in the JSON), or ``--pg URL`` for an existing server
(a database the script may create and drop databases beside). CPU per batch
is measured as the workers' process time plus the server's (every process of
the cluster, own cluster only); the cores figure is that, scaled to 15,625
batches (1,000,000 meters / 64) over 300 s. Also per burst the WAL written
per batch, and the mean size of a stored codec state after the run.

    .venv/bin/python bench/hes_scale.py [--concentrators N] [--workers 1,2,3] [--cache F]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hes_ingest  # noqa: E402

from hes_lite.ingest import Ack, Ingestor  # noqa: E402
from hes_lite.store import open_store  # noqa: E402

METERS_1M = 1_000_000
WINDOW_S = 300
PG_SETTINGS = {"shared_buffers": "'1GB'", "max_wal_size": "'8GB'", "wal_buffers": "'64MB'",
               "checkpoint_timeout": "'30min'", "synchronous_commit": "on"}


def worker(url: str, bursts: list[list[list[bytes]]], ready: Any, go: list[Any], out: Any,
           leave: Any, cache: int) -> None:
    """One HES worker (one process for every burst, as a serve worker lives
    on): its share of each burst, group by group."""
    store = open_store(url)
    ing = Ingestor(store, state_cache=cache)
    (backend,) = store._query("SELECT pg_backend_pid()")[0]  # type: ignore[attr-defined]
    for groups, start in zip(bursts, go, strict=True):
        ready.wait()
        start.wait()
        t0, c0 = time.perf_counter(), time.process_time()
        for g in groups:
            acks = ing.submit_many([(e, None, None) for e in g])
            bad = [a for a in acks if not isinstance(a, Ack) or a.status != "accepted"]
            assert not bad, bad[:3]
        out.put((t0, time.perf_counter(), time.process_time() - c0, int(backend)))
    leave.wait()
    store.close()


def cluster_cpu(pg: Any) -> float | None:
    """CPU seconds of every process of our own cluster (postmaster and children)."""
    if pg is None:
        return None
    with open(os.path.join(pg.data, "postmaster.pid")) as f:
        master = int(f.readline())
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == master or int(fields[1]) == master:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def wal_lsn(url: str) -> str:
    import psycopg
    with psycopg.connect(url) as c:
        return str(c.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])


def wal_bytes(url: str, since: str) -> int:
    """WAL written since ``since`` (the whole cluster's: this bench's run only)."""
    import psycopg
    with psycopg.connect(url) as c:
        return int(c.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)",
                             (since,)).fetchone()[0])


def bursts(url: str, burst_envs: list[list[bytes]], n: int, group: int, pg: Any,
           cache: int, turn: int = 0) -> list[dict[str, Any]]:
    """Each burst's ``envs`` dealt in groups to the same ``n`` worker
    processes (group i to worker i mod n; from the second burst on to
    worker (i + turn) mod n); per burst, wall and CPU."""
    ctx = multiprocessing.get_context("spawn")
    shares: list[list[list[list[bytes]]]] = [[] for _ in range(n)]
    for b, envs in enumerate(burst_envs):
        groups = [envs[i:i + group] for i in range(0, len(envs), group)]
        t = turn if b else 0
        for k in range(n):
            shares[k].append(groups[(k - t) % n::n])
    ready, leave = ctx.Barrier(n + 1), ctx.Event()
    go = [ctx.Event() for _ in burst_envs]
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, s, ready, go, out, leave, cache))
             for s in shares]
    for p in procs:
        p.start()
    docs = []
    for start in go:
        ready.wait()
        wal0 = wal_lsn(url)
        server0 = cluster_cpu(pg)
        start.set()
        done = [out.get(timeout=3600) for _ in procs]
        server1 = cluster_cpu(pg)
        wall = max(d[1] for d in done) - min(d[0] for d in done)
        cpu = sum(d[2] for d in done)
        server = None if server0 is None or server1 is None else server1 - server0
        docs.append({"s": wall, "worker_cpu_s": cpu, "server_cpu_s": server,
                     "wal_bytes": wal_bytes(url, wal0)})
    leave.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, p.exitcode
    return docs


def pg_runs(args: argparse.Namespace, pairs: list[tuple[bytes, bytes]], admin_url: str,
            pg: Any) -> dict[str, Any]:
    import psycopg
    n = args.concentrators
    readings = n * args.meters * args.values
    out: dict[str, Any] = {}
    for workers in args.workers:
        runs = []
        for r in range(args.repeat):
            name = "hes_scale_%d_%d_%d" % (os.getpid(), workers, r)
            with psycopg.connect(admin_url, autocommit=True) as c:
                c.execute('CREATE DATABASE "%s"' % name)
            url = admin_url.rsplit("/", 1)[0] + "/" + name
            store = open_store(url)
            store.add_keys([("conc-%05d" % c, 0, hes_ingest.KEY) for c in range(n)], 0.0)
            # the same worker processes take both bursts: their state caches
            # fill with the states they advance in the keyframe burst
            key, delta = bursts(url, [[p[0] for p in pairs], [p[1] for p in pairs]], workers,
                                args.group, pg, args.state_cache,
                                1 if args.other_worker else 0)
            counts = store.counts()
            assert counts["readings"] == 2 * readings, counts
            assert store.backlog() == []
            with psycopg.connect(url) as c:
                size = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
                state = c.execute("SELECT avg(octet_length(state)) FROM codec_states"
                                  ).fetchone()[0]
                out["codec_state_bytes_mean"] = round(float(state))
                results = c.execute("SELECT count(*) FROM meters WHERE result_since = %s",
                                    (hes_ingest.T0 + 3600,)).fetchone()[0]
            assert results == n * args.meters, results
            keep = workers == args.workers[-1] and r == args.repeat - 1
            if keep:
                out["export_rows_per_s"] = hes_ingest.export_rates(store, args.workdir,
                                                                   args.export_rows)
                out["db_bytes"] = int(size)
            store.close()
            if not keep or not args.keep_db:
                with psycopg.connect(admin_url, autocommit=True) as c:
                    c.execute('DROP DATABASE "%s" WITH (FORCE)' % name)
            runs.append((key, delta))
        out["workers_%d" % workers] = summary(runs, readings, n)
    return out


def summary(runs: list[tuple[dict[str, Any], dict[str, Any]]], readings: int,
            batches: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for i, name in enumerate(("keyframe_burst", "delta_burst")):
        walls = [r[i]["s"] for r in runs]
        s = statistics.median(walls)
        cpu = statistics.median(r[i]["worker_cpu_s"] + (r[i]["server_cpu_s"] or 0) for r in runs)
        server = [r[i]["server_cpu_s"] for r in runs]
        doc[name] = {
            "s": round(s, 2), "readings_per_s": round(readings / s),
            "readings_per_s_each": [round(readings / w) for w in walls],
            "wal_kb_per_batch": round(statistics.median(r[i]["wal_bytes"] for r in runs)
                                      / batches / 1024, 1),
            "worker_cpu_ms_per_batch": round(1000 * statistics.median(
                r[i]["worker_cpu_s"] for r in runs) / batches, 2),
            "server_cpu_ms_per_batch": None if None in server else
            round(1000 * statistics.median(server) / batches, 2),   # type: ignore[type-var]
            "cores_for_1m_meters_in_5_min": None if None in server else
            round(cpu / batches * (METERS_1M / 64) / WINDOW_S, 2),
        }
    return doc


def sqlite_run(args: argparse.Namespace, pairs: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """``bench/hes_ingest.py``'s bulk path on the same batches."""
    ns = argparse.Namespace(concentrators=args.concentrators, meters=args.meters,
                            values=args.values, group=256, workers=args.sqlite_decoders,
                            sync="normal")
    key_s, delta_s, store, size = hes_ingest.one_run(
        ns, pairs, os.path.join(args.workdir, "hes.db"), keep=False)
    readings = args.concentrators * args.meters * args.values
    return {"decode_processes": args.sqlite_decoders,
            "keyframe_burst": {"s": round(key_s, 2), "readings_per_s": round(readings / key_s)},
            "delta_burst": {"s": round(delta_s, 2), "readings_per_s": round(readings / delta_s)},
            "db_bytes": size}


def run(args: argparse.Namespace) -> dict[str, Any]:
    n, per = args.concentrators, max(1, args.concentrators // 16)
    jobs = [(lo, min(n, lo + per), args.meters, args.values) for lo in range(0, n, per)]
    t = time.perf_counter()
    pairs = hes_ingest.load_or_generate(args, jobs)
    result: dict[str, Any] = {
        "concentrators": n, "meters_per_batch": args.meters, "values_per_meter": args.values,
        "readings_per_burst": n * args.meters * args.values, "group": args.group,
        "repeats": args.repeat, "generate_s": round(time.perf_counter() - t, 1),
        "state_cache": args.state_cache,
        "delta_batches_to": "another worker than the keyframe's" if args.other_worker else
        "the keyframe's worker",
        "cpus": os.cpu_count(),
    }
    pg = None
    if args.pg:
        admin = args.pg
        result["postgresql"] = {"server": "given (--pg); server CPU not measured"}
    else:
        from tests.pg_cluster import PgCluster
        pg = PgCluster(fsync=True, settings=PG_SETTINGS).start()
        admin = pg.url()
        result["postgresql"] = {"server": "own cluster", "settings": {
            **{k: v.strip("'") for k, v in PG_SETTINGS.items()}, "fsync": "on"}}
    try:
        result["postgresql"].update(pg_runs(args, pairs, admin, pg))
    finally:
        if pg is not None:
            pg.destroy()
    if not args.no_sqlite:
        result["sqlite"] = sqlite_run(args, pairs)
    two = result["postgresql"].get("workers_2", {}).get("delta_burst", {})
    result["target_200k_with_2_workers_met"] = (two.get("readings_per_s", 0) >= 200_000
                                                if two else None)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concentrators", type=int, default=10_000)
    p.add_argument("--meters", type=int, default=64)
    p.add_argument("--values", type=int, default=27)
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1, 2, 3], help="worker counts to run, e.g. 1,2,3")
    p.add_argument("--group", type=int, default=32,
                   help="batches per worker transaction (serve's MQTT path: at most 32)")
    p.add_argument("--repeat", type=int, default=1, help="runs per worker count (median)")
    p.add_argument("--pg", metavar="URL", help="an existing PostgreSQL (admin database URL)")
    p.add_argument("--keep-db", action="store_true", help="keep the last PostgreSQL database")
    p.add_argument("--no-sqlite", action="store_true", help="skip the SQLite figure")
    p.add_argument("--sqlite-decoders", type=int, default=2,
                   help="decode processes of the SQLite bulk path (bench/hes_ingest.py)")
    p.add_argument("--state-cache", type=int, default=None,
                   help="parsed codec states each worker keeps (default: --concentrators; "
                        "0: none)")
    p.add_argument("--other-worker", action="store_true",
                   help="deal each delta to another worker than its keyframe (every state "
                        "cache misses, as when a shared subscription spreads a concentrator)")
    p.add_argument("--gen-workers", type=int, default=2)
    p.add_argument("--export-rows", type=int, default=100_000)
    p.add_argument("--cache", metavar="FILE", help="keep/reuse the generated batches here")
    p.add_argument("--workdir", default=None)
    args = p.parse_args()
    if args.state_cache is None:
        args.state_cache = args.concentrators
    with tempfile.TemporaryDirectory(prefix="hes-scale-", dir=args.workdir) as work:
        args.workdir = work
        print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
