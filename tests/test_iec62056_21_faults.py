"""IEC 62056-21 client under faults, over a real pseudo-terminal: garbled
blocks (bad BCC), a silent meter, echoes and line noise. Every failure is a
typed drivers.DriverError whose bytes are in the link's flight recorder, and
retries are bounded."""

from __future__ import annotations

import pytest

from drivers import DriverError, MeterTimeout
from drivers.iec62056_21 import BccError, IecProtocolError, open_client
from drivers.iec62056_21.frames import STX
from hil.bus import Bus, FaultSpec
from hil.iec_meter import IecMeter
from hil.model import HOUR, ORIGIN, UNITS, MeterModel
from hil.ports import open_port

T = ORIGIN + 12 * 86400 + 9 * HOUR + 77
ADDR = "4711"


class BadBcc:
    """Wraps a meter: flips the BCC of its data blocks (all, or only the first ``times``)."""

    def __init__(self, meter: IecMeter, times: int | None = None) -> None:
        self.meter = meter
        self.address = meter.address
        self.times = times
        self.corrupted = 0

    def reset(self) -> None:
        self.meter.reset()

    def feed(self, data: bytes, now: float):
        out = []
        for reply, baud in self.meter.feed(data, now):
            if reply[:1] == bytes([STX]) and (self.times is None or self.corrupted < self.times):
                reply = reply[:-1] + bytes([reply[-1] ^ 0x20])
                self.corrupted += 1
            out.append((reply, baud))
        return out


@pytest.fixture
def rig():
    port = open_port("pty")
    buses = []

    def start(meters, faults=None):
        bus = Bus(port, meters, baud=9600, bits=10, faults=faults).start()
        buses.append(bus)
        return bus

    yield port, start
    for b in buses:
        b.stop()
    port.close()


def _wire(recorder, direction: str) -> list[bytes]:
    """Frames of one direction as the recorder kept them (on a pty a 7E1
    character is a byte with bit 7 clear: nothing to strip)."""
    return [b for _, d, b in recorder.entries() if d == direction]


def test_bad_bcc_readout_is_a_typed_error_after_bounded_retries(rig) -> None:
    port, start = rig
    meter = IecMeter(MeterModel(1, seed=5), ADDR, lambda: T)
    start([BadBcc(meter)])
    client = open_client(port.agent_path, address=ADDR, retries=2, timeout=1.0)
    try:
        with pytest.raises(BccError) as ei:
            client.read_registers()
    finally:
        client.close()
    err = ei.value
    assert isinstance(err, DriverError) and err.raw.startswith("02")
    assert meter.requests == 3                      # one sign-on + two retries, no more
    rx = b"".join(_wire(client.link.recorder, "rx")).hex()
    assert err.raw[-40:] in rx                      # the bad block's bytes are recorded
    assert err.flight == client.link.recorder.dump()


def test_garbled_answer_in_programming_mode_is_naked_and_repeated(rig) -> None:
    port, start = rig
    model = MeterModel(2, seed=5)
    wrapped = BadBcc(IecMeter(model, ADDR, lambda: T), times=1)
    start([wrapped])
    client = open_client(port.agent_path, address=ADDR, password="00000000", timeout=1.0)
    try:
        regs = client.read_registers(["1.0.1.8.0.255"])
    finally:
        client.close()
    assert [(r.value, r.unit) for r in regs] == [(model.registers(T)["1.0.1.8.0.255"], "Wh")]
    assert wrapped.corrupted == 1
    assert b"\x15" in _wire(client.link.recorder, "tx")  # we sent NAK once
    assert wrapped.meter.requests == 1                       # and needed no new sign-on


def test_silent_meter_times_out_with_bounded_retries(rig) -> None:
    port, start = rig
    start([IecMeter(MeterModel(3, seed=5), ADDR, lambda: T)], FaultSpec.parse("dead@" + ADDR))
    client = open_client(port.agent_path, address=ADDR, retries=1, timeout=0.5)
    try:
        with pytest.raises(MeterTimeout) as ei:
            client.read_registers()
    finally:
        client.close()
    requests = [b for b in _wire(client.link.recorder, "tx") if b.startswith(b"/?")]
    assert len(requests) == 2
    assert ei.value.state == "AWAIT_ID" and ei.value.meter == ADDR


def test_echo_and_line_noise_are_tolerated(rig) -> None:
    port, start = rig
    model = MeterModel(4, seed=5)
    start([IecMeter(model, ADDR, lambda: T)], FaultSpec.parse("echo,garbage=0.5", seed=3))
    client = open_client(port.agent_path, address=ADDR, password="00000000", retries=4,
                         timeout=1.0)
    try:
        regs = client.read_registers()
        assert {r.obis: (r.value, r.unit) for r in regs} == {
            o: (v, UNITS[o]) for o, v in model.registers(T).items()}
        assert client.read_clock() == int(model.clock(T))
    finally:
        client.close()


def test_protocol_errors_are_remote_protocol_errors() -> None:
    from drivers import RemoteProtocolError

    assert issubclass(IecProtocolError, RemoteProtocolError)
    assert issubclass(BccError, IecProtocolError)
