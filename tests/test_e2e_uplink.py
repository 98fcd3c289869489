"""End to end over HTTP: simulated meters → agent → hes-lite serve, with
kill -9 of the HES and of the agent during uploads and a 7-day link outage.
Afterwards every archived reading is at the HES exactly once and equal."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.agent_rig import (
    District,
    HesProcess,
    archived_rows,
    backlog,
    drain,
    free_port,
    hes_rows,
    run_agent,
    start_agent,
)

T0 = 1795910400 + 1200


def assert_all_at_hes(archive, hes):
    want = archived_rows(archive)
    got, dup = hes_rows(hes.export_jsonl())
    assert want, "nothing archived"
    assert dup == 0
    missing = [k for k in want if k not in got]
    assert not missing, "missing at HES: %s" % missing[:5]
    unequal = [k for k in want if got[k] != want[k]]
    assert not unequal, "unequal: %s" % [(k, want[k], got[k]) for k in unequal[:3]]
    assert set(got) == set(want)


@pytest.mark.slow
def test_http_kill9_hes_and_agent_during_uploads(tmp_path):
    key = os.urandom(32).hex()
    hes = HesProcess(tmp_path / "hes.db", "DC-TEST", key).start()
    d = District([["modbus"] * 8], t0=T0, speed=1800).start()
    rng = random.Random(5)
    try:
        cfg = d.config(tmp_path / "agent.toml", tmp_path / "archive.db", uplink=hes.url,
                       key=key, transport="http")
        for _ in range(4):
            agent = start_agent(cfg, d.clock)
            time.sleep(rng.uniform(1.0, 3.0))
            hes.kill()                     # the HES dies mid-upload
            time.sleep(rng.uniform(0.2, 1.0))
            hes.start()
            time.sleep(rng.uniform(0.5, 2.0))
            agent.send_signal(signal.SIGKILL)  # and so does the agent
            agent.wait()
        done = run_agent(cfg, d.clock, cycles=0)
        assert done.returncode == 0, done.stderr[-2000:]
        assert_all_at_hes(tmp_path / "archive.db", hes)
        # the cycle results travelled too: every meter's last one, at the HES
        meters = hes.get("/v1/meters")
        assert len(meters) == 8
        assert all(m["last_result"] and m["last_result"]["status"] == "read" for m in meters), meters
    finally:
        d.stop()
        hes.stop()


@pytest.mark.slow
def test_seven_day_link_outage_backfills_in_order(tmp_path):
    key = os.urandom(32).hex()
    port = free_port()
    hes = HesProcess(tmp_path / "hes.db", "DC-TEST", key, port=port)
    # 7 simulated days in about 17 s of agent time: 10 simulated hours a second.
    d = District([["modbus"] * 4], t0=T0, speed=36000).start()
    try:
        cfg = d.config(tmp_path / "agent.toml", tmp_path / "archive.db", uplink=hes.url,
                       key=key, transport="http")
        agent = start_agent(cfg, d.clock)
        time.sleep(7 * 86400 / 36000)       # the link is down: nothing listens on the port
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        waiting = backlog(tmp_path / "archive.db")
        assert waiting["batches_pending"] + (waiting["rows_unbatched"] > 0) >= 1
        hes.start()
        drain(cfg, d.clock, tmp_path / "archive.db")
        assert_all_at_hes(tmp_path / "archive.db", hes)
    finally:
        d.stop()
        hes.stop()
