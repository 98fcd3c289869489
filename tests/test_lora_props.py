"""Property tests (Hypothesis) of the LoRa pieces that parse bytes: the
simulated SX126x answers any SPI byte sequence as a chip would (same length,
a status byte, never an exception) and a driver with its reset line recovers
it afterwards; the driver, fed any bytes by a broken bus, raises only
``drivers.DriverError``; the chip's time-on-air formula equals mesh.airtime's
for SF7-SF12."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import DriverError
from drivers.link import Received
from drivers.lora import LoRaParams
from drivers.lora.airtime import time_on_air_us
from drivers.lora.sx126x import Sx126x
from hil.radio import RadioMedium
from hil.sx126x_sim import Sx126xSim
from mesh.airtime import lora_toa_us

KNOWN = sorted(Sx126xSim.COMMANDS)
transaction = st.one_of(
    st.binary(min_size=0, max_size=40),
    st.tuples(st.sampled_from(KNOWN), st.binary(max_size=12)).map(lambda t: bytes([t[0]]) + t[1]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(transaction, st.integers(0, 5000)), max_size=25))
def test_simulated_chip_answers_any_bytes_and_recovers(script):
    m = RadioMedium(seed=1)
    m.add_node("x", 0, 0)
    m.add_node("y", 50, 0)
    chip = Sx126xSim(m, "x")
    for data, wait in script:
        out = chip.transfer(data)
        assert isinstance(out, bytes) and len(out) == len(data)
        chip.busy.value()
        chip.dio1.value()
        m.advance(wait)
    # whatever the garbage did, a driver that pulses NRESET gets a working chip back
    d = Sx126x(chip, chip.busy, chip.dio1, chip.reset, delay_us=m.advance)
    d.connect()
    d.configure(LoRaParams(sf=7))
    peer_chip = Sx126xSim(m, "y")
    peer = Sx126x(peer_chip, peer_chip.busy, peer_chip.dio1, delay_us=m.advance)
    peer.connect()
    peer.configure(LoRaParams(sf=7))
    peer.listen()
    m.advance(d.transmit(b"after the storm"))
    got = [e for e in peer.service() if isinstance(e, Received)]
    assert [e.frame for e in got] == [b"after the storm"]


class NoisyBus:
    """A broken SPI bus: every answer is the next slice of random bytes."""

    def __init__(self, stream: bytes) -> None:
        self.stream = stream
        self.pos = 0

    def transfer(self, data: bytes) -> bytes:
        out = bytearray()
        for _ in data:
            out.append(self.stream[self.pos % len(self.stream)] if self.stream else 0)
            self.pos += 1
        return bytes(out)


class Pin:
    def __init__(self, level: int) -> None:
        self.level = level

    def value(self, v=None):
        return self.level


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.integers(0, 1))
def test_driver_on_a_broken_bus_raises_only_driver_errors(stream, dio):
    d = Sx126x(NoisyBus(stream), Pin(0), Pin(dio), delay_us=lambda us: None)
    try:
        d.connect()
        d.configure(LoRaParams(sf=9))
        d.listen()
        for _ in range(3):
            d.service()
        d.transmit(b"x" * 10)
        d.service()
    except DriverError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 255), st.integers(7, 12), st.sampled_from([125000, 250000, 500000]),
       st.integers(1, 4), st.booleans(), st.booleans(), st.integers(6, 40),
       st.sampled_from([None, True, False]), st.sampled_from(["sx126x", "sx127x"]))
def test_chip_formula_equals_mesh_airtime_from_sf7(pl, sf, bw, cr, explicit, crc, pre, ldro,
                                                   chip):
    assert time_on_air_us(pl, sf, bw, cr, explicit, crc, pre, ldro, chip) == lora_toa_us(
        pl, sf, bw, cr, explicit, crc, pre, ldro)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=20), st.integers(0, 300_000)), max_size=25))
def test_simulated_sx127x_answers_any_bytes_and_recovers(script):
    from drivers.lora.sx127x import Sx127x
    from hil.sx127x_sim import Sx127xSim

    m = RadioMedium(seed=1)
    m.add_node("x", 0, 0)
    m.add_node("y", 50, 0)
    chip = Sx127xSim(m, "x")
    for data, wait in script:
        out = chip.transfer(data)
        assert isinstance(out, bytes) and len(out) == len(data)
        chip.dio0.value()
        m.advance(wait)
    d = Sx127x(chip, chip.dio0, chip.reset, delay_us=m.advance)
    d.connect()
    d.configure(LoRaParams(sf=7))
    peer_chip = Sx127xSim(m, "y")
    peer = Sx127x(peer_chip, peer_chip.dio0, delay_us=m.advance)
    peer.connect()
    peer.configure(LoRaParams(sf=7))
    peer.listen()
    m.advance(d.transmit(b"after the storm"))
    assert [e.frame for e in peer.service() if isinstance(e, Received)] == [b"after the storm"]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.integers(0, 1))
def test_sx127x_driver_on_a_broken_bus_raises_only_driver_errors(stream, dio):
    from drivers.lora.sx127x import Sx127x

    d = Sx127x(NoisyBus(stream), Pin(dio), delay_us=lambda us: None)
    try:
        d.connect()
        d.configure(LoRaParams(sf=9))
        d.listen()
        for _ in range(3):
            d.service()
        d.transmit(b"x" * 10)
        d.service()
    except DriverError:
        pass
