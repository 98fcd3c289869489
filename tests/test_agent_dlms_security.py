"""An HLS + suite-0 DLMS meter read by the agent across restarts: the
invocation counter is persisted in the archive (with a lease), so the meter —
which refuses a counter that does not grow — keeps answering."""

from __future__ import annotations

from agent.archive import PROFILE, Archive
from agent.clock import ScaledClock
from agent.config import BusConfig, Config, MeterConfig
from agent.cycle import BusCycle
from hil.bus import Bus
from hil.dlms_meter import DlmsMeter
from hil.model import MeterModel
from hil.ports import open_port

EK = "000102030405060708090a0b0c0d0e0f"
AK = "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
T0 = 1795910400 + 1800


def test_hls_meter_across_agent_restarts(tmp_path):
    import drivers.dlms.io as dlms_io

    clock = ScaledClock(T0, 1.0)
    port = open_port("pty")
    model = MeterModel(5, seed=2)
    bus = Bus(port, [DlmsMeter(model, 5, clock.now, auth="hls", ek=bytes.fromhex(EK),
                               ak=bytes.fromhex(AK))], baud=115200, pace=False).start()
    try:
        meter = MeterConfig(address="5", protocol="dlms", auth="hls", ek=EK, ak=AK)
        cfg = Config(concentrator_id="DC", archive=str(tmp_path / "a.db"), retries=1,
                     transport="none", initial_backfill=6 * 3600,
                     buses=(BusConfig("bus1", port.agent_path, 115200, "dlms", False, 0.5,
                                      (meter,)),))
        for restart in range(3):
            dlms_io.COUNTERS.clear()          # a new agent process remembers nothing
            arc = Archive(cfg.archive).open()
            res = BusCycle(cfg.buses[0], cfg, arc, clock).run(arc.begin_cycle(clock.now()))
            assert [r.status for r in res] == ["read"], (restart, res[0].error)
            stored = int(arc.meta("dlms_ic:%d" % res[0].meter).decode())
            assert stored > 1
            rows = list(arc.rows(res[0].meter, kind=PROFILE))
            assert rows and all(r.values == model.profile_row(r.ts) for r in rows)
            arc.close()
    finally:
        bus.stop()
        port.close()
