"""How fast the radio medium (hil/radio.py) runs a district: N nodes on a
square grid, every node listening between its own frames (``relisten``) and
sending frames at random (Poisson) at a rate like a mesh's (its own batch in
fragments plus relayed ones). Prints JSON: frames, deliveries, collisions,
wall time, frames per second, and the wall time projected for 48 simulated
hours at that rate. The machine may be shared: figures are indicative.

    .venv/bin/python bench/radio_medium.py [--nodes 300] [--hours 1] [--frames-per-hour 60]
        [--sf 9] [--kind lora|wifi] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hil.radio import AirParams, MediumError, RadioMedium  # noqa: E402

HOUR_US = 3600 * 10**6


def run(nodes: int, hours: float, rate: float, sf: int, kind: str, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    side = int(math.ceil(math.sqrt(nodes)))
    spacing = 250.0 if kind == "lora" else 60.0
    m = RadioMedium(seed=seed, frame_loss=0.1,
                    path_loss={"exponent": 3.0, "ref_loss_db": 40, "shadowing_db": 4},
                    default_power_dbm=14 if kind == "lora" else 20)
    params = AirParams(kind, freq_hz=869525000 if kind == "lora" else 2412000000, sf=sf)
    names = ["DC-%04d" % i for i in range(nodes)]
    for i, name in enumerate(names):
        m.add_node(name, (i % side) * spacing, (i // side) * spacing)
        m.listen(name, params)
    end = int(hours * HOUR_US)
    mean_gap = HOUR_US / rate
    sent = [0]

    def send(name: str) -> None:
        try:
            m.transmit(name, bytes(rng.randrange(40, 222)), params, relisten=True)
            sent[0] += 1
        except MediumError:            # still transmitting the previous one: skip
            pass
        nxt = m.now_us + int(rng.expovariate(1.0) * mean_gap)
        if nxt < end:
            m.schedule(nxt, send, name)

    for name in names:
        m.schedule(int(rng.random() * mean_gap), send, name)
    t0 = time.perf_counter()
    m.run_until(end)
    wall = time.perf_counter() - t0
    c = m.counters
    return {"nodes": nodes, "kind": kind, "sf": sf, "sim_hours": hours,
            "frames": c["frames"], "delivered": c["delivered"], "collisions": c["collisions"],
            "random_loss": c["random_loss"], "interrupted": c["interrupted"],
            "wall_s": round(wall, 3), "frames_per_s": round(c["frames"] / wall, 1),
            "projected_48h_s": round(wall * 48 / hours, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=300)
    ap.add_argument("--hours", type=float, default=0.5)
    ap.add_argument("--frames-per-hour", type=float, default=60.0)
    ap.add_argument("--sf", type=int, default=9)
    ap.add_argument("--kind", choices=("lora", "wifi"), default="lora")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    print(json.dumps(run(a.nodes, a.hours, a.frames_per_hour, a.sf, a.kind, a.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
