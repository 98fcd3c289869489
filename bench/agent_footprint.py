"""Agent footprint with 64 simulated meters (issue 4 targets).

Measures, in one run on this machine:
- peak RSS of `wum run` reading 64 meters (one bus, pty, baud-paced simulator);
- CPU seconds per hourly cycle (user+sys of the agent process; the bus wait is
  not CPU time), from runs of 1 and 4 cycles side by side;
- archive bytes per meter-day with the full register set (27 values hourly
  snapshot + the hourly load profile) over 45 days for 64 meters;
- time to export one meter's 45 days as CSV and JSON through `wum archive export`.
Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.archive import Archive  # noqa: E402
from hil.model import MeterModel  # noqa: E402
from tests.agent_rig import WUM, District  # noqa: E402

METERS = 64
DAYS = 45
T0 = 1795910400 + 3000


def agent_run(cfg: Path, spec: str, cycles: int) -> tuple[float, float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    p = subprocess.run([WUM, "run", "--config", str(cfg), "--clock", spec, "--cycles",
                        str(cycles)], capture_output=True, text=True)
    wall = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(p.stderr[-2000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, after.ru_maxrss / 1024.0, wall


def cycles_measure(work: Path) -> dict[str, float]:
    # 1 simulated hour per 10 real seconds, so each scheduled cycle is one hour.
    d = District([["modbus"] * METERS], t0=T0, speed=360, baud=38400).start()
    try:
        for b in d.buses:
            b.pace = True
        out = {}
        cpus1, cpus4, rss = [], [], 0.0
        for rep in range(2):
            cfg = d.config(work / ("a%d.toml" % rep), work / ("a%d.db" % rep))
            c1, r1, w1 = agent_run(cfg, d.clock.spec(), 0)
            cfg = d.config(work / ("b%d.toml" % rep), work / ("b%d.db" % rep))
            c4, r4, w4 = agent_run(cfg, d.clock.spec(), 3)
            cpus1.append(c1)
            cpus4.append(c4)
            rss = max(rss, r1, r4)
        out["cpu_s_first_cycle_incl_startup_and_backfill"] = statistics.median(cpus1)
        out["cpu_s_per_hourly_cycle"] = max(0.0, (statistics.median(cpus4)
                                                  - statistics.median(cpus1)) / 3)
        out["peak_rss_mb"] = rss
        out["bus_baud"] = 38400
        return out
    finally:
        d.stop()


def archive_measure(work: Path) -> dict[str, float]:
    path = work / "full.db"
    arc = Archive(str(path)).open()
    start = (T0 // 86400 - DAYS) * 86400
    for i in range(1, METERS + 1):
        m = MeterModel(i, seed=5)
        mid = arc.meter_id("bus1", "dlms", str(i))
        arc.set_identity(mid, m.serial, "WUM", "sim")
        for day in range(DAYS):
            d0 = start + day * 86400
            snaps = [(d0 + h * 3600 + 7, m.registers(d0 + h * 3600 + 7)) for h in range(24)]
            prof = m.profile(d0, d0 + 23 * 3600)
            # one transaction per meter-day (a real cycle writes one per meter-hour)
            for j, s in enumerate(snaps):
                arc.store_meter_read(mid, 3600, s, prof[j:j + 1], [])
    arc.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    arc.close()
    size = path.stat().st_size
    cfg = work / "export.toml"
    cfg.write_text('[concentrator]\nid="X"\narchive="%s"\n[uplink]\ntransport="none"\n'
                   '[[bus]]\nport="/dev/null"\ndiscover=true\n' % path)
    serial = MeterModel(7, seed=5).serial
    times = {}
    for fmt in ("csv", "json"):
        ts = []
        for _ in range(3):
            t = time.monotonic()
            subprocess.run([WUM, "archive", "export", "--config", str(cfg), "--meter", serial,
                            "--format", fmt, "-o", str(work / ("out." + fmt))], check=True)
            ts.append(time.monotonic() - t)
        times["export_one_meter_45d_%s_s" % fmt] = statistics.median(ts)
    return {"archive_bytes_64_meters_45_days": size,
            "archive_mb_64_meters_45_days": size / 1e6,
            "archive_bytes_per_meter_day": size / (METERS * DAYS),
            "values_per_meter_hour": 27 + 4, **times}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        res = {"bench": "agent_footprint", "meters": METERS, "machine_cpus": os.cpu_count()}
        res.update(archive_measure(work))
        res.update(cycles_measure(work))
        res["targets"] = {"peak_rss_mb": 40, "cpu_s_per_hourly_cycle": 1.0,
                          "archive_mb_64_meters_45_days": 32}
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
