"""Time on air of one radio frame: LoRa by the Semtech formula, Wi-Fi by a
simple rate model; EU868 payload limits and spreading-factor choice.

Owns arithmetic only: no radio, no clock, no duty-cycle bookkeeping (that is
``mesh.duty``). Must not know packets' contents. Portable (MicroPython).

The LoRa formula itself (SX1276 datasheet §4.1.1.6-7, SX1262 datasheet
§6.1.4, Semtech AN1200.13 §4) has one implementation,
``drivers.lora.airtime``, the one the chips' drivers report from
``transmit``; this module checks the arguments (``MeshLocalError``) and
plans with the chip the mesh runs on (SX126x by default: its SF5/SF6 header
is two symbols longer and has no "+8" bits term, so an SX127x-style count
would overstate those frames). Every duration is exact microseconds.
"""

from drivers.lora.airtime import low_data_rate as low_data_rate  # re-exported: DE rule
from drivers.lora.airtime import symbol_us as _symbol_us
from drivers.lora.airtime import time_on_air_us
from mesh import MeshLocalError

BANDWIDTHS = (125000, 250000, 500000)

# LoRaWAN Regional Parameters RP002-1.0.3 §2.4.6 (EU863-870), "N": the largest
# application payload without repeater, used here as the mesh frame guide.
# SF5/SF6 are not EU868 LoRaWAN data rates: given SF7's value.
MAX_PAYLOAD_EU868 = {5: 222, 6: 222, 7: 222, 8: 222, 9: 115, 10: 51, 11: 51, 12: 51}

# Demodulator SNR limit per SF (dB): SX1276 datasheet table 13 (SF6..SF12),
# SX1262 datasheet table 6-1 for SF5.
SNR_LIMIT_DB = {5: -2.5, 6: -5.0, 7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}

# Receiver sensitivity at 125 kHz (dBm), SX1276 datasheet table 10 (band 1,
# SF7..SF12); SF5/6 extrapolated by the SNR-limit step. Other bandwidths
# shift by 10*log10(BW/125 kHz).
SENSITIVITY_125K_DBM = {5: -118.0, 6: -121.0, 7: -123.0, 8: -126.0, 9: -129.0,
                        10: -132.0, 11: -134.5, 12: -137.0}


def symbol_us(sf, bw=125000):
    """T_sym = 2^SF / BW in microseconds (an integer for the LoRa bandwidths)."""
    _check(sf, bw, 1)
    return _symbol_us(sf, bw)


def lora_toa_us(pl, sf, bw=125000, cr=1, explicit=True, crc=True, preamble=8, ldro=None,
                chip="sx126x"):
    """Time on air of a LoRa frame of ``pl`` payload bytes, in microseconds
    (``drivers.lora.airtime.time_on_air_us`` after checking the arguments)."""
    _check(sf, bw, cr)
    if pl < 0 or pl > 255:
        raise MeshLocalError("payload length out of range", reason="pl", pl=pl)
    return time_on_air_us(pl, sf, bw, cr, explicit, crc, preamble, ldro, chip)


def lora_toa_ms(pl, sf, bw=125000, cr=1, explicit=True, crc=True, preamble=8):
    """Time on air rounded up to whole milliseconds (what budgets charge)."""
    us = lora_toa_us(pl, sf, bw, cr, explicit, crc, preamble)
    return -((-us) // 1000)


def max_payload(sf):
    """Largest mesh frame at this SF in EU868 (LoRaWAN RP002 "N" as a guide)."""
    if sf not in MAX_PAYLOAD_EU868:
        raise MeshLocalError("spreading factor out of range", reason="sf", sf=sf)
    return MAX_PAYLOAD_EU868[sf]


def sensitivity_dbm(sf, bw=125000):
    """Receiver sensitivity at ``sf`` and ``bw`` (datasheet table, scaled)."""
    _check(sf, bw, 1)
    shift = {125000: 0.0, 250000: 3.0103, 500000: 6.0206}[bw]
    return SENSITIVITY_125K_DBM[sf] + shift


def pick_sf(snr_db, rssi_dbm=None, margin_db=5.0, bw=125000, sfs=(7, 8, 9, 10, 11, 12)):
    """The fastest SF whose SNR limit (and sensitivity, if RSSI is known)
    leaves at least ``margin_db`` for the link measured at ``snr_db``.

    Raises MeshLocalError (reason "no_margin") when even the slowest cannot.
    """
    for sf in sfs:
        if snr_db - SNR_LIMIT_DB[sf] < margin_db:
            continue
        if rssi_dbm is not None and rssi_dbm - sensitivity_dbm(sf, bw) < margin_db:
            continue
        return sf
    raise MeshLocalError("link below every SF's margin", reason="no_margin",
                         snr=snr_db, rssi=rssi_dbm)


def wifi_toa_us(nbytes, rate_kbps=6000, overhead_us=100, header_bytes=36):
    """Simple Wi-Fi airtime model: (MAC header + UDP/IP + payload) at the PHY
    rate plus a fixed overhead (PLCP preamble, SIFS, ACK: about 100 us at
    802.11g/n OFDM rates). For completeness; Wi-Fi links have no duty cycle.
    """
    if nbytes < 0 or rate_kbps <= 0:
        raise MeshLocalError("bad Wi-Fi airtime argument", reason="wifi",
                             nbytes=nbytes, rate=rate_kbps)
    bits = 8 * (nbytes + header_bytes)
    return overhead_us + -((-bits * 1000) // rate_kbps)


def _check(sf, bw, cr):
    if sf < 5 or sf > 12:
        raise MeshLocalError("spreading factor out of range", reason="sf", sf=sf)
    if bw not in BANDWIDTHS:
        raise MeshLocalError("bandwidth not a LoRa bandwidth", reason="bw", bw=bw)
    if cr < 1 or cr > 4:
        raise MeshLocalError("coding rate out of range", reason="cr", cr=cr)
