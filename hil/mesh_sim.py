"""``wum-hil mesh-sim``: a district of concentrators running the REAL mesh
core (``mesh.node.Node``, one per concentrator) over the discrete-event radio
medium (``hil.radio``), with virtual time, deterministic by seed; then the
managed-flooding baseline (``hil.flooding``) over the same scenario with the
same batches, in the same process. docs/mesh-sim.md is the description.

Owns the entry points: ``run_scenario`` (Python), the ``mesh-sim``
subcommand's work (``command``) and its JSON. Must not know how either
network moves frames (``hil.mesh_sim_host``, ``hil.flooding``) nor what the
scenario format is (``hil.mesh_sim_scenario``).

The JSON (a contract: exactly these keys, ``baseline`` holding the same)::

    {"delivery_ratio", "read_rate", "latency_s": {"p50", "p95", "max"},
     "airtime_s_per_node_hour", "duty_cycle_violations", "control_overhead",
     "baseline": {...}}
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from hil.mesh_sim_data import BatchSource
from hil.mesh_sim_metrics import CONTRACT
from hil.mesh_sim_scenario import load

log = logging.getLogger(__name__)


def run_scenario(sc: dict[str, Any], seed: int, baseline: bool = True,
                 source: BatchSource | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the mesh (and the baseline) on a validated scenario; -> (the
    contract's JSON object, details: the runs themselves and timings)."""
    from hil.flooding import FloodRun
    from hil.mesh_sim_host import MeshRun

    source = source or BatchSource(seed)
    details: dict[str, Any] = {}
    t0 = time.process_time()
    mesh = MeshRun(sc, seed, source)
    mesh.run()
    out = mesh.result()
    details["mesh"] = mesh
    details["mesh_cpu_s"] = round(time.process_time() - t0, 1)
    log.info("%s: mesh done in %.0f s CPU", sc["name"], details["mesh_cpu_s"])
    if baseline:
        t0 = time.process_time()
        flood = FloodRun(sc, seed, source)
        flood.run()
        out["baseline"] = flood.result()
        details["baseline"] = flood
        details["baseline_cpu_s"] = round(time.process_time() - t0, 1)
        log.info("%s: baseline done in %.0f s CPU", sc["name"], details["baseline_cpu_s"])
    assert [k for k in out if k != "baseline"] == list(CONTRACT)
    return out, details


def table(sc: dict[str, Any], out: dict[str, Any]) -> str:
    """The run as a small human-readable table (mesh against baseline)."""
    rows = [("delivery ratio", "delivery_ratio", "%.4f"), ("read rate", "read_rate", "%.4f"),
            ("latency p50 (s)", ("latency_s", "p50"), "%s"),
            ("latency p95 (s)", ("latency_s", "p95"), "%s"),
            ("latency max (s)", ("latency_s", "max"), "%s"),
            ("airtime s/node-hour", "airtime_s_per_node_hour", "%.3f"),
            ("duty-cycle violations", "duty_cycle_violations", "%d"),
            ("control overhead", "control_overhead", "%.3f")]

    def get(d: dict[str, Any], k: Any) -> Any:
        return d[k[0]][k[1]] if isinstance(k, tuple) else d[k]

    lines = ["%s: %d nodes, %d h, deadline %s h" % (sc["name"], len(sc["nodes"]), sc["hours"],
                                                   sc["deadline_h"]),
             "%-24s %14s %14s" % ("", "mesh", "flooding")]
    for label, key, fmt in rows:
        lines.append("%-24s %14s %14s" % (label, fmt % get(out, key),
                                          fmt % get(out["baseline"], key)))
    return "\n".join(lines)


def command(scenario: str, seed: int, as_json: bool) -> str:
    """What ``wum-hil mesh-sim`` prints (ScenarioError for a bad scenario)."""
    sc = load(scenario)
    out, _ = run_scenario(sc, seed)
    if as_json:
        return json.dumps(out, sort_keys=False)
    return table(sc, out)
