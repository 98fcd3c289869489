"""The chip-exact time-on-air formula (drivers/lora/airtime.py): worked
examples, and where the SX126x differs from mesh.airtime (SF5/SF6)."""

from __future__ import annotations

from drivers.lora.airtime import symbol_us, time_on_air_us
from mesh.airtime import lora_toa_us


def test_worked_examples():
    # AN1200.13's formula, as the community calculator built on it prints it:
    # SF9, 125 kHz, CR 4/5, preamble 8, explicit header, CRC, 13 bytes:
    # T_sym 4.096 ms, 28 payload symbols, 164.864 ms.
    assert symbol_us(9) == 4096
    assert time_on_air_us(13, 9) == 164864
    # By hand from SX1276 §4.1.1.7: SF7, 13 bytes: 8 + ceil(120/28) * 5 = 33 payload
    # symbols, (8 + 4.25 + 33) * 1.024 ms = 46.336 ms.
    assert time_on_air_us(13, 7) == 46336
    # SF12 with LDRO, 23 bytes: 8 + ceil(180/40) * 5 = 33; 45.25 * 32.768 ms = 1482.752 ms.
    assert time_on_air_us(23, 12) == 1482752


def test_sx126x_sf5_sf6_differ_from_the_sx127x_formula():
    # SX1261/2 §6.1.4 for SF5: n = 8 + 6.25 + 8 + ceil((80 + 16 - 20 + 20) / 20) * 5
    # = 47.25 symbols of 256 us = 12.096 ms (10 bytes, CR 4/5, CRC, explicit).
    assert time_on_air_us(10, 5, chip="sx126x") == 12096
    # the SX127x-style formula mesh.airtime uses gives 50.25 symbols there
    assert time_on_air_us(10, 5, chip="sx127x") == 12864 == lora_toa_us(10, 5)
    # implicit header, no CRC, SF6: 8 + 6.25 + 8 + ceil((8 - 24) ...) -> max(.., 0)
    assert time_on_air_us(1, 6, explicit=False, crc=False) == (8 + 6.25 + 8) * 512


def test_ldro_rule_follows_the_symbol_time():
    # SF11 at 125 kHz: T_sym 16.384 ms -> DE on; at 250 kHz 8.192 ms -> off
    on = time_on_air_us(50, 11, 125000)
    assert on == time_on_air_us(50, 11, 125000, ldro=True)
    assert on != time_on_air_us(50, 11, 125000, ldro=False)
    assert time_on_air_us(50, 11, 250000) == time_on_air_us(50, 11, 250000, ldro=False)
