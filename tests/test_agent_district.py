"""64 simulated meters of mixed protocols on one RS-485 bus (a pty) in
accelerated time: 48 simulated hours, every hourly value of every meter
archived exactly once and equal to the simulator's; then the agent is stopped
for 10 simulated days and the gap is backfilled from the meters' own load
profiles without a duplicate row."""

from __future__ import annotations

import time

import pytest

from agent.archive import PROFILE, Archive
from tests.agent_rig import District, run_agent, start_agent

T0 = 1795910400 + 1800          # 2026-11-29T00:30Z
PROTOCOLS = (["dlms", "iec62056-21", "modbus"] * 22)[:64]


def check_archive(path, district, since, until):
    arc = Archive(str(path)).open()
    try:
        assert arc.integrity_check() == ["ok"]
        dup = arc.conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM reading GROUP BY meter, "
                               "kind, slot HAVING COUNT(*) > 1)").fetchone()[0]
        assert dup == 0
        hours = list(range(since, until + 1, 3600))
        for _, proto, addr, model in district.meters:
            mid = arc.meter_id("bus1", proto, str(addr))
            rows = {r.ts: r.values for r in arc.rows(mid, start=since, end=until, kind=PROFILE)}
            missing = [h for h in hours if h not in rows]
            assert not missing, "%s meter %d misses %d hours, e.g. %s" % (
                proto, addr, len(missing), missing[:3])
            for ts in hours:
                assert rows[ts] == model.profile_row(ts), (proto, addr, ts)
        return arc.stats()
    finally:
        arc.close()


@pytest.mark.slow
def test_64_mixed_meters_48_hours_then_10_day_outage(tmp_path):
    speed = 3600.0                                   # one simulated hour per second
    d = District([PROTOCOLS], t0=T0, speed=speed).start()
    try:
        # First contact fetches 4 days of profile: on a loaded machine the first
        # cycle may reach the last meters a simulated day or more after T0.
        cfg = d.config(tmp_path / "agent.toml", tmp_path / "archive.db", backfill=4 * 86400)
        agent = start_agent(cfg, d.clock)
        time.sleep(48 * 3600 / speed)
        agent.terminate()
        assert agent.wait(timeout=60) == 0
        first = (T0 // 3600 + 1) * 3600
        end48 = (int(d.clock.now()) // 3600 - 1) * 3600
        assert end48 - first >= 46 * 3600
        done = run_agent(cfg, d.clock, cycles=0, timeout=300)  # a last cycle collects the rest
        assert done.returncode == 0, done.stderr[-2000:]
        check_archive(tmp_path / "archive.db", d, first, end48)

        # The concentrator is off for 10 simulated days.
        off_from = d.clock.now()
        d.clock.t0 += 10 * 86400                     # jump the shared clock ahead
        back = (int(d.clock.now()) // 3600) * 3600   # what every meter holds when we return
        done = run_agent(cfg, d.clock, cycles=0, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        st = check_archive(tmp_path / "archive.db", d, first, back)
        assert back - off_from >= 10 * 86400 - 7200
        assert st["meters"] == 64
    finally:
        d.stop()
