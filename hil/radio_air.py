"""What travels through ``hil.radio``'s medium: the parameters a frame is
sent and heard with (``AirParams``: who can demodulate whom, time on air,
noise floor, sensitivity), what a receiver gets (``Reception``), the
interference table and the deterministic per-link random draws.

Owns the physics constants and their sources. Must not know simulated time
or nodes (that is ``hil.radio``). Split from ``hil.radio`` to keep modules
small; import these names from either.
"""

import hashlib
import math
import struct

from hil import HilError
from mesh.airtime import SNR_LIMIT_DB, lora_toa_us, sensitivity_dbm, wifi_toa_us

# Goursaud & Gorce 2015, as ns-3 lorawan's LoraInterferenceHelper tabulates it:
# SIR (dB) the wanted frame (row, SF7..12) needs against an interferer (column).
ISOLATION_DB = (
    (6, -16, -18, -19, -19, -20),
    (-24, 6, -20, -22, -22, -22),
    (-27, -27, 6, -23, -25, -25),
    (-30, -30, -30, 6, -26, -28),
    (-33, -33, -33, -33, 6, -29),
    (-36, -36, -36, -36, -36, 6),
)
WIFI_CAPTURE_DB = 10.0          # SINR a 6 Mb/s OFDM frame survives with (ns-2's capture rule)
WIFI_SENSITIVITY_DBM = -82.0    # IEEE 802.11-2016 table 17-18, 6 Mb/s, 20 MHz
WIFI_BW_HZ = 20000000
WIFI_SNR_LIMIT_DB = 5.0
TABLE_LINK_MARGIN_DB = 3.0      # a table link below sensitivity is heard this far above it


class MediumError(HilError):
    """The medium was misused (unknown node, time going backwards...); the
    keyword arguments are kept as attributes (``fields``)."""

    def __init__(self, message="", **fields):
        super().__init__(message)
        self.fields = fields
        for k in fields:
            setattr(self, k, fields[k])


