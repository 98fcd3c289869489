"""The district scenarios of issue 10 through ``wum-hil mesh-sim``'s engine,
and the capacity the simulator finds: concentrators per gateway at SF7 and
SF9 before the read-rate target breaks.

For each built-in scenario (wifi-district, lora-district, gateway-failover)
it prints the contract's JSON (mesh and flooding baseline) with what the
targets need beside it: batches within the deadline, the LoRa district's
24-hour read rate and its airtime against the baseline's, the failover's
reroute time, CPU seconds. Then a search over district size: one gateway
amid N concentrators on the lora-district's grid (350 m, 64 meters each,
10 % frame loss, 869.525 MHz) at a fixed SF, N doubled until the read rate
within 4 hours falls under 99.5 %, then bisected.

    python bench/mesh_district.py [--seed 1] [--only NAME ...] [--no-capacity]
                                  [--capacity-only] [--capacity-hours 12]
                                  [--max-nodes 480] [--no-baseline]

Prints one JSON object: {"scenarios": {...}, "capacity": {...}, "python": ...}.
Long: ~10-20 CPU minutes per district scenario (the flooding baseline is the
dearest), minutes per capacity step; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hil.mesh_sim import run_scenario  # noqa: E402
from hil.mesh_sim_data import BatchSource  # noqa: E402
from hil.mesh_sim_scenario import load as load_scenario  # noqa: E402
from hil.mesh_sim_scenario import lora_district, validate  # noqa: E402

SCENARIOS = ("wifi-district", "lora-district", "gateway-failover")


def _extras(sc: dict[str, Any], out: dict[str, Any], det: dict[str, Any]) -> dict[str, Any]:
    mesh = det["mesh"]
    m = mesh.metrics
    first = mesh.hes.first
    ex: dict[str, Any] = {
        "nodes": len(sc["nodes"]), "hours": sc["hours"], "deadline_h": sc["deadline_h"],
        "batches_by_deadline": m.batches_by_deadline(first, sc["deadline_h"]),
        "batches_created": len(m.created), "hes": dict(mesh.hes.counters),
        "mesh_cpu_s": det["mesh_cpu_s"], "baseline_cpu_s": det.get("baseline_cpu_s"),
        "frames": m.frames, "duty_peak_share": round(max(m.duty.peak.values(), default=0.0), 4),
        "origin_backlog_at_end": sum(h.origin.backlog() for h in mesh.hosts.values()),
    }
    b = out.get("baseline")
    if b and b["airtime_s_per_node_hour"]:
        ex["airtime_mesh_over_baseline"] = round(
            out["airtime_s_per_node_hour"] / b["airtime_s_per_node_hour"], 4)
        flood = det["baseline"]
        bm = flood.metrics
        ex["baseline_batches_delivered"] = sum(1 for k in bm.created if k in flood.hes.first)
        ex["mesh_airtime_s_per_delivered_batch"] = _per(m.airtime_us, len(first))
        ex["baseline_airtime_s_per_delivered_batch"] = _per(bm.airtime_us,
                                                            ex["baseline_batches_delivered"])
    if sc["radio"]["kind"] == "lora":
        # 100 % within 24 h: over the hours that have 24 h of run after them
        run_h = sc["hours"] + sc["drain_h"]
        seen = range(0, max(0, int(run_h - 24)))
        total = sum(n["meters"] for n in sc["nodes"]) * len(seen)
        ex["read_rate_24h"] = round(m.meter_hours_read(first, 24, seen) / total, 6) \
            if total else None
        ex["read_rate_24h_hours"] = len(seen)
    if mesh.reroute:
        ex["reroute"] = [{"gateway": w["gateway"], "at_h": w["at_h"], "affected": w["affected"],
                          "max_s": max(w["rerouted_s"].values(), default=None),
                          "p50_s": _median(list(w["rerouted_s"].values())),
                          "p95_s": _pct(list(w["rerouted_s"].values()), 0.95),
                          "not_rerouted": w["not_rerouted"]} for w in mesh.reroute]
        ex["batches_lost"] = len(m.created) - sum(1 for k in m.created if k in first)
    return ex


def _with_baseline(sc: dict[str, Any], seed: int, source: BatchSource, out: dict[str, Any],
                   det: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The flooding baseline on the same scenario and batches, added to a
    mesh run's results (what ``run_scenario`` does in one go)."""
    from hil.flooding import FloodRun

    t0 = time.process_time()
    flood = FloodRun(copy.deepcopy(sc), seed, source)
    flood.run()
    out = dict(out, baseline=flood.result())
    det = dict(det, baseline=flood, baseline_cpu_s=round(time.process_time() - t0, 1))
    return out, det


def _per(airtime_us: int, n: int) -> float | None:
    return round(airtime_us / 1e6 / n, 3) if n else None


