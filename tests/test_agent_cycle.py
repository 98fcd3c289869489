"""A bus cycle against simulated meters on a pseudo-terminal: every meter
read, profile rows equal to the simulator's model, backfill without
duplicates, a dead meter costing no more than its timeout × retries."""

from __future__ import annotations

import time

import pytest

from agent.archive import PROFILE, SNAPSHOT, Archive
from agent.clock import ScaledClock
from agent.config import BusConfig, Config, MeterConfig
from agent.cycle import BusCycle
from hil.bus import Bus, FaultSpec
from hil.modbus_meter import ModbusMeter
from hil.model import MeterModel
from hil.ports import open_port

T0 = 1795910400  # 2026-11-29T00:00:00Z


def make_cfg(tmp_path, port, n, timeout=0.3, retries=1):
    meters = tuple(MeterConfig(address=str(i), protocol="modbus", profile="generic")
                   for i in range(1, n + 1))
    bus = BusConfig(name="bus1", port=port, baud=115200, protocol="modbus", discover=False,
                    timeout=timeout, meters=meters)
    return Config(concentrator_id="DC-T", archive=str(tmp_path / "a.db"), buses=(bus,),
                  retries=retries, initial_backfill=6 * 3600, transport="none")


@pytest.fixture
def district():
    clock = ScaledClock(T0 + 5, 1.0)
    port = open_port("pty")
    models = [MeterModel(i, seed=7) for i in range(1, 7)]
    meters = [ModbusMeter(m, m.index, clock.now) for m in models]
    bus = Bus(port, meters, baud=115200, pace=True,
              faults=FaultSpec.parse("dead@6", seed=1)).start()
    yield clock, port, models, bus
    bus.stop()
    port.close()


def test_cycle_reads_every_live_meter_and_backfills_once(tmp_path, district):
    clock, port, models, bus = district
    cfg = make_cfg(tmp_path, port.agent_path, 6)
    arc = Archive(cfg.archive).open()
    cyc = BusCycle(cfg.buses[0], cfg, arc, clock)
    cid = arc.begin_cycle(clock.now())
    t = time.monotonic()
    results = cyc.run(cid)
    elapsed = time.monotonic() - t
    status = {r.address: r.status for r in results}
    assert status == {"1": "read", "2": "read", "3": "read", "4": "read", "5": "read",
                      "6": "failed"}, [r.error for r in results]
    dead = results[-1]
    # The dead meter costs at most timeout x (retries + 1) per attempted request.
    assert dead.duration < cfg.buses[0].timeout * (cfg.retries + 1) * 2 + 0.5
    for m in models[:5]:
        mid = arc.meter_id("bus1", "modbus", str(m.index))
        assert arc.serial(mid) == m.serial
        rows = list(arc.rows(mid, kind=PROFILE))
        assert rows, "no profile rows for meter %d" % m.index
        for r in rows:
            assert r.values == m.profile_row(r.ts), r.ts
        (snap,) = arc.rows(mid, kind=SNAPSHOT)
        assert set(snap.values) >= {"1.0.1.8.0.255", "1.0.32.7.0.255"}
    # A second cycle stores nothing twice.
    before = arc.stats()["rows"]
    cid2 = arc.begin_cycle(clock.now())
    cyc.run(cid2)
    after = arc.stats()["rows"]
    assert after - before <= 5   # at most one new snapshot per live meter (same hour slot)
    keys = arc.conn.execute("SELECT meter, kind, slot, COUNT(*) FROM reading "
                            "GROUP BY meter, kind, slot HAVING COUNT(*) > 1").fetchall()
    assert keys == []
    assert elapsed < 30
    arc.close()
