"""HES-lite with the real batch codec: deltas against the stored codec
state, out-of-order arrival (kept raw until the base is there), deltas whose
base state has moved on (rebuilt from the stored chain), gaps, a crash
between the raw write and the
decode, and the bulk path with decode worker processes."""

import pytest

from hes_lite import wire
from hes_lite.ingest import Ack, Ingestor
from hes_lite.store import open_store

KEY = bytes(range(100, 132))
T0 = 1780272000
DEV = "conc-flow"


def hour_rows(h, meters=4, device=DEV):
    return {f"{device}-m{i}": [(T0 + 3600 * h, {"1.0.1.8.0.255": 5000 + 700 * h + i,
                                        "1.0.32.7.0.255": 230.0 + (h % 5) / 10,
                                        "1.0.1.7.0.255": None if h == 3 and i == 0 else 40 * h})]
            for i in range(meters)}


def chain(hours, device=DEV):
    """Sealed batches for seq 1..hours, each a delta against the previous
    one's state (the first a keyframe), as an agent whose acks all came."""
    out, state = {}, None
    for h in range(1, hours + 1):
        data, state = wire.encode(device, h, hour_rows(h, device=device), base=state)
        out[h] = wire.seal(KEY, device, 0, h, data)
    return out


@pytest.fixture
def store(db_url):
    s = open_store(db_url)
    s.add_key(DEV, 0, KEY, 0.0)
    yield s
    s.close()


def expected(hours):
    return sorted((m, ts, vals) for h in hours for m, r in hour_rows(h).items()
                  for ts, vals in r)


def stored(store):
    return sorted(store.rows())


def test_deltas_in_order(store):
    ing = Ingestor(store)
    b = chain(4)
    for h in range(1, 5):
        assert ing.submit(b[h]).as_dict().get("need_keyframe") is None
    assert stored(store) == expected(range(1, 5))
    assert store.codec_state(DEV)[0] == 4
    assert store.concentrators()[0].pending == 0


def test_out_of_order_waits_for_its_base(store):
    ing = Ingestor(store)
    b = chain(4)
    ing.submit(b[1])
    a3 = ing.submit(b[3])
    assert a3.status == "accepted" and a3.need_keyframe
    assert a3.as_dict()["need_keyframe"] is True
    assert store.concentrators()[0].pending == 1
    assert stored(store) == expected([1])
    ing.submit(b[2])  # the base arrives: 2 and then 3 decode
    assert stored(store) == expected([1, 2, 3])
    ing.submit(b[4])
    assert stored(store) == expected([1, 2, 3, 4])
    assert store.concentrators()[0].pending == 0


def test_late_delta_decodes_from_the_stored_chain(store):
    ing = Ingestor(store)
    b = chain(3)
    ing.submit(b[1])
    ing.submit(b[3])  # its base (state after 2) is not here yet
    kf, state4 = wire.encode(DEV, 4, hour_rows(4))  # the agent sends a keyframe
    ing.submit(wire.seal(KEY, DEV, 0, 4, kf))
    c = store.concentrators()[0]
    assert (c.pending, c.batches) == (1, 3)
    assert stored(store) == expected([1, 4])
    # 2 arrives late: a delta against a state the HES moved past, rebuilt from
    # the stored batches; then 3 decodes too, and the state stays at 4
    assert ing.submit(b[2]).status == "accepted"
    assert stored(store) == expected([1, 2, 3, 4])
    assert store.codec_state(DEV)[0] == 4 and store.concentrators()[0].pending == 0
    data5, _ = wire.encode(DEV, 5, hour_rows(5), base=state4)
    assert not ing.submit(wire.seal(KEY, DEV, 0, 5, data5)).need_keyframe
    assert stored(store) == expected([1, 2, 3, 4, 5])


def test_gap_keeps_batches_raw_until_filled_even_across_restarts(store):
    b = chain(5)
    ing = Ingestor(store)
    for h in (1, 2, 4, 5):
        ing.submit(b[h])
    assert store.concentrators()[0].pending == 2 and stored(store) == expected([1, 2])
    again = Ingestor(store)  # a restart keeps the backlog
    assert again.recover() == 0
    again.submit(b[3])
    assert stored(store) == expected(range(1, 6))
    assert store.codec_state(DEV)[0] == 5


def test_crash_between_raw_write_and_decode(store, monkeypatch):
    b = chain(2)
    ing = Ingestor(store)
    ing.submit(b[1])

    def boom(*args):
        raise KeyboardInterrupt  # the process dies after the durable raw write
    monkeypatch.setattr(ing, "_finish", boom)
    with pytest.raises(KeyboardInterrupt):
        ing.submit(b[2])
    assert store.concentrators()[0].pending == 1
    again = Ingestor(store)  # restart
    assert again.recover() == 1
    assert stored(store) == expected([1, 2])
    assert again.submit(b[2]).status == "duplicate"


def test_bulk_stream_with_worker_processes(db_url):
    store = open_store(db_url)
    devices = [f"bulk-{i}" for i in range(6)]
    store.add_keys([(d, 0, KEY) for d in devices], 0.0)
    ing = Ingestor(store)
    items = []
    for d in devices:
        for h, env in chain(3, d).items():
            items.append((h, env))
    items.sort(key=lambda x: x[0])  # hour by hour, devices interleaved
    groups = [[(e, None, None) for _, e in items[i:i + 4]] for i in range(0, len(items), 4)]
    acks = [a for g in ing.ingest_stream(groups, workers=2) for a in g]
    assert len(acks) == 18 and all(isinstance(a, Ack) and a.status == "accepted" for a in acks)
    assert store.counts()["readings"] == 6 * 3 * 4 * 3  # nulls are kept (as NULL)
    assert sorted(store.rows()) == sorted((m, ts, v) for d in devices for h in (1, 2, 3)
                                          for m, r in hour_rows(h, device=d).items()
                                          for ts, v in r)
    assert all(c.pending == 0 for c in store.concentrators())
    dup = list(ing.ingest_stream([[(items[0][1], None, None)]], workers=1))
    assert dup[0][0].status == "duplicate"
    store.close()