def _median(v: list[float]) -> float | None:
    return sorted(v)[len(v) // 2] if v else None


def _pct(v: list[float], q: float) -> float | None:
    return sorted(v)[min(len(v) - 1, int(len(v) * q))] if v else None


def _targets(name: str, out: dict[str, Any], ex: dict[str, Any]) -> dict[str, Any]:
    if name == "wifi-district":
        return {"hourly_batches_within_the_hour >= 0.999": ex["batches_by_deadline"] >= 0.999}
    if name == "lora-district":
        return {"read_rate_4h >= 0.995": out["read_rate"] >= 0.995,
                "read_rate_24h == 1": None if ex.get("read_rate_24h") is None
                else ex["read_rate_24h"] == 1.0,
                "duty_cycle_violations == 0": out["duty_cycle_violations"] == 0,
                "airtime <= baseline / 5": None if "baseline" not in out
                else ex.get("airtime_mesh_over_baseline", 1.0) <= 0.2}
    rer = [w for w in ex.get("reroute") or [] if w["affected"]]
    return {"no_batch_lost": ex.get("batches_lost") == 0,
            "rerouted_within_30_min": all(w["max_s"] is not None and w["max_s"] <= 1800
                                          and not w["not_rerouted"] for w in rer)
            if rer else None}             # None: no node routed through the lost gateway


def capacity_district(n: int, sf: int, hours: int) -> dict[str, Any]:
    """One gateway amid the ``n`` cells of the lora-district grid nearest to it."""
    sc = lora_district()
    spacing = 350.0
    cells = sorted(((c, r) for r in range(-40, 41) for c in range(-40, 41)),
                   key=lambda p: (math.hypot(*p), p))[:n]
    nodes = []
    for i, (c, r) in enumerate(cells):
        nodes.append({"id": "DC-%04d" % (i + 1), "x": c * spacing + 37.0 * ((i * 7) % 5 - 2),
                      "y": r * spacing + 29.0 * ((i * 3) % 5 - 2), "meters": 64,
                      "gateway": i == 0})
    sc.update(name="capacity-sf%d-%d" % (sf, n), hours=hours, deadline_h=4, nodes=nodes)
    sc["radio"] = dict(sc["radio"], sf=sf)
    sc["radio"].pop("min_sf", None)
    sc["radio"].pop("max_sf", None)
    return validate(sc)


def capacity(sf: int, hours: int, max_nodes: int, seed: int,
             source: BatchSource) -> dict[str, Any]:
    tried: dict[int, dict[str, Any]] = {}

    def ok(n: int) -> bool:
        if n not in tried:
            t0 = time.process_time()
            out, _ = run_scenario(capacity_district(n, sf, hours), seed, baseline=False,
                                  source=source)
            tried[n] = {"read_rate": out["read_rate"], "delivery_ratio": out["delivery_ratio"],
                        "latency_p95_s": out["latency_s"]["p95"],
                        "airtime_s_per_node_hour": out["airtime_s_per_node_hour"],
                        "cpu_s": round(time.process_time() - t0, 1)}
            print("capacity SF%d n=%d: %s" % (sf, n, tried[n]), file=sys.stderr, flush=True)
        return bool(tried[n]["read_rate"] >= 0.995)

    lo, hi = 0, None
    n = 15
    while n <= max_nodes:
        if ok(n):
            lo, n = n, n * 2
        else:
            hi = n
            break
    if hi is not None:
        while hi - lo > max(2, lo // 10):
            mid = (lo + hi) // 2
            if ok(mid):
                lo = mid
            else:
                hi = mid
    return {"concentrators_per_gateway": lo, "first_failing": hi, "hours": hours,
            "target": "read_rate within 4 h >= 0.995", "runs": dict(sorted(tried.items()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", action="append", choices=SCENARIOS, default=None)
    ap.add_argument("--no-capacity", action="store_true")
    ap.add_argument("--capacity-only", action="store_true")
    ap.add_argument("--capacity-hours", type=int, default=12)
    ap.add_argument("--max-nodes", type=int, default=480)
    ap.add_argument("--no-baseline", action="store_true",
                    help="the mesh only (the flooding baseline is the dearest part; "
                         "only the lora-district's airtime target needs it)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    source = BatchSource(a.seed)           # one per seed: scenarios share node ids and meters
    result: dict[str, Any] = {"python": sys.version.split()[0], "seed": a.seed,
                              "scenarios": {}}
    if not a.capacity_only:
        for name in a.only or SCENARIOS:
            sc = load_scenario(name)
            out, det = run_scenario(copy.deepcopy(sc), a.seed, baseline=False, source=source)
            print(json.dumps({name: {"mesh_only": out, "extra": _extras(sc, out, det)}}),
                  file=sys.stderr, flush=True)     # the mesh's figures before the baseline's
            if not a.no_baseline:
                out, det = _with_baseline(sc, a.seed, source, out, det)
            ex = _extras(sc, out, det)
            result["scenarios"][name] = {"json": out, "extra": ex,
                                         "targets": _targets(name, out, ex)}
            print(json.dumps({name: result["scenarios"][name]}), file=sys.stderr, flush=True)
    if not a.no_capacity:
        result["capacity"] = {"SF%d" % sf: capacity(sf, a.capacity_hours, a.max_nodes, a.seed,
                                                     source) for sf in (7, 9)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
