"""What a constrained uplink sends first (issue 10, "Delivery"): events, then
the energy registers of every hour, then instantaneous values, in batches no
bigger than ``[uplink] max_batch_bytes``; every reading at the HES exactly once.

The uplink talks to a real ``hes_lite.ingest.Ingestor`` on a SQLite store in
process (the acks, codec states and duplicate checks are the HES's own)."""

from __future__ import annotations

import os
import tempfile
import threading
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.archive import INSTANT as INSTANT_PART
from agent.archive import PROFILE, SNAPSHOT, Archive
from agent.batch import CodecState, decode_batch
from agent.clock import SystemClock
from agent.config import (
    LORA_BATCH_BYTES,
    MAX_BATCH_BYTES,
    MIN_BATCH_BYTES,
    ConfigError,
    parse,
)
from agent.envelope import Keyring, open_envelope
from agent.priority import ENERGY, EVENTS, INSTANT, register_tier, split
from agent.transport import Ack, Transport, TransportError
from agent.uplink import Uplink
from hes_lite.ingest import Ingestor, Rejected
from hes_lite.store import open_store
from hil.model import ENERGY as MODEL_ENERGY
from hil.model import INSTANT as MODEL_INSTANT
from hil.model import STATUS as MODEL_STATUS
from hil.model import MeterModel

SHM = "/dev/shm"
DEVICE = "DC-PRIO"
KEY = bytes.fromhex("5a" * 32)
T0 = 1790000000 - 1790000000 % 3600


class FixedClock(SystemClock):
    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


class HesLoop(Transport):
    """Batches straight into a real HES ingest pipeline; ``down`` refuses them."""

    url = "loop://hes"

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.sent: list[tuple[int, bytes]] = []
        self.down = False

    def send(self, device: str, seq: int, payload: bytes, timeout: float) -> Ack:
        if self.down:
            raise TransportError("down", "unreachable", device=device, seq=seq, url=self.url)
        self.sent.append((seq, payload))
        try:
            return self.ingestor.submit(payload, device, seq)
        except Rejected as r:
            raise TransportError("rejected", "rejected", device=device, seq=seq, url=self.url,
                                 hes_reason=r.reason) from None

    def close(self) -> None:
        pass


class Rig:
    def __init__(self, root: str, cap: int = MAX_BATCH_BYTES, per_batch: int = 4096) -> None:
        self.store = open_store(os.path.join(root, "hes.db"))
        self.store.add_key(DEVICE, 0, KEY, 0.0)
        self.hes = HesLoop(Ingestor(self.store))
        self.archive = Archive(os.path.join(root, "archive.db")).open()
        self.uplink = Uplink(DEVICE, KEY, self.archive, self.hes, FixedClock(T0 + 400 * 3600),
                             threading.Lock(), rows_per_batch=per_batch, max_batch_bytes=cap)

    def close(self) -> None:
        self.archive.close()
        self.store.close()

    def decoded(self):
        """Every batch the HES got, decoded in order with the codec's own chain."""
        keys = Keyring()
        keys.add(DEVICE, KEY)
        state: CodecState | None = None
        out = []
        for seq, sealed in self.hes.sent:
            b = decode_batch(open_envelope(sealed, keys).payload, state)
            state = CodecState(DEVICE) if b.keyframe or state is None else state
            state.advance(b)
            out.append((seq, sealed, b))
        return out


# -- the table --------------------------------------------------------------------

@pytest.mark.parametrize("key, tier", [
    ("1.0.1.8.0.255", ENERGY), ("1.0.2.8.3.255", ENERGY), ("1.0.3.8.0.255", ENERGY),
    ("1.0.4.8.0.255", ENERGY), ("1.0.15.8.0.255", ENERGY), ("1.1.21.8.0.255", ENERGY),
    ("1.0.1.29.0.255", ENERGY), ("1.0.1.9.0.255", ENERGY), ("0.0.96.3.10.255", ENERGY),
    ("0.0.97.97.0.255", ENERGY),
    ("1.0.32.7.0.255", INSTANT), ("1.0.1.7.0.255", INSTANT), ("1.0.14.7.0.255", INSTANT),
    ("1.0.1.6.0.255", INSTANT), ("0.0.1.0.0.255", INSTANT), ("7.0.3.8.0.255", INSTANT),
    ("voltage", INSTANT), ("1.0.x.8.0.255", INSTANT), ("1.0.1.8", INSTANT),
])
def test_tier_table(key, tier):
    assert register_tier(key) == tier


def test_the_simulated_meter_splits_as_the_issue_says():
    energy, instant = split(MeterModel(1).registers(T0))
    assert set(energy) == {o for o, _ in MODEL_ENERGY + MODEL_STATUS}
    assert set(instant) == {o for o, _ in MODEL_INSTANT}


# -- the archive --------------------------------------------------------------------

