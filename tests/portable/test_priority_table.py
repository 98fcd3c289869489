"""agent/priority.py (what a constrained uplink sends first) under CPython
and MicroPython (plain asserts only)."""

from agent.priority import ENERGY, INSTANT, register_tier, split


def test_energy_and_status_are_tier_one():
    for key in ("1.0.1.8.0.255", "1.0.2.8.4.255", "1.0.3.8.0.255", "1.0.15.8.0.255",
                "1.0.1.29.0.255", "0.0.96.3.10.255", "0.0.97.97.0.255"):
        assert register_tier(key) == ENERGY, key


def test_everything_else_is_instantaneous():
    for key in ("1.0.32.7.0.255", "1.0.31.7.0.255", "1.0.1.6.0.255", "1.0.14.7.0.255",
                "0.0.1.0.0.255", "x", "", "1.0.1.8.0", "1.0.a.8.0.255"):
        assert register_tier(key) == INSTANT, key


def test_split_keeps_every_value_once():
    vals = {"1.0.1.8.0.255": 12, "1.0.32.7.0.255": 230.1, "0.0.96.3.10.255": 1, "v": None}
    energy, instant = split(vals)
    assert energy == {"1.0.1.8.0.255": 12, "0.0.96.3.10.255": 1}
    assert instant == {"1.0.32.7.0.255": 230.1, "v": None}
