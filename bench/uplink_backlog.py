"""An outage backlog through the agent's real uplink under a batch size cap:
how many batches, how full, what building them costs, and when the energy
registers are through (issue 10: events, then energy registers, then
instantaneous values; LoRa at SF9 under the 1 % duty cycle carries ~7 kB per
node and hour).

A concentrator of ``--meters`` simulated meters (27 registers hourly and the
hourly load profile, one event every 5 h per meter) archives ``--hours`` hours
with the link down; then ``agent.uplink.Uplink`` drains it into a real
``hes_lite`` ingest pipeline (SQLite on tmpfs when there is one, so the figure
is the build's, not the disk's). Prints one JSON object per cap.

    .venv/bin/python bench/uplink_backlog.py [--meters 64] [--hours 72] [--caps 2048,60000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.archive import Archive  # noqa: E402
from agent.clock import SystemClock  # noqa: E402
from agent.priority import ENERGY, EVENTS, INSTANT  # noqa: E402
from agent.transport import Ack, Transport  # noqa: E402
from agent.uplink import Uplink  # noqa: E402
from hes_lite.ingest import Ingestor  # noqa: E402
from hes_lite.store import open_store  # noqa: E402
from hil.model import MeterModel  # noqa: E402

DEVICE = "DC-BENCH"
KEY = bytes(range(32))
LORA_BYTES_PER_HOUR = 7000


class Clock(SystemClock):
    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


class Hes(Transport):
    url = "loop://hes"

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def send(self, device: str, seq: int, payload: bytes, timeout: float) -> Ack:
        return self.ingestor.submit(payload, device, seq)

    def close(self) -> None:
        pass


def fill(arc: Archive, meters: int, hours: int, t0: int) -> None:
    for i in range(1, meters + 1):
        m = MeterModel(i, seed=7)
        mid = arc.meter_id("bus1", "dlms", str(i))
        arc.set_identity(mid, m.serial, "WUM", "sim")
        for h in range(hours):
            ts = t0 + h * 3600
            ev = [(ts + 120, 40)] if (h + i) % 5 == 0 else []
            arc.store_meter_read(mid, 3600, (ts + 7, m.registers(ts + 7)), m.profile(ts, ts + 1),
                                 ev)


def run(meters: int, hours: int, cap: int, root: str) -> dict[str, Any]:
    t0 = 1795910400 - 1795910400 % 3600
    store = open_store(os.path.join(root, "hes-%d.db" % cap), durable=False)
    store.add_key(DEVICE, 0, KEY, 0.0)
    arc = Archive(os.path.join(root, "archive-%d.db" % cap)).open()
    arc.conn.execute("PRAGMA synchronous=OFF")
    fill(arc, meters, hours, t0)
    up = Uplink(DEVICE, KEY, arc, Hes(Ingestor(store)), Clock(t0 + (hours + 1) * 3600),
                threading.Lock(), max_bytes_per_flush=1 << 40, max_batch_bytes=cap)
    encodes: list[int] = []
    build_s: list[float] = []
    n = [0]
    encode, build = up._encode, up.build

    def counted_encode(seq: int, k: int) -> Any:
        n[0] += 1
        return encode(seq, k)

    def timed_build() -> Any:
        n[0] = 0
        t = time.perf_counter()
        out = build()
        if out is not None:
            build_s.append(time.perf_counter() - t)
            encodes.append(n[0])
        return out
    up._encode = counted_encode  # type: ignore[method-assign]
    up.build = timed_build  # type: ignore[method-assign]
    t = time.perf_counter()
    up.flush()
    drain_s = time.perf_counter() - t
    sizes, tiers = [], []
    for size, prio in arc.conn.execute("SELECT LENGTH(payload), priority FROM batch ORDER BY seq"):
        sizes.append(int(size))
        tiers.append(int(prio))
    cum = 0
    through: dict[str, int] = {}
    for size, tier in zip(sizes, tiers, strict=True):
        cum += size
        through[str(tier)] = cum
    arc.close()
    store.close()
    out: dict[str, Any] = {
        "bench": "uplink_backlog", "meters": meters, "outage_hours": hours,
        "max_batch_bytes": cap, "batches": len(sizes), "bytes": sum(sizes),
        "batch_bytes": {"min": min(sizes), "mean": round(statistics.mean(sizes)),
                        "max": max(sizes)},
        "over_cap": sum(s > cap for s in sizes), "oversize_items": up.oversize,
        "encodes_per_batch": {"mean": round(statistics.mean(encodes), 2), "max": max(encodes)},
        "build_s_per_batch": {"mean": round(statistics.mean(build_s), 4),
                              "max": round(max(build_s), 4)},
        "drain_s": round(drain_s, 2),
        "priorities_in_order": tiers == sorted(tiers),
        "bytes_until": {"events": through.get(str(EVENTS), 0),
                        "energy": through.get(str(ENERGY), through.get(str(EVENTS), 0)),
                        "all": cum},
    }
    out["lora_sf9_hours_until"] = {k: round(v / LORA_BYTES_PER_HOUR, 1)
                                   for k, v in out["bytes_until"].items()}
    out["instant_batches"] = sum(t == INSTANT for t in tiers)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meters", type=int, default=64)
    ap.add_argument("--hours", type=int, default=72)
    ap.add_argument("--caps", default="2048,60000")
    a = ap.parse_args()
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as root:
        for cap in (int(c) for c in a.caps.split(",")):
            print(json.dumps(run(a.meters, a.hours, cap, root)), flush=True)


if __name__ == "__main__":
    main()
