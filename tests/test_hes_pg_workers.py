"""Several HES workers on one database (each its own store connection and
Ingestor, as ``hes-lite serve`` processes are): consecutive batches of one
concentrator seen by different workers. The interleavings that could go
wrong are played step by step, then many workers race for real. Both
stores (SQLite with two connections on one file behaves the same way)."""

from __future__ import annotations

import random
import threading

from hes_lite import wire
from hes_lite.ingest import Ack, Ingestor, decode_runs
from hes_lite.store import open_store

KEY = bytes(range(7, 39))
T0 = 1780272000


def rows(device, h, meters=3):
    return {f"{device}-m{i}": [(T0 + 3600 * h, {"1.0.1.8.0.255": 100 * h + i,
                                                "1.0.32.7.0.255": 230.0 + i / 10})]
            for i in range(meters)}


def chain(device, hours):
    """seq 1 a keyframe, then deltas, each against the previous state."""
    out, state = {}, None
    for h in range(1, hours + 1):
        data, state = wire.encode(device, h, rows(device, h), base=state)
        out[h] = wire.seal(KEY, device, 0, h, data)
    return out


def expected(devices, hours):
    return sorted((m, ts, v) for d in devices for h in range(1, hours + 1)
                  for m, r in rows(d, h).items() for ts, v in r)


def workers(url, n, devices):
    stores = [open_store(url) for _ in range(n)]
    stores[0].add_keys([(d, 0, KEY) for d in devices], 0.0)
    return stores, [Ingestor(s) for s in stores]


def settled(store, devices, hours):
    assert sorted(store.rows()) == expected(devices, hours)
    assert store.backlog() == []
    assert {d: store.codec_state(d)[0] for d in devices} == dict.fromkeys(devices, hours)
    assert store.counts()["readings"] == len(expected(devices, hours)) * 2


def test_the_worker_that_writes_last_decodes_the_others_batch(db_url):
    """B stores 2 before its base exists and parks it; A stores and decodes
    1: A's write sees 2 pending and decodes it too. And the other way round:
    A has stored 3 but not decoded it yet when B stores 4; B's write sees 3
    and decodes both. Nothing stays undecoded."""
    (sa, sb), (a, b) = workers(db_url, 2, ["c"])
    batches = chain("c", 4)
    ack2 = b.submit(batches[2])
    assert ack2.status == "accepted" and ack2.need_keyframe    # no base anywhere yet
    assert not a.submit(batches[1]).need_keyframe
    settled(sa, ["c"], 2)
    results, fresh = a._admit([(batches[3], None, None)])      # raw 3 durable, not decoded
    assert not b.submit(batches[4]).need_keyframe         # B decodes 3 and 4
    settled(sb, ["c"], 4)
    a._finish([decode_runs(a._runs(fresh))], fresh)            # A's late write: nothing to do
    settled(sa, ["c"], 4)


def test_a_worker_late_with_its_decode_writes_nothing(db_url):
    """A decodes 2 from state 1; before it writes, B moves the state to 3.
    A's rows and its (older) state are refused, and 4 — a delta against 3 —
    still decodes: the state never moved back."""
    (sa, _), (a, b) = workers(db_url, 2, ["c"])
    batches = chain("c", 4)
    a.submit(batches[1])
    results, fresh = a._admit([(batches[2], None, None)])
    parts = [decode_runs(a._runs(fresh))]                     # decoded from state 1
    assert b.submit(batches[3]).status == "accepted"           # B drains 2 and 3
    assert sa.codec_state("c")[0] == 3
    a._finish(parts, fresh)                                    # too late: refused
    assert sa.codec_state("c")[0] == 3
    assert not b.submit(batches[4]).need_keyframe
    settled(sa, ["c"], 4)


def test_a_duplicate_of_an_orphaned_batch_drains_it(db_url):
    """A worker died between the raw write and the decode; the agent sends
    the batch again to another worker: acked as a duplicate and decoded."""
    (sa, _), (a, b) = workers(db_url, 2, ["c"])
    batches = chain("c", 2)
    a.submit(batches[1])
    a._admit([(batches[2], None, None)])                       # ... and A is killed
    assert sa.backlog() == ["c"]
    assert b.submit(batches[2]).status == "duplicate"
    settled(sa, ["c"], 2)


def test_many_workers_race_with_redeliveries(db_url):
    """Four workers in threads, twelve concentrators, every batch delivered
    to a random worker, some twice, in a shuffled order per concentrator
    window: every reading once, every state at the last batch, no backlog."""
    devices = [f"race-{i:02d}" for i in range(12)]
    hours = 5
    stores, ings = workers(db_url, 4, devices)
    rnd = random.Random(13)
    queues = [[] for _ in ings]
    for d in devices:
        b = chain(d, hours)
        order = list(range(1, hours + 1))
        rnd.shuffle(order)
        for h in order + rnd.sample(order, 2):
            queues[rnd.randrange(len(ings))].append(b[h])
    errors = []

    def run(ing, queue):
        try:
            for env in queue:
                ack = ing.submit(env)
                assert isinstance(ack, Ack) and ack.status in ("accepted", "duplicate")
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
    threads = [threading.Thread(target=run, args=(i, q)) for i, q in zip(ings, queues, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    settled(stores[0], devices, hours)
    assert sum(c.batches for c in stores[0].concentrators()) == len(devices) * hours


def test_http_uploads_through_two_serve_workers(pg_url, tmp_path):
    """Behind a load balancer: each upload of twenty concentrators' four
    hours goes to either of two `hes-lite serve` processes, eight at a time.
    Every ack is 200, and the database ends as if one HES had taken them."""
    import os
    import subprocess
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.mqtt_broker import free_port
    devices = [f"lb-{i:02d}" for i in range(20)]
    store = open_store(pg_url)
    store.add_keys([(d, 0, KEY) for d in devices], 0.0)
    ports = [free_port(), free_port()]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    log = open(tmp_path / "serve.log", "w+")
    procs = [subprocess.Popen([sys.executable, "-m", "hes_lite.cli", "serve", "--db", pg_url,
                               "--http", f"127.0.0.1:{p}"], cwd=root, stdout=log,
                              stderr=subprocess.STDOUT) for p in ports]
    try:
        for p in ports:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{p}/v1/health", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and all(x.poll() is None for x in procs)
                    time.sleep(0.1)
        rnd = random.Random(5)
        uploads = [(d, h, env, rnd.choice(ports)) for d in devices
                   for h, env in chain(d, 4).items()]
        rnd.shuffle(uploads)

        def put(u):
            d, h, env, port = u
            return httpx.put(f"http://127.0.0.1:{port}/v1/batches/{d}/{h}", content=env,
                             timeout=60).status_code
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(put, uploads)) == {200}
    finally:
        for p in procs:
            p.terminate()
            p.wait(15)
        log.close()
    settled(store, devices, 4)
