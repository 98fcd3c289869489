"""drivers/flight.py and drivers/__init__.py under CPython and MicroPython."""

from drivers import DriverError, MeterTimeout, RemoteProtocolError
from drivers.flight import FlightRecorder


def test_keeps_last_n_frames():
    f = FlightRecorder(size=3)
    for i in range(5):
        f.record("rx" if i % 2 else "tx", bytes([i]), 10.0 + i)
    e = f.entries()
    assert len(e) == 3
    assert [x[2] for x in e] == [b"\x02", b"\x03", b"\x04"]


def test_dump_relative_times_and_hex():
    f = FlightRecorder()
    f.record("tx", b"\x7e\xa0", 100.0)
    f.record("rx", bytearray(b"\x01"), 100.25)
    lines = f.dump()
    assert lines[0] == "+0.000 tx 7ea0"
    assert lines[1] == "+0.250 rx 01"
    assert f.as_json()[1] == {"t": 100.25, "dir": "rx", "hex": "01"}
    f.clear()
    assert f.dump() == [] and f.entries() == []


def test_driver_error_fields():
    e = RemoteProtocolError("bad crc", meter="17", code=3)
    assert isinstance(e, DriverError)
    assert e.meter == "17" and e.code == 3
    assert e.fields == {"meter": "17", "code": 3}
    assert issubclass(MeterTimeout, DriverError)
