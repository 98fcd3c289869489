"""The SX127x driver (drivers/lora/sx127x.py) against the simulated chip
(hil/sx127x_sim.py) on the radio medium, and across chip families: an SX1276
and an SX1262 with the same modulation hear each other."""

from __future__ import annotations

import math

import pytest

from drivers.link import FrameTooLong, LinkClosed, RadioConfigError, RadioFault, Received
from drivers.lora import CadDone, LoRaParams, RxError, TxDone
from drivers.lora.sx126x import Sx126x
from drivers.lora.sx127x import Sx127x
from hil.radio import RadioMedium
from hil.sx126x_sim import Sx126xSim
from hil.sx127x_sim import Sx127xSim
from mesh.airtime import lora_toa_us

NOISE_125K = -174 + 10 * math.log10(125000) + 6


def rig(positions, params=None, **kw):
    m = RadioMedium(seed=2, path_loss={"shadowing_db": 0.0}, **kw)
    radios, chips = {}, {}
    for name, x in positions:
        m.add_node(name, x, 0)
        chip = Sx127xSim(m, name)
        d = Sx127x(chip, chip.dio0, chip.reset, delay_us=m.advance,
                   clock_ms=lambda: m.now_us // 1000)
        d.connect()
        d.configure(params or LoRaParams(sf=9))
        radios[name], chips[name] = d, chip
    return m, radios, chips


def test_frame_crosses_with_rssi_and_snr_from_the_registers():
    m, r, chips = rig([("a", 0), ("near", 100), ("far", 1000)])
    r["near"].listen()
    r["far"].listen()
    payload = b"\xa5" * 120
    m.advance(r["a"].transmit(payload))
    for name, d in (("near", 100), ("far", 1000)):
        (ev,) = r[name].service()
        assert isinstance(ev, Received) and ev.frame == payload
        assert ev.rssi == pytest.approx(14 - 40 - 30 * math.log10(d), abs=1.0)
        assert ev.snr == pytest.approx(14 - 40 - 30 * math.log10(d) - NOISE_125K, abs=0.25)
    assert [type(e) for e in r["a"].service()] == [TxDone]
    assert chips["a"].mode == 1                     # back in STDBY after TX


@pytest.mark.parametrize("sf", [7, 9, 12])
def test_time_on_air_matches_the_formula_and_the_air(sf):
    m, r, _ = rig([("a", 0), ("b", 100)], params=LoRaParams(sf=sf))
    r["b"].listen()
    toa = r["a"].transmit(b"\x01" * 20)
    t0 = m.now_us
    assert toa == lora_toa_us(20, sf)
    m.run_until(t0 + toa - 1)
    assert r["a"].dio0.value() == 0
    m.run_until(t0 + toa)
    assert r["a"].dio0.value() == 1 and r["b"].dio0.value() == 1


def test_successive_packets_walk_the_fifo():
    m, r, chips = rig([("a", 0), ("b", 100)])
    r["b"].listen()
    for i in range(4):
        frame = bytes([i]) * 100
        m.advance(r["a"].transmit(frame))
        r["a"].service()
        assert [e.frame for e in r["b"].service()] == [frame]
    assert chips["b"].regs[0x10] == 300 & 0xFF      # RegFifoRxCurrentAddr walked and wrapped


def test_long_range_mode_changes_only_in_sleep():
    m = RadioMedium(seed=1)
    m.add_node("x", 0, 0)
    chip = Sx127xSim(m, "x")
    chip.transfer(b"\x81\x01")                     # FSK STDBY
    chip.transfer(b"\x81\x81")                     # LoRa bit while in STDBY: ignored
    assert chip.transfer(b"\x01\x00")[1] == 0x01
    chip.transfer(b"\x81\x00")
    chip.transfer(b"\x81\x80")                     # in SLEEP it takes
    assert chip.transfer(b"\x01\x00")[1] == 0x80
    chip.transfer(b"\x92\xff")                     # IRQ flags: write-one-to-clear
    assert chip.transfer(b"\x42\x00")[1] == 0x12   # RegVersion


def test_collision_cad_and_rssi():
    m, r, _ = rig([("a", 0), ("b", 100), ("c", 200)])
    r["b"].cad()
    m.advance(10000)
    (ev,) = r["b"].service()
    assert isinstance(ev, CadDone) and not ev.detected
    r["b"].listen()
    assert r["b"].rssi_now() == pytest.approx(NOISE_125K, abs=1)
    r["a"].transmit(b"a" * 40)
    r["c"].transmit(b"c" * 40)
    m.advance(20000)
    assert r["b"].rssi_now() == pytest.approx(-86 + 3, abs=1)      # two frames of -86 dBm
    m.advance(lora_toa_us(40, 9))
    assert [(type(e), e.reason) for e in r["b"].service()] == [(RxError, "crc")]


def test_parameters_and_absent_chip():
    m = RadioMedium(seed=1)
    m.add_node("x", 0, 0)
    chip = Sx127xSim(m, "x")
    d = Sx127x(chip, chip.dio0, delay_us=m.advance)
    with pytest.raises(LinkClosed):
        d.transmit(b"x")
    d.connect()
    for bad in (LoRaParams(sf=5), LoRaParams(sf=6), LoRaParams(tx_power_dbm=18),
                LoRaParams(tx_power_dbm=21)):
        with pytest.raises(RadioConfigError):
            d.configure(bad)
    d.configure(LoRaParams(sf=6, explicit=False, tx_power_dbm=20))
    assert chip._power_dbm() == 20 and chip._air_params().sf == 6
    with pytest.raises(FrameTooLong):
        d.transmit(b"x" * 256)

    class Nothing:
        def transfer(self, data):
            return bytes(len(data))

    with pytest.raises(RadioFault) as e:
        Sx127x(Nothing(), delay_us=m.advance).connect()
    assert e.value.reason == "no_chip"


def test_sx1276_and_sx1262_hear_each_other():
    m = RadioMedium(seed=4, path_loss={"shadowing_db": 0.0})
    m.add_node("old", 0, 0)
    m.add_node("new", 300, 0)
    c7, c6 = Sx127xSim(m, "old"), Sx126xSim(m, "new")
    p = LoRaParams(sf=8, sync_word=0x12)
    old = Sx127x(c7, c7.dio0, delay_us=m.advance)
    new = Sx126x(c6, c6.busy, c6.dio1, delay_us=m.advance)
    for d in (old, new):
        d.connect()
        d.configure(p)
    new.listen()
    toa = old.transmit(b"from an SX1276")
    assert toa == new.time_on_air_us(14)           # same formula from SF7 up
    m.advance(toa)
    assert [e.frame for e in new.service()] == [b"from an SX1276"]
    old.service()
    old.listen()
    m.advance(new.transmit(b"and back"))
    assert [e.frame for e in old.service()] == [b"and back"]
