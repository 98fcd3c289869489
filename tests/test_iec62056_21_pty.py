"""IEC 62056-21 client against simulated meters over a real pseudo-terminal.

hil.ports.open_port("pty") + hil.bus.Bus(port, [IecMeter…]) (paced at the
line speed, 7E1 = 10 bits a character) + drivers.iec62056_21.open_client on
``port.agent_path``. Expected values are recomputed from hil.model.MeterModel
at the simulators' fixed clock, never read back from the simulator.
"""

from __future__ import annotations

import time

import pytest

from drivers.iec62056_21 import IecProtocolError, IecRefused, IecUsageError, open_client, scan
from drivers.iec62056_21.quirks import QuirkRegistry
from drivers.meter import MeterEvent, ProfileRow
from drivers.serialio import Link
from hil.bus import Bus
from hil.iec_meter import IecMeter, pty_line_speed
from hil.model import HOUR, ORIGIN, UNITS, MeterModel
from hil.ports import open_port

T = ORIGIN + 40 * 86400 + 17 * HOUR + 1234        # a weekday evening, mid-hour
ADDRS = ("10000001", "10000002")


@pytest.fixture
def rig():
    port = open_port("pty")
    buses = []

    def start(meters, **bus_options):
        # Replies are paced at the speed each meter answers at (the simulator
        # says so per reply); the bus rate only times the requests' own
        # transmission, which at 300 Bd would slow every R1 to ~0.5 s.
        bus = Bus(port, meters, baud=9600, bits=10, **bus_options).start()
        buses.append(bus)
        return bus

    yield port, start
    for b in buses:
        b.stop()
    port.close()


def _model_registers(model: MeterModel) -> dict:
    return {o: (v, UNITS[o]) for o, v in model.registers(T).items()}


def test_mode_c_readout_of_two_meters_on_one_bus(rig) -> None:
    port, start = rig
    models = [MeterModel(i, seed=11) for i in (1, 2)]
    meters = [IecMeter(m, a, lambda: T, answer_empty=False) for m, a in zip(models, ADDRS, strict=True)]
    start(meters)
    link = Link(port.agent_path, baudrate=300).connect()      # one port, shared by both
    try:
        for model, addr in zip(models, ADDRS, strict=True):
            client = open_client(port.agent_path, address=addr, link=link)
            regs = client.read_registers()
            assert {r.obis: (r.value, r.unit) for r in regs} == _model_registers(model)
            assert len(regs) == 27
            ident = client.identify()
            assert (ident.id, ident.manufacturer, ident.model) == (model.serial, "WUM", "IEC-SIM")
            client.close()
            assert link.is_open                                 # a shared link stays open
    finally:
        link.close()
    # Each meter answered only its own two sign-ons.
    assert [m.requests for m in meters] == [2, 2]


def test_r1_reads_clock_and_relay_in_programming_mode(rig) -> None:
    port, start = rig
    model = MeterModel(5, seed=3)
    # A lower-case third letter announces a 20 ms reaction time (§6.3.2).
    start([IecMeter(model, ADDRS[0], lambda: T, manufacturer="WUm")])
    client = open_client(port.agent_path, address=ADDRS[0], password="00000000")
    try:
        want = ["1.0.1.8.0.255", "1.0.32.7.0.255", "1.0.31.7.0.255", "0.0.96.3.10.255",
                "1.0.14.7.0.255", "1.0.21.7.0.255"]
        regs = client.read_registers(want)
        exp = _model_registers(model)
        assert [(r.obis, r.value, r.unit) for r in regs] == [(o,) + exp[o] for o in want]
        assert client.read_clock() == int(model.clock(T))
        client.set_clock(T + 3600)
        assert abs(model.clock(T) - (T + 3600)) < 1.0
        assert client.read_clock() == T + 3600
        client.disconnect()
        assert model.relay_connected is False
        client.reconnect()
        assert model.relay_connected is True
    finally:
        client.close()


def test_load_profile_and_log_book_match_the_model(rig) -> None:
    port, start = rig
    model = MeterModel(7, seed=3)
    meter = IecMeter(model, ADDRS[0], lambda: T, block_size=400, manufacturer="WUm")
    start([meter])
    client = open_client(port.agent_path, address=ADDRS[0], password="00000000")
    try:
        lo, hi = T - 30 * HOUR, T
        rows = client.read_load_profile(lo, hi)
        assert rows == [ProfileRow(ts, vals, 0) for ts, vals in model.profile(lo, hi)]
        assert len(rows) == 30
        lo = T - 60 * 86400
        want = [MeterEvent(ts, code) for ts, code in model.events(lo, T)]
        assert len(want) >= 3
        assert client.read_events(lo, T) == want
    finally:
        client.close()


