"""The daemon's defined behaviour under bad conditions: a corrupt archive is
quarantined and rebuilt from the meters' memory, an unreadable config is a
clear error, a full disk loses nothing the meters hold, SIGTERM stops
cleanly; and the field engineer's `wum status` / `wum archive`."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time

from agent.archive import PROFILE, Archive
from agent.config import load
from agent.cycle import BusCycle
from tests.agent_rig import WUM, District, run_agent, start_agent

T0 = 1795910400 + 1800


def test_unreadable_config_is_a_clear_error(tmp_path):
    p = tmp_path / "agent.toml"
    p.write_text("[concentrator]\nid = 3\narchive = 'a.db'\n[[bus]]\nport = 'x'\ndiscover = true\n")
    r = subprocess.run([WUM, "run", "--config", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "concentrator.id" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([WUM, "run", "--config", str(tmp_path / "nope.toml")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "cannot read config" in r.stderr


def test_corrupt_archive_is_quarantined_and_backfilled(tmp_path):
    d = District([["modbus"] * 3], t0=T0, speed=60).start()
    try:
        arc_path = tmp_path / "archive.db"
        cfg = d.config(tmp_path / "agent.toml", arc_path)
        assert run_agent(cfg, d.clock).returncode == 0
        # Scribble over the middle of the file: pages the integrity check reads.
        raw = bytearray(arc_path.read_bytes())
        for i in range(4096, len(raw) - 100, 997):
            raw[i] ^= 0x5A
        arc_path.write_bytes(bytes(raw))
        r = run_agent(cfg, d.clock)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "corrupt" in r.stderr
        kept = list(tmp_path.glob("archive.db.corrupt-*"))
        assert kept, "the corrupt archive must be kept, not deleted"
        arc = Archive(str(arc_path)).open()
        assert arc.integrity_check() == ["ok"]
        for _, _, addr, model in d.meters:
            rows = list(arc.rows(arc.meter_id("bus1", "modbus", str(addr)), kind=PROFILE))
            assert len(rows) >= 2 and all(r.values == model.profile_row(r.ts) for r in rows)
        arc.close()
    finally:
        d.stop()


def test_full_disk_loses_nothing_the_meters_hold(tmp_path):
    d = District([["modbus"] * 3], t0=T0, speed=1.0).start()
    try:
        cfg = load(d.config(tmp_path / "agent.toml", tmp_path / "archive.db"))
        arc = Archive(cfg.archive).open()
        for _, _, addr, model in d.meters:
            arc.set_identity(arc.meter_id("bus1", "modbus", str(addr)), model.serial, "", "")
        pages = arc.conn.execute("PRAGMA page_count").fetchone()[0]
        arc.conn.execute("PRAGMA max_page_count=%d" % pages)   # the disk is full…
        for i in range(10000):                                  # …to the last byte
            try:
                arc.conn.execute("INSERT INTO reading VALUES (999, 0, ?, ?, ?, NULL)",
                                 (i, i, b"x" * 64))
            except sqlite3.OperationalError:
                break
        cyc = BusCycle(cfg.buses[0], cfg, arc, d.clock)
        res = cyc.run(0)
        assert all(r.status == "failed" and "full" in (r.error or "") for r in res), res
        arc.conn.execute("PRAGMA max_page_count=1073741823")        # space again
        res = cyc.run(arc.begin_cycle(d.clock.now()))
        assert all(r.status == "read" for r in res), [r.error for r in res]
        for _, _, addr, model in d.meters:
            rows = list(arc.rows(arc.meter_id("bus1", "modbus", str(addr)), kind=PROFILE))
            assert rows and all(r.values == model.profile_row(r.ts) for r in rows)
        arc.close()
    finally:
        d.stop()


def test_sigterm_stops_cleanly_and_status_reports(tmp_path):
    d = District([["modbus"] * 4], t0=T0, speed=600, faults="dead@4").start()
    try:
        cfg = d.config(tmp_path / "agent.toml", tmp_path / "archive.db")
        p = start_agent(cfg, d.clock)
        time.sleep(4)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        st = subprocess.run([WUM, "status", "--config", str(cfg), "--json"],
                            capture_output=True, text=True, check=True)
        s = json.loads(st.stdout)
        by_addr = {m["address"]: m for m in s["meters"]}
        assert by_addr["1"]["status"] == "read" and by_addr["4"]["status"] == "failed"
        assert by_addr["4"]["error"]
        assert [f["address"] for f in s["failures"]] == ["4"]
        assert s["archive"]["rows"] > 0 and s["archive"]["schema"] >= 1
        human = subprocess.run([WUM, "status", "--config", str(cfg)], capture_output=True,
                               text=True, check=True).stdout
        assert "backlog" in human and "failed" in human
        serial = by_addr["2"]["serial"]
        out = subprocess.run([WUM, "archive", "export", "--config", str(cfg), "--meter", serial,
                              "--format", "csv"], capture_output=True, text=True, check=True)
        lines = out.stdout.splitlines()
        assert lines[0] == "meter,ts,kind,obis,value" and len(lines) > 10
        assert all(line.startswith(serial + ",") for line in lines[1:])
    finally:
        d.stop()
