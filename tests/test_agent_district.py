"""64 simulated meters of mixed protocols on one RS-485 bus (a pty): first
contact in real time, then 48 simulated hours at 3600x, every hourly value of every meter
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
@pytest.mark.timeout(900)
def test_64_mixed_meters_48_simulated_hours(tmp_path):
    d = District([PROTOCOLS], t0=T0, speed=1.0).start()
    try:
        cfg = d.config(tmp_path / "agent.toml", tmp_path / "archive.db")
        # First contact in real time: every meter is read once (a day of backfill),
        # however long 64 meters take on this machine...
        done = run_agent(cfg, d.clock, cycles=0, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        # ...then one simulated hour per second: from here on nothing may be missed,
        # whatever the cycles cost, because each meter is read from its last row.
        rebase(d.clock, 3600.0)
        agent = start_agent(cfg, d.clock)
        time.sleep(48)
        agent.terminate()
        assert agent.wait(timeout=120) == 0
        rebase(d.clock, 1.0)                      # real time again: exact checks
        first = (T0 // 3600 + 1) * 3600
        end48 = (int(d.clock.now()) // 3600) * 3600
        assert end48 - first >= 46 * 3600
        done = run_agent(cfg, d.clock, cycles=0, timeout=600)  # a last cycle collects the rest
        assert done.returncode == 0, done.stderr[-2000:]
        st = check_archive(tmp_path / "archive.db", d, first, end48)
        assert st["meters"] == 64
    finally:
        d.stop()


@pytest.mark.slow
def test_ten_day_stop_is_backfilled_from_the_meters(tmp_path):
    d = District([PROTOCOLS[:9]], t0=T0, speed=1.0).start()
    try:
        cfg = d.config(tmp_path / "agent.toml", tmp_path / "archive.db")
        done = run_agent(cfg, d.clock, cycles=0)
        assert done.returncode == 0, done.stderr[-2000:]
        first = (int(d.clock.now()) // 3600) * 3600
        check_archive(tmp_path / "archive.db", d, first - 12 * 3600, first)
        # The concentrator is off for 10 simulated days.
        d.clock.t0 += 10 * 86400
        back = (int(d.clock.now()) // 3600) * 3600   # what every meter holds when we return
        done = run_agent(cfg, d.clock, cycles=0, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        check_archive(tmp_path / "archive.db", d, first, back)
        assert back - first >= 10 * 86400
    finally:
        d.stop()


def rebase(clock, speed: float) -> None:
    """Change the shared simulated clock's speed from now on (no jump)."""
    now = clock.now()
    clock.t0, clock.w0, clock.speed = now, time.time(), speed
