"""The bus-cycle benchmark runs and reads each meter in one round trip."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bus_cycle_small():
    spec = importlib.util.spec_from_file_location("bus_cycle",
                                                  os.path.join(ROOT, "bench", "bus_cycle.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.modbus_cycle(meters=6, baud=19200, naive_meters=2)
    g, n = out["grouped"], out["naive"]
    assert g["errors"] == 0 and n["errors"] == 0
    assert g["round_trips_per_meter"] == 1.0 and n["round_trips_per_meter"] == 28.0
    assert g["bytes"] == 6 * (8 + 5 + 2 * 53)
    assert 1.0 <= g["ratio"] < 2.0            # the figure itself is the benchmark's job
    assert out["speedup_per_meter"] > 1.5
