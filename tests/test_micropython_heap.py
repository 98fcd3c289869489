"""bench/micropython_heap.py keeps working, keeps measuring what it says, and
the board meets issue 12's heap target: run once for 64 meters with coarse
probes (8 KB between measurements: ~10 s), its JSON is checked — the bytes
MicroPython seals are CPython's, the heap observer sees a known live buffer
and not known garbage, the probes cost nothing, the figures hang together,
and the peak of encode + seal (state, readings, sealer and working set; an
upper bound) is within 64 KB. Heap figures do not depend on the machine's
load; no time figure is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_micropython import _node_or_miss

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "micropython_heap.py"

pytestmark = pytest.mark.mpy


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    _node_or_miss()
    r = subprocess.run([sys.executable, str(BENCH), "--meters", "64", "--slack", "8192"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def test_micropython_seals_the_bytes_cpython_seals(figures: dict[str, Any]) -> None:
    assert figures["same_bytes_as_cpython"] is True
    assert figures["sealed_bytes"] > 100 and figures["state_bytes"] > 1000


def test_the_observer_sees_live_bytes_and_not_garbage(figures: dict[str, Any]) -> None:
    cal = figures["calibration"]
    # 16 KB held across a probe: seen (a bytearray's header and block rounding aside)
    assert 16.0 <= cal["seen_live_kb"] <= 16.5
    # 64 KB dropped before it: not live, but allocated
    assert cal["seen_allocated_kb"] >= 80.0


def test_the_probes_allocate_nothing(figures: dict[str, Any]) -> None:
    assert figures["probe_check_bytes"] <= 64        # 1000 wrapped calls
    assert figures["measurements"] > 10 and figures["probe_calls"] > 1000


def test_the_figures_hang_together(figures: dict[str, Any]) -> None:
    base = figures["baseline_kb"]
    assert all(base[k] > 0 for k in ("code", "state", "readings", "sealer"))
    held = base["state"] + base["readings"] + base["sealer"]
    assert held < figures["peak_live_kb"] <= figures["peak_heap_kb"]
    assert 0 < figures["cycle_live_kb"] <= figures["cycle_kb"]
    assert figures["peak_where"]                          # a function is named
    assert figures["bundle_kb"] <= 200                    # issue 12's target


def test_a_64_meter_cycle_fits_in_64_kb(figures: dict[str, Any]) -> None:
    # Issue 12's target, as an upper bound of the live heap (8 KB of slack
    # loosens it by up to 8 KB: 56.5 KB measured; 51.5 KB with the bench's
    # default 2 KB). Guards of its parts, 2026-12, MicroPython 1.27: state
    # 25.8 KB, readings 13.2 KB, live working set 7.4 KB (before the memory
    # work: 178, 87 and 187 KB; before the columnar readings: 32, 29, 18 KB).
    assert figures["meters"] == 64 and figures["registers_per_meter"] == 27
    assert figures["peak_heap_kb"] <= 64.0
    assert figures["baseline_kb"]["state"] <= 28.0
    assert figures["baseline_kb"]["readings"] <= 15.0
    assert figures["cycle_live_kb"] <= 10.0