def test_archive_keeps_a_row_as_two_parts_and_joins_them(tmp_path):
    arc = Archive(str(tmp_path / "a.db")).open()
    m = MeterModel(2)
    mid = arc.meter_id("bus1", "modbus", "2")
    snap = (T0 + 7, m.registers(T0 + 7))
    prof = m.profile(T0 - 3 * 3600, T0)
    assert arc.store_meter_read(mid, 3600, snap, prof, []) == 1 + len(prof)
    assert arc.store_meter_read(mid, 3600, snap, prof, []) == 0
    kinds = sorted(k for (k,) in arc.conn.execute("SELECT kind FROM reading"))
    assert kinds == [PROFILE] * len(prof) + [SNAPSHOT, SNAPSHOT | INSTANT_PART]
    (s,) = arc.rows(mid, kind=SNAPSHOT)
    assert (s.ts, s.kind, s.values) == (snap[0], SNAPSHOT, snap[1])
    assert [(r.ts, r.values) for r in arc.rows(mid, kind=PROFILE)] == prof
    assert arc.stats()["rows"] == 1 + len(prof)
    arc.close()


def test_unbatched_hands_out_events_then_energy_then_instant(tmp_path):
    arc = Archive(str(tmp_path / "a.db")).open()
    for i in (1, 2):
        m = MeterModel(i)
        mid = arc.meter_id("bus1", "modbus", str(i))
        for h in range(3):
            ts = T0 + h * 3600
            arc.store_meter_read(mid, 3600, (ts + 7, m.registers(ts + 7)), [],
                                 [(ts + 9, 40)] if h == 2 else [])
    rows, events = arc.unbatched(100)
    assert [e[1] for e in events] == [T0 + 2 * 3600 + 9] * 2
    tiers = [bool(r.kind & INSTANT_PART) for r in rows]
    assert tiers == [False] * 6 + [True] * 6
    assert [r.ts for r in rows[:6]] == sorted(r.ts for r in rows[:6])
    # a prefix of the same order
    rows3, events3 = arc.unbatched(5)
    assert events3 == events and rows3 == rows[:3]
    arc.close()


# -- the builder ----------------------------------------------------------------------

def _backlog(arc: Archive, meters: int, hours: int, events_every: int = 5) -> None:
    for i in range(1, meters + 1):
        m = MeterModel(i)
        mid = arc.meter_id("bus1", "modbus", str(i))
        for h in range(hours):
            ts = T0 + h * 3600
            ev = [(ts + 100, 40)] if h % events_every == 0 else []
            arc.store_meter_read(mid, 3600, (ts + 7, m.registers(ts + 7)),
                                 m.profile(ts, ts + 1), ev)


def test_outage_backlog_under_a_lora_cap(tmp_path):
    rig = Rig(str(tmp_path), cap=LORA_BATCH_BYTES)
    _backlog(rig.archive, meters=8, hours=24)
    rig.hes.down = True                     # the link is down: one batch waits
    assert rig.uplink.flush()["acked"] == 0
    seq, first = rig.archive.pending_batch()
    rig.hes.down = False
    rig.uplink = Uplink(DEVICE, KEY, rig.archive, rig.hes, FixedClock(T0 + 400 * 3600),
                        threading.Lock(), max_batch_bytes=LORA_BATCH_BYTES)   # a restart
    out = rig.uplink.flush()
    assert rig.hes.sent[0] == (seq, first)              # the same bytes after the restart
    assert out["acked"] == len(rig.hes.sent) >= 4
    assert all(len(s) <= LORA_BATCH_BYTES for _, s in rig.hes.sent)
    prios = [rig.archive.batch_priority(s) for s, _ in rig.hes.sent]
    assert prios == sorted(prios) and prios[0] == EVENTS and prios[-1] == INSTANT
    # every hour's energy before any hour's instantaneous values
    first_instant = min(s for s, _, b in rig.decoded()
                        if any(register_tier(k) == INSTANT for _, _, v in b.readings for k in v))
    last_energy = max(s for s, _, b in rig.decoded()
                      if any(register_tier(k) == ENERGY for _, _, v in b.readings for k in v))
    assert last_energy <= first_instant
    assert rig.archive.backlog()["rows_unbatched"] == 0
    assert rig.uplink.oversize == 0
    rig.close()


# one meter's row: any registers of the three tiers, ints or decimals
REGS = [o for o, _ in MODEL_ENERGY[:4] + MODEL_STATUS[:1] + MODEL_INSTANT[:5]]
row_values = st.dictionaries(st.sampled_from(REGS),
                             st.one_of(st.integers(0, 10**9),
                                       st.integers(-10**6, 10**6).map(lambda m: m / 10)),
                             max_size=len(REGS))
