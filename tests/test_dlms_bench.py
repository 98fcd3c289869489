"""The DLMS half of the bus-cycle benchmark, small: the grouped read of a
meter (registers + last hour of profile) costs exactly 5 round trips, the
naive one an order of magnitude more, and the figures are consistent."""

import importlib.util
import pathlib

import pytest

PATH = pathlib.Path(__file__).resolve().parent.parent / "bench" / "_bus_cycle_dlms.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("_bus_cycle_dlms", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_grouped_read_is_five_round_trips_per_meter(bench):
    out = bench.dlms_cycle(meters=3, baud=115200, latency_ms=5, naive_meters=1)
    g, n = out["grouped"], out["naive"]
    assert g["errors"] == 0 and n["errors"] == 0
    assert g["round_trips_per_meter"] == 5.0
    assert n["round_trips_per_meter"] > 10 * g["round_trips_per_meter"]
    assert g["ratio"] >= 1.0 and g["bytes_per_meter"] < 2000
    s = out["steady"]
    assert s["round_trips_per_meter"] == 5.0 and s["bytes_per_meter"] < g["bytes_per_meter"] - 300
