"""HES-lite ingest pipeline: acks, duplicates, every rejection reason, the
replay window, crash recovery, and that bad input never loses stored data."""

import logging
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hes_lite import wire
from hes_lite.ingest import Ingestor, Rejected
from hes_lite.store import RawBatch, open_store

KEY = bytes.fromhex("8f3a1c5e7d9b2f4a6c8e0a1b3d5f7e9c" * 2)
T0 = 1780272000
REASONS = {"bad_tag", "replay", "unknown_key", "revoked_key", "truncated", "bad_length",
           "bad_version", "device_mismatch", "seq_mismatch", "bad_batch"}


def batch(seq, counter=None, device="conc-1", epoch=1, key=KEY, meters=3):
    rows = {f"m{device}-{i}": [(T0 + 3600 * seq, {"1.0.1.8.0.255": 1000 * seq + i,
                                                   "1.0.32.7.0.255": 230.5 + i,
                                                   "0.0.97.97.0.255": 0})]
            for i in range(meters)}
    events = {f"m{device}-0": [(T0 + 3600 * seq + 5, 40, "cover_open")]}
    return wire.seal_batch(key, device, epoch, seq if counter is None else counter, seq, rows,
                           events, {"1.0.1.8.0.255": "Wh", "1.0.32.7.0.255": "V"})


@pytest.fixture
def store(db_url):
    s = open_store(db_url)
    s.add_key("conc-1", 1, KEY, 0.0)
    yield s
    s.close()


def snapshot(store):
    return (list(store.rows()), store.events(), [(c.device, c.batches, c.last_seq)
                                                 for c in store.concentrators()])


def test_accept_then_duplicate_stored_once(store):
    ing = Ingestor(store, clock=lambda: 123.5)
    env = batch(1)
    a = ing.submit(env, "conc-1", 1)
    assert a.as_dict() == {"device": "conc-1", "seq": 1, "status": "accepted",
                           "server_time": 123.5}
    before = snapshot(store)
    assert ing.submit(env, "conc-1", 1).status == "duplicate"
    assert ing.submit(env).status == "duplicate"
    assert snapshot(store) == before
    assert len(before[0]) == 3 and before[2] == [("conc-1", 1, 1)]
    assert store.rows().__next__()[2] == {"1.0.1.8.0.255": 1000, "1.0.32.7.0.255": 230.5,
                                          "0.0.97.97.0.255": 0}
    assert store.events() == [("mconc-1-0", T0 + 3605, 40, "cover_open")]


def test_values_keep_their_type(store):
    ing = Ingestor(store)
    rows = {"m": [(T0, {"a": 230.0, "b": 230, "c": 0.1 + 0.2, "d": -(2 ** 53), "e": 1e-300})]}
    ing.submit(wire.seal_batch(KEY, "conc-1", 1, 1, 1, rows))
    (_, _, values), = list(store.rows())
    assert values == rows["m"][0][1]
    assert [type(v) for v in values.values()] == [float, int, float, int, float]


def test_group_with_duplicates_inside(store):
    ing = Ingestor(store)
    envs = [batch(s) for s in (1, 2, 2, 3, 1)]
    out = ing.submit_many([(e, None, None) for e in envs])
    assert [a.status for a in out] == ["accepted", "accepted", "duplicate", "accepted",
                                       "duplicate"]
    assert store.concentrators()[0].batches == 3


def _reject(ing, env, device=None, seq=None):
    with pytest.raises(Rejected) as e:
        ing.submit(env, device, seq)
    assert e.value.reason in REASONS
    return e.value.reason