class AirParams:
    """What a transmitter sends with, and what a receiver listens for."""

    __slots__ = ("kind", "freq_hz", "sf", "bw_hz", "cr", "sync", "iq_inverted", "explicit",
                 "crc", "preamble", "ldro", "rate_kbps", "sfs")

    def __init__(self, kind="lora", freq_hz=869525000, sf=7, bw_hz=125000, cr=1, sync=0x12,
                 iq_inverted=False, explicit=True, crc=True, preamble=8, ldro=None,
                 rate_kbps=6000, sfs=None):
        if kind not in ("lora", "wifi"):
            raise MediumError("radio kind must be lora or wifi", kind=kind)
        self.kind = kind
        self.freq_hz = freq_hz
        self.sf = sf
        self.bw_hz = bw_hz if kind == "lora" else WIFI_BW_HZ
        self.cr = cr
        self.sync = sync
        self.iq_inverted = iq_inverted
        self.explicit = explicit
        self.crc = crc
        self.preamble = preamble
        self.ldro = ldro
        self.rate_kbps = rate_kbps
        # A receiver that demodulates several SFs at once on its channel (the
        # SX1302/SX1303 gateway basebands do; SX126x/SX127x listen on one):
        # None = ``sf`` only. Ignored for transmitting.
        self.sfs = None if sfs is None or kind != "lora" else tuple(sorted(set(sfs)))

    def key(self):
        return (self.kind, self.freq_hz, self.sf, self.bw_hz, self.cr, self.sync,
                self.iq_inverted, self.explicit, self.crc, self.preamble, self.rate_kbps,
                self.sfs)

    def __eq__(self, other):
        return isinstance(other, AirParams) and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def toa_us(self, n):
        if self.kind == "wifi":
            return wifi_toa_us(n, self.rate_kbps)
        return lora_toa_us(n, self.sf, self.bw_hz, self.cr, self.explicit, self.crc,
                           self.preamble, self.ldro)

    def hears(self, tx):
        """Can a receiver tuned to ``self`` demodulate a frame sent with ``tx``?
        LoRa: same SF (one of ``sfs`` for a multi-SF receiver), bandwidth,
        sync word, IQ and header mode, and a carrier within +-25 % of the
        bandwidth (SX1276 datasheet §4.1.5 table: the tolerated offset);
        Wi-Fi: the same channel."""
        if self.kind != tx.kind:
            return False
        if self.kind == "wifi":
            return self.freq_hz == tx.freq_hz
        sf_ok = self.sf == tx.sf if self.sfs is None else tx.sf in self.sfs
        return (sf_ok and self.bw_hz == tx.bw_hz and self.sync == tx.sync
                and self.iq_inverted == tx.iq_inverted and self.explicit == tx.explicit
                and abs(self.freq_hz - tx.freq_hz) * 4 <= self.bw_hz)

    def overlaps(self, other):
        """Do the two occupied channels overlap in frequency?"""
        return abs(self.freq_hz - other.freq_hz) * 2 < self.bw_hz + other.bw_hz

    def noise_dbm(self, nf_db):
        return -174.0 + 10 * math.log10(self.bw_hz) + nf_db

    def sensitivity_dbm(self):
        if self.kind == "wifi":
            return WIFI_SENSITIVITY_DBM
        return sensitivity_dbm(self.sf, self.bw_hz)

    def snr_limit_db(self):
        return WIFI_SNR_LIMIT_DB if self.kind == "wifi" else SNR_LIMIT_DB[self.sf]

    def __repr__(self):
        if self.kind == "wifi":
            return "AirParams(wifi, %d Hz)" % self.freq_hz
        sf = "SF%d" % self.sf if self.sfs is None else "SF%s" % "/".join(map(str, self.sfs))
        return "AirParams(lora, %d Hz, %s, %d kHz)" % (self.freq_hz, sf, self.bw_hz // 1000)


class Reception:
    """A frame as one receiver got it: ``ok`` False when a collision destroyed
    it after the receiver locked on (the chip reports a CRC error)."""

    __slots__ = ("frame", "rssi", "snr", "src", "start_us", "end_us", "ok", "reason", "params")

    def __init__(self, frame, rssi, snr, src, start_us, end_us, ok=True, reason=None,
                 params=None):
        self.frame = frame
        self.rssi = rssi
        self.snr = snr
        self.src = src
        self.start_us = start_us
        self.end_us = end_us
        self.ok = ok
        self.reason = reason
        self.params = params


def _gauss(seed, tag, a, b):
    """A standard normal draw fixed by (seed, tag, a, b): Box-Muller on a hash."""
    h = hashlib.blake2b(("%s|%s|%s|%s" % (seed, tag, a, b)).encode(), digest_size=16).digest()
    u1, u2 = struct.unpack("<QQ", h)
    u1 = (u1 + 1) / 18446744073709551617.0
    u2 = u2 / 18446744073709551616.0
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)


def _mw(dbm):
    return 10.0 ** (dbm / 10.0)



def scenario_params(scenario, sf=7):
    """The AirParams a scenario's ``radio`` block implies (LoRa at ``sf``)."""
    radio = scenario.get("radio", {})
    if radio.get("kind", "lora") == "wifi":
        return AirParams("wifi", freq_hz=int(radio.get("channel_mhz", 2412) * 1000000),
                         rate_kbps=int(radio.get("rate_kbps", 6000)))
    cr = radio.get("coding_rate", "4/5")
    cr = int(cr.split("/")[1]) - 4 if isinstance(cr, str) else int(cr)
    return AirParams("lora", freq_hz=int(radio.get("frequency_mhz", 869.525) * 1000000),
                     sf=sf, bw_hz=int(radio.get("bandwidth_khz", 125)) * 1000, cr=cr)


def _isolation(params, other_sf):
    if params.kind == "wifi":
        return WIFI_CAPTURE_DB
    if params.sf == other_sf:
        return ISOLATION_DB[0][0]
    row = min(max(params.sf, 7), 12) - 7
    col = min(max(other_sf, 7), 12) - 7
    if row == col:                   # SF5/6 against SF7 (or each other): nearest entry
        col = col + 1 if col < 5 else col - 1
    return ISOLATION_DB[row][col]
