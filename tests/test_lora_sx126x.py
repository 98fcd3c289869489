"""The SX126x driver (drivers/lora/sx126x.py) against the simulated chip
(hil/sx126x_sim.py) on the radio medium (hil/radio.py): frames from one
driver instance reach another with the payload intact and RSSI/SNR as the
distance implies, the time on air is the Semtech formula's, and BUSY,
calibration, TCXO, sleep, CAD and the buffer behave as the datasheet says."""

from __future__ import annotations

import math

import pytest

from drivers import DriverError
from drivers.link import FrameTooLong, LinkBusy, LinkClosed, RadioConfigError, RadioFault, Received
from drivers.lora import CadDone, LoRaParams, RxError, TxDone
from drivers.lora.sx126x import Sx126x
from hil.radio import AirParams, RadioMedium
from hil.sx126x_sim import Sx126xSim
from mesh.airtime import lora_toa_us

NOISE_125K = -174 + 10 * math.log10(125000) + 6


def rig(positions, seed=1, params=None, shadowing=0.0, **medium_kw):
    """A medium with one simulated chip + driver per (name, x) position;
    the drivers' waits advance simulated time."""
    m = RadioMedium(seed=seed, path_loss={"shadowing_db": shadowing}, **medium_kw)
    radios, chips = {}, {}
    for name, x in positions:
        m.add_node(name, x, 0)
        chip = Sx126xSim(m, name)
        d = Sx126x(chip, chip.busy, chip.dio1, chip.reset, delay_us=m.advance,
                   clock_ms=lambda: m.now_us // 1000)
        d.connect()
        d.configure(params or LoRaParams(sf=9))
        radios[name], chips[name] = d, chip
    return m, radios, chips


def wait_events(m, radio, limit_us=5_000_000, step_us=1000):
    """Advance time until the radio has events (DIO1 high)."""
    end = m.now_us + limit_us
    while m.now_us < end:
        ev = radio.service()
        if ev:
            return ev
        m.advance(step_us)
    return []


def test_frame_crosses_the_medium_with_payload_rssi_and_snr():
    m, r, chips = rig([("a", 0), ("near", 100), ("far", 1000)])
    r["near"].listen()
    r["far"].listen()
    payload = bytes(range(200))
    toa = r["a"].transmit(payload)
    m.advance(toa)
    got = {}
    for name in ("near", "far"):
        (ev,) = r[name].service()
        assert isinstance(ev, Received) and ev.frame == payload
        got[name] = ev
    assert [type(e) for e in r["a"].service()] == [TxDone]
    # 14 dBm - 40 dB - 30 log10(d): -86 dBm at 100 m, -116 dBm at 1 km (SF9 hears to -129);
    # the chip quantises RSSI to 0.5 dB and SNR to 0.25 dB.
    for name, d in (("near", 100), ("far", 1000)):
        assert got[name].rssi == pytest.approx(14 - 40 - 30 * math.log10(d), abs=0.5)
        assert got[name].snr == pytest.approx(got[name].rssi - NOISE_125K, abs=0.5)
    assert got["near"].rssi - got["far"].rssi == pytest.approx(30, abs=1)
    assert all(c.counters["busy_violations"] == 0 for c in chips.values())


def test_out_of_range_hears_nothing():
    m, r, _ = rig([("a", 0), ("b", 4000)])
    r["b"].listen()
    m.advance(r["a"].transmit(b"too far"))
    assert r["b"].service() == [] and wait_events(m, r["b"], 500_000) == []


@pytest.mark.parametrize("sf", [7, 8, 9, 10, 11, 12])
def test_time_on_air_is_the_semtech_formula_and_the_air_agrees(sf):
    m, r, _ = rig([("a", 0), ("b", 100)], params=LoRaParams(sf=sf))
    r["b"].listen()
    n = 51
    toa = r["a"].transmit(b"\x55" * n)
    t0 = m.now_us                       # SetTx was the last transaction
    assert toa == lora_toa_us(n, sf, 125000, 1, True, True, 8)
    m.run_until(t0 + toa - 1)
    assert r["a"].dio1.value() == 0 and r["b"].dio1.value() == 0
    m.run_until(t0 + toa)
    assert r["a"].dio1.value() == 1 and r["b"].dio1.value() == 1
    assert isinstance(r["a"].service()[0], TxDone)


def test_worked_example_sf9_13_bytes():
    """AN1200.13's formula as its calculator applies it: SF9, 125 kHz, 4/5,
    8-symbol preamble, explicit header, CRC on, 13 bytes -> 28 payload
    symbols, 164.864 ms (T_sym 4.096 ms x 40.25 symbols)."""
    m, r, _ = rig([("a", 0)], params=LoRaParams(sf=9))
    assert r["a"].time_on_air_us(13) == 164864


def test_continuous_receive_walks_and_wraps_the_buffer():
    m, r, chips = rig([("a", 0), ("b", 100)])
    r["b"].listen()
    frames = [bytes([i]) * 200 for i in range(1, 4)]     # 600 bytes through a 256-byte buffer
    starts = []
    for f in frames:
        m.advance(r["a"].transmit(f))
        ev = wait_events(m, r["b"])
        assert [e.frame for e in ev if isinstance(e, Received)] == [f]
        starts.append(chips["b"].last_start)
        r["a"].service()
    assert starts == [0, 200, (400 & 0xFF)]


def test_max_frame_and_too_long():
    m, r, _ = rig([("a", 0), ("b", 50)])
    r["b"].listen()
    m.advance(r["a"].transmit(b"\xff" * 255))
    assert [e.frame for e in wait_events(m, r["b"])] == [b"\xff" * 255]
    with pytest.raises(FrameTooLong):
        r["a"].transmit(b"\x00" * 256)


def test_transmit_while_transmitting_is_busy():
    m, r, _ = rig([("a", 0)])
    r["a"].transmit(b"one")
    with pytest.raises(LinkBusy):
        r["a"].transmit(b"two")


def test_collision_reported_as_crc_error():
    m, r, _ = rig([("a", 0), ("b", 100), ("c", 200)])
    r["b"].listen()
    r["a"].transmit(b"a" * 30)
    r["c"].transmit(b"c" * 30)
    ev = wait_events(m, r["b"])
    assert [(type(e), getattr(e, "reason", None)) for e in ev] == [(RxError, "crc")]
    assert r["b"].counters["crc_errors"] == 1


def test_cad_detects_a_preamble_on_air():
    m, r, _ = rig([("a", 0), ("b", 100)])
    r["b"].cad()
    (ev,) = wait_events(m, r["b"])
    assert isinstance(ev, CadDone) and not ev.detected
    r["a"].transmit(b"x" * 100)
    r["b"].cad()
    (ev,) = wait_events(m, r["b"])
    assert isinstance(ev, CadDone) and ev.detected


def test_rssi_now_sees_the_channel():
    m, r, _ = rig([("a", 0), ("b", 100)])
    r["b"].listen()
    assert r["b"].rssi_now() == pytest.approx(NOISE_125K, abs=0.5)
    m.advance(r["a"].transmit(b"x" * 100) // 2)
    assert r["b"].rssi_now() == pytest.approx(14 - 40 - 60, abs=0.5)


def test_sleep_wakes_on_the_next_command_and_keeps_the_configuration():
    m, r, chips = rig([("a", 0), ("b", 100)])
    r["a"].sleep()
    assert chips["a"].mode == "sleep" and r["a"].busy.value() == 1
    r["b"].listen()
    m.advance(r["a"].transmit(b"awake"))     # first command wakes it (and is discarded)
    assert [e.frame for e in wait_events(m, r["b"])] == [b"awake"]
    assert chips["a"].counters["busy_violations"] == 0


def test_tcxo_module_needs_dio3_supply():
    m = RadioMedium(seed=1)
    m.add_node("t", 0, 0)
    chip = Sx126xSim(m, "t", tcxo=True)
    plain = Sx126x(chip, chip.busy, chip.dio1, delay_us=m.advance)
    with pytest.raises(RadioFault) as e:
        plain.connect()
    assert e.value.reason == "calibration" and "xosc_start" in e.value.failed
    good = Sx126x(chip, chip.busy, chip.dio1, chip.reset, tcxo_voltage=1.8, delay_us=m.advance)
    good.connect()
    good.configure(LoRaParams())
    assert chip.tcxo_ctrl[0] == 2 and chip.calibrated


def test_busy_stuck_and_absent_chip_are_radio_faults():
    m = RadioMedium(seed=1)
    m.add_node("x", 0, 0)
    chip = Sx126xSim(m, "x")
    chip.reset.value(0)                           # held in reset: BUSY stays high
    d = Sx126x(chip, chip.busy, delay_us=m.advance, busy_timeout_us=20000)
    with pytest.raises(RadioFault) as e:
        d.connect()
    assert e.value.reason == "busy_timeout" and e.value.flight == []

    class NoChip:                               # nothing on the bus: MISO reads 0
        def transfer(self, data):
            return bytes(len(data))

    class Low:
        def value(self, v=None):
            return 0

    with pytest.raises(RadioFault) as e:
        Sx126x(NoChip(), Low(), delay_us=m.advance).connect()
    assert e.value.reason == "no_chip" and e.value.flight


def test_operations_before_connect_and_bad_parameters():
    m = RadioMedium(seed=1)
    m.add_node("x", 0, 0)
    chip = Sx126xSim(m, "x")
    d = Sx126x(chip, chip.busy, delay_us=m.advance)
    with pytest.raises(LinkClosed):
        d.transmit(b"x")
    d.connect()
    with pytest.raises(LinkClosed):
        d.listen()
    with pytest.raises(RadioConfigError):
        d.configure(LoRaParams(tx_power_dbm=23))
    with pytest.raises(RadioConfigError):
        Sx126x(chip, chip.busy, variant="sx1281")
    with pytest.raises(RadioConfigError):
        Sx126x(chip, chip.busy, tcxo_voltage=2.0)
    small = Sx126x(chip, chip.busy, variant="llcc68", delay_us=m.advance)
    small.connect()
    with pytest.raises(RadioConfigError):
        small.configure(LoRaParams(sf=11))


def test_chip_reports_a_refused_command():
    m = RadioMedium(seed=1)
    m.add_node("x", 0, 0)
    chip = Sx126xSim(m, "x")
    d = Sx126x(chip, chip.busy, delay_us=m.advance)
    d.connect()
    with pytest.raises(RadioFault) as e:
        d.command(0x8B, bytes((13, 4, 1, 0)), "SetModulationParams")   # SF13
        d.status()
    assert e.value.reason == "command_error" and isinstance(e.value, DriverError)
    with pytest.raises(RadioFault):
        d.command(0x42, b"\x00", "no such opcode")


def test_sync_word_iq_and_frequency_reach_the_air():
    p = LoRaParams(frequency_hz=868100000, sf=8, sync_word=0x34, iq_inverted=True, cr="4/7")
    m, r, chips = rig([("a", 0)], params=p)
    air = chips["a"]._air_params()
    assert abs(air.freq_hz - 868100000) <= 1            # one step is 32 MHz / 2^25 = 0.95 Hz
    air.freq_hz = 868100000
    assert air == AirParams("lora", freq_hz=868100000, sf=8, cr=3, sync=0x34, iq_inverted=True)
    assert chips["a"].regs[0x0740] == 0x34 and chips["a"].regs[0x0741] == 0x44
    assert chips["a"].regs[0x0736] & 0x04 == 0          # §15.4: inverted IQ clears bit 2


def test_drivers_in_real_time_over_a_wall_clock_medium():
    """The same drivers with their default (sleeping) waits, the medium
    advanced by RealtimeMedium's thread: what a rig does."""
    import time as _time

    from hil.radio import RealtimeMedium

    m = RadioMedium(seed=1, path_loss={"shadowing_db": 0.0})
    radios = []
    for name, x in (("a", 0), ("b", 100)):
        m.add_node(name, x, 0)
        chip = Sx126xSim(m, name)
        radios.append(Sx126x(chip, chip.busy, chip.dio1, chip.reset))
    rt = RealtimeMedium(m).start()
    try:
        for d in radios:
            d.connect()
            d.configure(LoRaParams(sf=7))
        radios[1].listen()
        radios[0].transmit(b"wall clock")
        deadline = _time.monotonic() + 5
        got = []
        while not got and _time.monotonic() < deadline:
            got = [e for e in radios[1].service() if isinstance(e, Received)]
            _time.sleep(0.002)
        assert [e.frame for e in got] == [b"wall clock"]
    finally:
        rt.stop()