def test_every_reason_counted_and_logged_without_key(store, caplog):
    caplog.set_level(logging.DEBUG)
    ing = Ingestor(store)
    ing.submit(batch(1))
    before = snapshot(store)
    env = batch(2)
    flipped = bytearray(env)
    flipped[-3] ^= 0x10
    assert _reject(ing, bytes(flipped)) == "bad_tag"
    assert _reject(ing, env[:len(env) // 2]) == "truncated"
    assert _reject(ing, env[:3]) == "truncated"
    assert _reject(ing, b"") == "truncated"
    assert _reject(ing, env + b"\x00" * 10) == "bad_length"
    n = len("conc-1")
    absurd = bytearray(env)
    absurd[13 + n:15 + n] = b"\xff\xff"  # the header claims a 64 KiB payload
    assert _reject(ing, bytes(absurd)) == "truncated"
    absurd[13 + n:15 + n] = b"\x00\x01"  # ... or one byte
    assert _reject(ing, bytes(absurd)) == "bad_length"
    absurd[4] = 200  # a device id longer than 64 bytes
    assert _reject(ing, bytes(absurd)) == "bad_length"
    assert _reject(ing, b"XX" + env[2:]) == "bad_version"
    assert _reject(ing, batch(2, device="nobody")) == "unknown_key"
    assert _reject(ing, batch(2, epoch=7)) == "unknown_key"
    assert _reject(ing, env, "conc-2", 2) == "device_mismatch"
    assert _reject(ing, env, "conc-1", 3) == "seq_mismatch"
    # a keyframe sealed by conc-1 (its key, its header) that names conc-2 inside
    inner = wire.encode("conc-2", 2, {"m": [(T0, {"1.0.1.8.0.255": 1})]})[0]
    lying = wire.seal(KEY, "conc-1", 1, 2, inner)
    assert _reject(ing, lying) == "device_mismatch"
    other = os.urandom(32)
    store.add_key("conc-9", 1, other, 0.0)
    store.revoke("conc-9")
    assert _reject(ing, batch(1, device="conc-9", key=other)) == "revoked_key"
    assert snapshot(store) == before
    counts = store.rejects()
    assert counts == {"bad_tag": 1, "truncated": 4, "bad_length": 3, "bad_version": 1,
                      "unknown_key": 2, "device_mismatch": 2, "seq_mismatch": 1,
                      "revoked_key": 1}
    text = caplog.text.lower()
    assert "rejected batch" in text
    for k in (KEY, other):
        assert k.hex() not in text and k.hex().upper() not in caplog.text


def test_replay_window(store):
    ing = Ingestor(store)
    ing.submit(batch(100, counter=100))
    # an old counter (outside the window) with a seq never stored
    assert _reject(ing, batch(1, counter=1)) == "replay"
    # a counter reused for another batch
    assert _reject(ing, batch(5, counter=100)) == "replay"
    # late but inside the window is fine, once
    assert ing.submit(batch(99, counter=99)).status == "accepted"
    assert _reject(ing, batch(98, counter=99)) == "replay"
    assert store.rejects() == {"replay": 3}
    # the window survives a restart (it is stored with the raw batch)
    assert _reject(Ingestor(store), batch(97, counter=100)) == "replay"


def test_rotation_and_revocation(store):
    ing = Ingestor(store)
    ing.submit(batch(1))
    new = os.urandom(32)
    store.add_key("conc-1", 2, new, 0.0)
    assert ing.submit(batch(2, epoch=2, key=new, counter=1)).status == "accepted"
    assert _reject(ing, batch(3, epoch=2, key=KEY)) == "bad_tag"
    store.revoke("conc-1")
    assert _reject(ing, batch(4, epoch=2, key=new, counter=4)) == "revoked_key"
    assert [c.batches for c in store.concentrators()] == [2]


def test_recover_decodes_what_a_crash_left_raw(store):
    env = batch(1)
    h = wire.header(env)
    store.store_raw([RawBatch("conc-1", 1, env, 5.0, h.epoch, None)])
    assert store.concentrators()[0].pending == 1 and list(store.rows()) == []
    ing = Ingestor(store)
    assert ing.recover() == 1
    assert len(list(store.rows())) == 3 and store.concentrators()[0].pending == 0
    assert ing.submit(env).status == "duplicate"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_refused(store, pos, bit):
    ing = Ingestor(store)
    env = bytearray(batch(50))
    env[pos % len(env)] ^= 1 << bit
    before = snapshot(store)
    with pytest.raises(Rejected) as e:
        ing.submit(bytes(env))
    assert e.value.reason in REASONS
    assert snapshot(store) == before


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_any_bytes_give_a_reason_never_a_crash(store, data):
    ing = Ingestor(store)
    with pytest.raises(Rejected) as e:
        ing.submit(data)
    assert e.value.reason in REASONS


@given(data=st.binary(max_size=200))
def test_header_parser_total(data):
    try:
        h = wire.header(data)
    except wire.WireError as e:
        assert e.reason in REASONS
    else:
        assert isinstance(h.device, str)


def test_header_fed_in_prefixes():
    env = batch(3)
    for n in range(len(env)):
        with pytest.raises(wire.WireError) as e:
            wire.open_envelope(env[:n], KEY)
        assert e.value.reason in ("truncated", "bad_length", "bad_version", "bad_tag")
    assert wire.batch_ident(wire.open_envelope(env, KEY))[0] == 3


def test_cycle_results_give_each_meter_its_last_result_and_since_when(store):
    """The batch's cycle results land on the meters, a meter never read
    included; a result repeated hour after hour keeps its 'since'; an older
    batch decoded late does not overwrite a newer result."""
    ing = Ingestor(store)
    ok = {"1.0.1.8.0.255": 5}

    def sealed(seq: int, statuses: list[tuple[str, str, str | None]], base: bytes | None):
        rows = {"A": [(T0 + 3600 * seq, dict(ok))]}
        data, state = wire.encode("conc-1", seq, rows, base=base, statuses=statuses)
        return wire.seal(KEY, "conc-1", 1, seq, data), state

    def last() -> dict[str, object]:
        return {m["meter"]: m["last_result"] for m in store.meters()}

    failed = ("B", "failed", "no reply after 3 attempts")
    env1, st1 = sealed(1, [("A", "read", None), failed], None)
    env2, st2 = sealed(2, [("A", "read", None), failed], st1)
    env3, _ = sealed(3, [("A", "read", None), ("B", "read", None)], st2)
    ing.submit(env1)
    assert {m["meter"]: m["last_reading"] for m in store.meters()}["B"] is None
    assert last() == {"A": {"status": "read", "error": None, "since": T0 + 3600},
                      "B": {"status": "failed", "error": "no reply after 3 attempts",
                            "since": T0 + 3600}}
    ing.submit(env2)
    assert last()["B"] == {"status": "failed", "error": "no reply after 3 attempts",
                           "since": T0 + 3600}
    ing.submit(env3)
    assert last() == {"A": {"status": "read", "error": None, "since": T0 + 3600},
                      "B": {"status": "read", "error": None, "since": T0 + 3 * 3600}}
    # an older result applied again (a recovery replay) changes nothing
    from hes_lite.store import DecodedBatch
    store.apply([DecodedBatch("conc-1", 1, results=[("B", T0 + 3600, "failed", "late")])])
    assert last()["B"] == {"status": "read", "error": None, "since": T0 + 3 * 3600}
