"""Crash safety: SIGKILL the agent at >= 100 random instants during cycles and
archive writes, restart it each time, and prove the archive consistent
(integrity check), complete (every hourly row the meters still hold) and free
of duplicates."""

from __future__ import annotations

import random
import signal
import time

import pytest

from agent.archive import PROFILE, Archive
from tests.agent_rig import District, run_agent, start_agent

T0 = 1795910400 + 1800  # 2026-11-29T00:30Z


@pytest.mark.slow
def test_sigkill_at_100_random_instants(tmp_path):
    # 1 simulated hour per 2 real seconds: every restart finds new hours to read.
    d = District([["modbus"] * 8], t0=T0, speed=1800).start()
    try:
        cfg = d.config(tmp_path / "agent.toml", tmp_path / "archive.db")
        rng = random.Random(20261128)
        kills = 0
        for _ in range(100):
            p = start_agent(cfg, d.clock)
            time.sleep(rng.uniform(0.15, 1.2))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
            p.wait(timeout=10)
        assert kills >= 100
        # The hours completed before the last run starts must all be there; at
        # 1800x a loaded machine may finish another hour while that run is
        # reading, which it may or may not catch.
        before = d.clock.now()
        done = run_agent(cfg, d.clock, cycles=0)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        d.stop()
    arc = Archive(str(tmp_path / "archive.db")).open()
    assert arc.integrity_check() == ["ok"]
    dup = arc.conn.execute("SELECT COUNT(*) FROM (SELECT meter, kind, slot FROM reading "
                           "GROUP BY meter, kind, slot HAVING COUNT(*) > 1)").fetchone()[0]
    assert dup == 0
    for _, _, addr, model in d.meters:
        mid = arc.meter_id("bus1", "modbus", str(addr))
        rows = [r for r in arc.rows(mid, kind=PROFILE)]
        assert rows, "meter %d has no rows" % addr
        ts = [r.ts for r in rows]
        # Nothing the meter still holds is missing: hourly rows from the first
        # archived one up to at least the last hour completed before the last
        # run, without a gap.
        assert ts[-1] >= int(before) // 3600 * 3600, "meter %d: stale %d" % (addr, ts[-1])
        want = list(range(ts[0], ts[-1] + 1, 3600))
        assert ts == want, "meter %d: missing %s" % (addr, sorted(set(want) - set(ts))[:5])
        for r in rows:
            assert r.values == model.profile_row(r.ts)
    arc.close()