def test_wrong_password_and_write_without_password_are_refused(rig) -> None:
    port, start = rig
    model = MeterModel(8, seed=3)
    meter = IecMeter(model, ADDRS[0], lambda: T)
    start([meter])
    bad = open_client(port.agent_path, address=ADDRS[0], password="12345678")
    try:
        with pytest.raises(IecRefused):
            bad.set_clock(T)
        time.sleep(0.2)
        assert meter.state == "IDLE"              # we left programming mode with B0
        assert meter.requests == 1                # refused: no retry
    finally:
        bad.close()
    anon = open_client(port.agent_path, address=ADDRS[0])
    try:
        with pytest.raises(IecUsageError):
            anon.set_clock(T)
        assert anon.read_clock() == int(model.clock(T))     # reads need no password
    finally:
        anon.close()
    assert model.clock_offset == 0.0


def test_registered_quirk_meter_that_keeps_300_baud(rig) -> None:
    port, start = rig
    model = MeterModel(9, seed=3)
    start([IecMeter(model, ADDRS[0], lambda: T, honour_baud=False)])     # "IEC-LEGACY"
    client = open_client(port.agent_path, address=ADDRS[0], password="00000000")
    try:
        regs = client.read_registers(["1.0.1.8.0.255", "1.0.2.8.0.255"])
        exp = _model_registers(model)
        assert [(r.value, r.unit) for r in regs] == [exp["1.0.1.8.0.255"], exp["1.0.2.8.0.255"]]
        assert client.read_clock() == int(model.clock(T))
        assert client.link.baudrate == 300
    finally:
        client.close()


def test_registered_quirk_meter_answering_at_another_rate_full_readout(rig) -> None:
    port, start = rig
    model = MeterModel(10, seed=3)
    start([IecMeter(model, ADDRS[0], lambda: T, honour_baud=False, quirk_baud=2400)])
    client = open_client(port.agent_path, address=ADDRS[0])
    try:
        regs = client.read_registers()
        assert {r.obis: (r.value, r.unit) for r in regs} == _model_registers(model)
    finally:
        client.close()


def test_unknown_meter_ignoring_its_speed_is_learned_as_a_quirk(rig) -> None:
    port, start = rig
    model = MeterModel(11, seed=3)
    start([IecMeter(model, ADDRS[0], lambda: T, honour_baud=False, ident="ODD-7",
                    line_speed=pty_line_speed(port))])
    registry = QuirkRegistry()
    strict = open_client(port.agent_path, address=ADDRS[0], quirks=registry, retries=0,
                         timeout=1.0, learn_quirks=False)
    try:
        with pytest.raises(IecProtocolError) as ei:
            strict.read_clock()
        assert "garbled" in str(ei.value) and set(bytes.fromhex(ei.value.raw)) == {0}
        assert any(" rx 00" in line for line in ei.value.flight)    # the garbage is recorded
    finally:
        strict.close()
    client = open_client(port.agent_path, address=ADDRS[0], quirks=registry, timeout=1.0)
    try:
        assert client.read_clock() == int(model.clock(T))
        q = [q for q in registry]
        assert len(q) == 1 and q[0].learned and q[0].line_baud == 300
        assert client.quirks.lookup(client.identification) is q[0]   # next sign-on uses it
    finally:
        client.close()


def test_mode_b_readout(rig) -> None:
    port, start = rig
    model = MeterModel(12, seed=3)
    start([IecMeter(model, ADDRS[0], lambda: T, mode="B")])
    client = open_client(port.agent_path, address=ADDRS[0], mode="B")
    try:
        regs = client.read_registers(["1.0.1.8.1.255"])
        assert [(r.obis, r.value) for r in regs] == [("1.0.1.8.1.255", model.registers(T)[
            "1.0.1.8.1.255"])]
    finally:
        client.close()


def test_scan_finds_the_addressed_meters(rig) -> None:
    port, start = rig
    meters = [IecMeter(MeterModel(i, seed=4), a, lambda: T, answer_empty=False)
              for i, a in enumerate(ADDRS)]
    start(meters)
    found = scan(port.agent_path, addresses=[ADDRS[0], "99999999", ADDRS[1]], timeout=1.0)
    assert [(m.address, m.manufacturer, m.model) for m in found] == [
        (ADDRS[0], "WUM", "IEC-SIM"), (ADDRS[1], "WUM", "IEC-SIM")]
