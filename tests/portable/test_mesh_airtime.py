"""mesh.airtime: the Semtech time-on-air formula against published values
(Semtech LoRa Calculator / SX1276 datasheet §4.1.1.7), payload limits and
SF choice by SNR margin."""

from mesh import MeshLocalError
from mesh.airtime import (
    lora_toa_ms,
    lora_toa_us,
    low_data_rate,
    max_payload,
    pick_sf,
    sensitivity_dbm,
    symbol_us,
    wifi_toa_us,
)


def _raises(fn, reason):
    try:
        fn()
    except MeshLocalError as e:
        assert e.reason == reason, e.fields
    else:
        raise AssertionError("no MeshLocalError")


def test_symbol_time_and_ldro():
    assert symbol_us(7) == 1024
    assert symbol_us(12) == 32768
    assert symbol_us(9, 500000) == 1024
    assert not low_data_rate(10) and low_data_rate(11) and low_data_rate(12)
    assert not low_data_rate(12, 500000)


def test_published_values():
    # SF7/125 kHz/4-5, 10-byte payload, 8-symbol preamble, explicit header, CRC:
    # 41.216 ms; SF12/125 kHz, 51 bytes: 2465.792 ms (LDRO on).
    assert lora_toa_us(10, 7) == 41216
    assert lora_toa_us(51, 12) == 2465792
    assert lora_toa_ms(10, 7) == 42                 # budgets charge whole ms, rounded up
    # a longer coding rate or a wider band changes the air time as the formula says
    assert lora_toa_us(10, 7, cr=4) > lora_toa_us(10, 7, cr=1)
    assert lora_toa_us(10, 7, 250000) * 2 == lora_toa_us(10, 7)


def test_monotonic_in_length_and_sf():
    for sf in (7, 8, 9, 10, 11, 12):
        last = 0
        for pl in (0, 1, 20, 51, 115, 222, 255):
            t = lora_toa_us(pl, sf)
            assert t >= last
            last = t
        if sf > 7:
            assert lora_toa_us(50, sf) > lora_toa_us(50, sf - 1)


def test_limits_and_errors():
    assert max_payload(7) == 222 and max_payload(8) == 222 and max_payload(9) == 115
    assert max_payload(12) == 51
    _raises(lambda: lora_toa_us(10, 13), "sf")
    _raises(lambda: lora_toa_us(10, 7, 100000), "bw")
    _raises(lambda: lora_toa_us(10, 7, cr=5), "cr")
    _raises(lambda: lora_toa_us(256, 7), "pl")
    _raises(lambda: max_payload(4), "sf")


def test_pick_sf_by_margin():
    assert pick_sf(10.0) == 7                         # -7.5 limit + 5 dB margin
    assert pick_sf(-6.0) == 9                         # SF8 limit -10 -> margin 4 only
    assert pick_sf(-12.0, -120.0) == 11
    assert sensitivity_dbm(7, 250000) > sensitivity_dbm(7)
    _raises(lambda: pick_sf(-30.0), "no_margin")


def test_wifi_airtime():
    assert wifi_toa_us(0) < wifi_toa_us(1400)
    assert wifi_toa_us(1400, 54000) < wifi_toa_us(1400, 6000)
    _raises(lambda: wifi_toa_us(-1), "wifi")
