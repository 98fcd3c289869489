"""What a ``wum-hil mesh-sim`` run measures, the same way for the mesh and
for the flooding baseline: every frame put on the air (bytes, control or
data, time on air, an independent EU868 duty-cycle check), every batch
created, and the HES's first arrivals; from them the contract's JSON keys.

Owns the definitions (docs/mesh-sim.md repeats them):

* ``delivery_ratio``: batches at the HES by the end of the run / batches
  created;
* ``read_rate``: meter-hours whose batches of the scenario's ``read``
  classes were all at the HES within ``deadline_h`` of the end of their
  hour / every meter-hour of the scenario (nodes x meters x hours: a node
  that is down does not shrink the denominator);
* ``latency_s``: creation to first arrival at the HES, over delivered
  batches (nearest-rank p50, p95, max);
* ``airtime_s_per_node_hour``: time on air of every frame / (nodes x hours
  run, drain included);
* ``duty_cycle_violations``: frames at whose end some node's air time in
  the hour before exceeded its EU868 sub-band's duty cycle (1 %, 0.1 %,
  10 %), counted from the medium's own frames, not from the nodes' books;
* ``control_overhead``: bytes of control frames (the mesh's ACK and ADVERT,
  the baseline's node announcements) / all bytes put on the air.

Must not know the mesh's or the baseline's internals: the runs tell it.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from hil.mesh_sim_data import SimBatch
from mesh.duty import EU868_SUBBANDS

HOUR_US = 3600 * 1000000
CONTRACT = ("delivery_ratio", "read_rate", "latency_s", "airtime_s_per_node_hour",
            "duty_cycle_violations", "control_overhead")


def band_of(channel_hz: int | None) -> tuple[str, int] | None:
    """(sub-band, budget in us per hour) of an EU868 channel; None off-band."""
    if channel_hz is None:
        return None
    for name, lo, hi, per_mille in EU868_SUBBANDS:
        if lo <= channel_hz <= hi:
            return name, HOUR_US * per_mille // 1000
    return None


class DutyMonitor:
    """Sliding one-hour air time per (node, sub-band), from frame start/end."""

    def __init__(self) -> None:
        self._win: dict[tuple[str, str], list[Any]] = {}   # -> [deque[(s, e)], sum]
        self.violations = 0
        self.peak: dict[str, float] = {}                    # node -> highest share of budget

    def record(self, node: str, channel_hz: int | None, start_us: int, end_us: int) -> bool:
        band = band_of(channel_hz)
        if band is None:
            return False
        name, budget = band
        w = self._win.get((node, name))
        if w is None:
            w = self._win[(node, name)] = [deque(), 0]
        q = w[0]
        q.append((start_us, end_us))
        w[1] += end_us - start_us
        lo = end_us - HOUR_US
        while q and q[0][1] <= lo:
            s, e = q.popleft()
            w[1] -= e - s
        used = w[1]
        if q and q[0][0] < lo:
            used -= lo - q[0][0]
        share = used / budget
        if share > self.peak.get(node, 0.0):
            self.peak[node] = share
        if used > budget:
            self.violations += 1
            return True
        return False


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    k = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[k - 1]


class Metrics:
    """One run's measurements (see the module docstring)."""

    def __init__(self, scenario: dict[str, Any]) -> None:
        self.sc = scenario
        self.created: dict[tuple[str, int], tuple[SimBatch, int]] = {}
        self.node_hours: set[tuple[str, int]] = set()     # read from the meters
        self.tx_bytes = 0
        self.control_bytes = 0
        self.frames = 0
        self.airtime_us = 0
        self.duty = DutyMonitor()

    def hour_read(self, node: str, hour: int, batches: list[SimBatch], now_ms: int) -> None:
        self.node_hours.add((node, hour))
        for b in batches:
            self.created[(b.node, b.seq)] = (b, now_ms)

    def tx(self, node: str, nbytes: int, control: bool, start_us: int, end_us: int,
           channel_hz: int | None) -> None:
        self.frames += 1
        self.tx_bytes += nbytes
        if control:
            self.control_bytes += nbytes
        self.airtime_us += end_us - start_us
        self.duty.record(node, channel_hz, start_us, end_us)

    def result(self, first: dict[tuple[str, int], tuple[int, str]], end_ms: int) -> dict[str, Any]:
        """The contract's keys (``CONTRACT``)."""
        sc = self.sc
        lat = []
        for key, (_b, born) in self.created.items():
            got = first.get(key)
            if got is not None and got[0] <= end_ms:
                lat.append((got[0] - born) / 1000.0)
        lat.sort()
        run_h = sc["hours"] + sc["drain_h"]
        node_hours = len(sc["nodes"]) * run_h
        return {
            "delivery_ratio": _ratio(len(lat), len(self.created)),
            "read_rate": _ratio(self.meter_hours_read(first, sc["deadline_h"]),
                                self.meter_hours()),
            "latency_s": {"p50": _round(percentile(lat, 50)), "p95": _round(percentile(lat, 95)),
                          "max": _round(lat[-1] if lat else None)},
            "airtime_s_per_node_hour": round(self.airtime_us / 1e6 / node_hours, 4),
            "duty_cycle_violations": self.duty.violations,
            "control_overhead": round(self.control_bytes / self.tx_bytes, 4)
            if self.tx_bytes else 0.0,
        }

    def meter_hours(self) -> int:
        return sum(n["meters"] for n in self.sc["nodes"]) * self.sc["hours"]

    def meter_hours_read(self, first: dict[tuple[str, int], tuple[int, str]],
                         deadline_h: float, hours: range | None = None) -> int:
        """Meter-hours whose ``read`` classes reached the HES within
        ``deadline_h`` of the end of their hour (optionally only those
        ``hours``)."""
        need = set(self.sc["read"])
        by_nh: dict[tuple[str, int], list[tuple[SimBatch, int | None]]] = {
            nh: [] for nh in self.node_hours if hours is None or nh[1] in hours}
        for key, (b, _) in self.created.items():
            if b.cls in need and (hours is None or b.hour in hours):
                got = first.get(key)
                by_nh[(b.node, b.hour)].append((b, None if got is None else got[0]))
        meters = {n["id"]: n["meters"] for n in self.sc["nodes"]}
        read = 0
        for (node, hour), items in by_nh.items():
            due = int((hour + 1 + deadline_h) * 3600000)
            ok = meters[node]
            for b, at in items:
                if at is not None and at <= due:
                    continue
                if b.cls == "events":
                    ok -= b.meters          # only the meters with events miss it
                else:
                    ok = 0
                    break
            read += max(ok, 0)
        return read

    def batches_by_deadline(self, first: dict[tuple[str, int], tuple[int, str]],
                            deadline_h: float) -> float | None:
        """Share of created batches at the HES within ``deadline_h`` of the
        end of their hour."""
        n = ok = 0
        for key, (b, _) in self.created.items():
            n += 1
            got = first.get(key)
            if got is not None and got[0] <= (b.hour + 1 + deadline_h) * 3600000:
                ok += 1
        return _ratio(ok, n)


def _ratio(a: int, b: int) -> float:
    return round(a / b, 6) if b else 0.0


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)
