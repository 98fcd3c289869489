"""Bytes on the wire per meter-hour: the batch codec + envelope against JSON
compressed with zstd (levels 3 and 19), for a district of 64 meters read
hourly (27 registers each, hil.model) over 45 days, every batch assumed
acknowledged. Also the energy-and-status-only figure (12 energy + 2 status
registers) and whether zstd on top of our batches would help.

Every message is sealed in the same envelope (AES-128-CCM, 8-byte tag), so
the figures compare like with like. Prints JSON.

    .venv/bin/python bench/uplink_size.py [--meters 64] [--days 45] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zstandard  # noqa: E402

from agent.batch import Batch, CodecState, encode_batch  # noqa: E402
from agent.envelope import MemoryBootStore, Sealer  # noqa: E402
from hil.district import district_readings  # noqa: E402
from hil.model import ENERGY, HOUR, ORIGIN, STATUS, MeterModel  # noqa: E402

TARGET = 18.0
ENERGY_STATUS = {o for o, _ in ENERGY + STATUS}
ROOT = bytes(range(32))


class Run:
    """One codec run (one register selection) and its JSON baselines."""

    def __init__(self, name: str, device: str) -> None:
        self.name = name
        self.device = device
        self.sealer = Sealer(device, ROOT, MemoryBootStore())
        self.json_sealer = Sealer(device, ROOT, MemoryBootStore())
        self.state: CodecState | None = None
        self.z3 = zstandard.ZstdCompressor(level=3)
        self.z19 = zstandard.ZstdCompressor(level=19)
        self.bytes = {"batch": 0, "batch_zstd19": 0, "json": 0, "json_zstd3": 0,
                      "json_zstd19": 0}
        self.keyframes: list[int] = []
        self.deltas: list[int] = []
        self.seconds = 0.0

    def hour(self, seq: int, created: int, rows: list[Any], events: list[Any],
             statuses: list[Any]) -> None:
        t = time.perf_counter()
        batch = Batch(self.device, seq, created, rows, events, statuses)
        payload = encode_batch(batch, self.state)
        sealed = self.sealer.seal(payload)
        st = self.state if self.state is not None else CodecState(self.device)
        st.advance(batch)
        self.state = st
        self.seconds += time.perf_counter() - t
        (self.keyframes if batch.keyframe else self.deltas).append(len(sealed))
        self.bytes["batch"] += len(sealed)
        self.bytes["batch_zstd19"] += len(self.sealer.seal(self.z19.compress(payload)))
        doc = json.dumps({"device": self.device, "seq": seq, "created": created,
                          "readings": [{"meter": m, "ts": ts, "values": v} for m, ts, v in rows],
                          "events": events, "statuses": statuses},
                         separators=(",", ":")).encode()
        self.bytes["json"] += len(self.json_sealer.seal(doc[:65535])) + max(0, len(doc) - 65535)
        self.bytes["json_zstd3"] += len(self.json_sealer.seal(self.z3.compress(doc)))
        self.bytes["json_zstd19"] += len(self.json_sealer.seal(self.z19.compress(doc)))

    def report(self, meter_hours: int) -> dict[str, Any]:
        per = {k: round(v / meter_hours, 2) for k, v in self.bytes.items()}
        return {
            "registers": self.name,
            "bytes_per_meter_hour": per["batch"],
            "json_zstd3_bytes_per_meter_hour": per["json_zstd3"],
            "json_zstd19_bytes_per_meter_hour": per["json_zstd19"],
            "json_plain_bytes_per_meter_hour": per["json"],
            "batch_then_zstd19_bytes_per_meter_hour": per["batch_zstd19"],
            "total_bytes": self.bytes["batch"],
            "keyframes": len(self.keyframes),
            "keyframe_bytes_mean": round(sum(self.keyframes) / max(1, len(self.keyframes))),
            "delta_bytes_mean": round(sum(self.deltas) / max(1, len(self.deltas))),
            "encode_seal_advance_ms_per_batch": round(1000 * self.seconds
                                                      / max(1, len(self.keyframes)
                                                            + len(self.deltas)), 2),
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meters", type=int, default=64)
    ap.add_argument("--days", type=int, default=45)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    device = "dc-000001"
    full, energy = Run("all 27", device), Run("energy + status (14)", device)
    models = {MeterModel(i, a.seed).serial: MeterModel(i, a.seed) for i in range(a.meters)}
    hours: dict[int, list[Any]] = {}
    for row in district_readings(a.meters, a.days, a.seed, ORIGIN):
        hours.setdefault(row[1], []).append(row)
        if len(hours[row[1]]) < a.meters:
            continue
        ts = row[1]
        rows = hours.pop(ts)
        seq = (ts - ORIGIN) // HOUR + 1
        events = [[m, t, c] for m in models for t, c in models[m].events(ts - HOUR + 1, ts)]
        statuses = [[m, "ok", None] for m, _, _ in rows]
        full.hour(seq, ts + 20, rows, events, statuses)
        energy.hour(seq, ts + 20, [(m, t, {o: v for o, v in vals.items() if o in ENERGY_STATUS})
                                   for m, t, vals in rows], events, statuses)
    meter_hours = a.meters * a.days * 24
    out = {
        "bench": "uplink_size",
        "meters": a.meters, "days": a.days, "hourly_batches": a.days * 24,
        "meter_hours": meter_hours,
        "envelope_overhead_bytes_per_batch": 15 + len(device) + 8,
        "target_bytes_per_meter_hour": TARGET,
        "full": full.report(meter_hours),
        "energy_and_status": energy.report(meter_hours),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out["meets_target"] = out["full"]["bytes_per_meter_hour"] <= TARGET
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
