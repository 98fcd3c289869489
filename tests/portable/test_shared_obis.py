"""drivers/obis.py under CPython and MicroPython (plain asserts only)."""

from drivers.obis import Obis, ObisError


def test_parse_forms_agree():
    a = Obis.parse("1.0.1.8.0.255")
    assert Obis.parse("1-0:1.8.0*255") == a
    assert Obis.parse("1.8.0") == a
    assert Obis.parse("1.0.1.8.0") == a
    assert str(a) == "1.0.1.8.0.255"
    assert a.groups == (1, 0, 1, 8, 0, 255)


def test_bytes_round_trip():
    o = Obis(0, 0, 96, 1, 0, 255)
    assert o.to_bytes() == b"\x00\x00\x60\x01\x00\xff"
    assert Obis.from_bytes(o.to_bytes()) == o


def test_hash_and_order():
    a = Obis.parse("1.0.1.8.0.255")
    b = Obis.parse("1.0.2.8.0.255")
    assert len({a, Obis.parse("1.8.0"), b}) == 2
    assert a < b
    assert sorted([b, a]) == [a, b]


def test_bad_codes_raise_obis_error():
    for text in ("", "1.2", "a.b.c", "1.0.1.8.0.256", "1.2.3.4.5.6.7"):
        try:
            Obis.parse(text)
        except ObisError:
            continue
        raise AssertionError("no ObisError for %r" % text)
    for data in (b"", b"\x01\x02\x03\x04\x05", b"\x00" * 7):
        try:
            Obis.from_bytes(data)
        except ObisError:
            continue
        raise AssertionError("no ObisError for %r" % data)


def test_obis_error_is_value_error():
    assert issubclass(ObisError, ValueError)