backlogs = st.lists(st.tuples(st.integers(1, 4), st.integers(0, 47), st.booleans(), row_values,
                              st.lists(st.integers(1, 60), max_size=2)),
                    min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(backlogs, st.one_of(st.integers(MIN_BATCH_BYTES, 3000), st.just(MAX_BATCH_BYTES)),
       st.sampled_from([4096, 7, 2]))
def test_any_backlog_any_cap_once_in_priority_order(backlog, cap, per_batch):
    # on tmpfs when there is one: the examples are about order, not about fsync
    with tempfile.TemporaryDirectory(dir=SHM if os.path.isdir(SHM) else None) as root:
        rig = Rig(root, cap=cap, per_batch=per_batch)
        try:
            _check_backlog(rig, backlog, cap)
        finally:
            rig.close()


def _check_backlog(rig: Rig, backlog, cap: int) -> None:
    arc = rig.archive
    for meter, hour, snapshot, values, codes in backlog:
        mid = arc.meter_id("bus1", "modbus", str(meter))
        ts = T0 + hour * 3600
        arc.store_meter_read(mid, 3600, (ts + 11, values) if snapshot else None,
                             [] if snapshot else [(ts, values)], [(ts + 5, c) for c in codes])
    want_cells = {(arc.serial(r.meter), r.ts, k): v for r in arc.rows() for k, v in r.values.items()}
    want_events = {(arc.serial(m), ts, c) for m, ts, c in arc.events()}
    rig.uplink.flush()
    assert arc.backlog() == {"batches_pending": 0, "rows_unbatched": 0, "events_unbatched": 0,
                             "bytes_pending": 0}
    # the order the archive promises (tier, ts, meter, kind), with each item's batch
    items = [(EVENTS, ts, m, 0, b) for m, ts, _, b in
             arc.conn.execute("SELECT meter, ts, code, batch FROM event")]
    items += [(INSTANT if k & INSTANT_PART else ENERGY, ts, m, k, b) for m, k, ts, b in
              arc.conn.execute("SELECT meter, kind, ts, batch FROM reading")]
    seqs = [b for *_, b in sorted(items)]
    assert seqs == sorted(seqs), "a batch went out of priority order"
    got_cells: dict = {}
    got_events = []
    for seq, sealed, b in rig.decoded():
        assert len(sealed) <= cap
        # a row without registers is an energy part (archive kind 0/1)
        tiers = {EVENTS for _ in b.events[:1]} | {register_tier(k) for _, _, v in b.readings
                                                  for k in v or ["1.0.1.8.0.255"]}
        assert arc.batch_priority(seq) == min(tiers, default=INSTANT)
        for meter, ts, values in b.readings:
            for k, v in values.items():
                assert (meter, ts, k) not in got_cells, "a reading sent twice"
                got_cells[(meter, ts, k)] = v
        got_events += b.events
    assert got_cells == want_cells
    assert sorted(got_events) == sorted(want_events) and len(got_events) == len(want_events)
    hes = {(m, ts, k): v for m, ts, vals in rig.store.rows() for k, v in vals.items()}
    assert hes == want_cells


# -- the option -----------------------------------------------------------------------

BASE = """
[concentrator]
id = "DC-0003"
archive = "a.db"
[[bus]]
port = "/dev/null"
[[bus.meter]]
address = 3
"""
HTTP = '[uplink]\ntransport = "http"\nurl = "http://h:1"\nkey = "%s"\n' % ("cd" * 32)
UDP = '[[mesh.link]]\nkind = "udp"\nlisten = "0.0.0.0:47800"\n'
LORA = '[[mesh.link]]\nkind = "lora"\nchip = "sx1262"\nspi = "/dev/spidev0.0"\n' \
       'busy = "gpiochip0:23"\nreset = "gpiochip0:25"\nsf = 9\n'


def _mesh(role: str, links: str, extra: str = "") -> str:
    up = HTTP if role != "node" else '[uplink]\ntransport = "mesh"\nkey = "%s"\n' % ("cd" * 32)
    return up + extra + '[mesh]\nrole = "%s"\nnetwork_key = "%s"\n%s' % (role, "ab" * 32, links)


@pytest.mark.parametrize("uplink, want", [
    (HTTP, MAX_BATCH_BYTES),
    (_mesh("node", LORA), LORA_BATCH_BYTES),
    (_mesh("auto", UDP + LORA), LORA_BATCH_BYTES),
    (_mesh("node", UDP), MAX_BATCH_BYTES),
    (_mesh("node", 'mtu = 115\n' + UDP), LORA_BATCH_BYTES),
    (_mesh("gateway", LORA), MAX_BATCH_BYTES),        # its own batches go over its uplink
    (HTTP + "max_batch_bytes = 4000\n", 4000),
    (_mesh("node", LORA, "max_batch_bytes = 1024\n"), 1024),
])
def test_max_batch_bytes_default_follows_the_link(uplink, want):
    assert parse(tomllib.loads(BASE + uplink)).max_batch_bytes == want


@pytest.mark.parametrize("value", ["100", "511", "60001", "\"2k\"", "true", "2048.5"])
def test_max_batch_bytes_is_validated(value):
    with pytest.raises(ConfigError) as e:
        parse(tomllib.loads(BASE + HTTP + "max_batch_bytes = %s\n" % value))
    assert e.value.fields["key"] == "uplink.max_batch_bytes"
