"""drivers/meter.py and drivers/units.py under CPython and MicroPython."""

from drivers.meter import MeterEvent, MeterIdentity, ProfileRow, RegisterValue, meter_id, scaled
from drivers.units import unit_code, unit_name


def test_scaled_matches_decimal_text():
    assert scaled(12345, -1) == 1234.5
    assert scaled(12345, -1) == float("1234.5")
    assert scaled(230, 0) == 230
    assert isinstance(scaled(230, 0), int)
    assert scaled(23, 2) == 2300
    assert scaled(-5, -3) == -0.005
    assert scaled(4999, -2) == float("49.99")


def test_scaled_exact_for_many_mantissas():
    for k in range(1, 7):
        for m in (0, 1, 7, 99, 12345, 987654321, -31415):
            s = str(abs(m))
            s = "0" * max(0, k + 1 - len(s)) + s
            text = ("-" if m < 0 else "") + s[:-k] + "." + s[-k:]
            assert scaled(m, -k) == float(text), (m, k)


def test_register_value_equality():
    a = RegisterValue("1.0.1.8.0.255", 1234, "Wh", 1780272000)
    assert a == RegisterValue("1.0.1.8.0.255", 1234, "Wh", 1780272000.0)
    assert a != RegisterValue("1.0.1.8.0.255", 1235, "Wh", 1780272000)
    assert "1.0.1.8.0.255" in repr(a)


def test_profile_row_and_event():
    r = ProfileRow(1780275600, {"1.0.1.8.0.255": 10}, status=0)
    assert r == ProfileRow(1780275600, {"1.0.1.8.0.255": 10}, status=0)
    assert r != ProfileRow(1780275600, {"1.0.1.8.0.255": 10}, status=8)
    assert MeterEvent(5, 40, "cover_open") == MeterEvent(5, 40)
    assert MeterEvent(5, 40) != MeterEvent(5, 41)


def test_identity_as_dict():
    i = MeterIdentity("dlms", 17, "12345678", "ABC", "X1")
    d = i.as_dict()
    assert d["address"] == "17" and d["id"] == "12345678" and d["protocol"] == "dlms"


def test_meter_id_order_serial_then_logical_device_name_then_fallback():
    assert meter_id("12345678", "WUM12345678", "bus1:dlms:17") == "12345678"
    assert meter_id("", "WUM12345678", "bus1:dlms:17") == "WUM12345678"
    assert meter_id("", "", "bus1:dlms:17") == "bus1:dlms:17"
    assert meter_id("", "") == ""
    named = MeterIdentity("dlms", 17, "", "WUM", "WUM12345678", name="WUM12345678")
    assert named.id == "WUM12345678" and named.as_dict()["id"] == "WUM12345678"
    both = MeterIdentity("dlms", 17, "12345678", "WUM", "WUM12345678", name="WUM12345678")
    assert both.id == "12345678" and both.serial == "12345678"


def test_units_round_trip():
    assert unit_name(30) == "Wh"
    assert unit_code("Wh") == 30
    assert unit_code("V") == 35
    assert unit_code("no such unit") == 255
    assert unit_name(9999) == ""
