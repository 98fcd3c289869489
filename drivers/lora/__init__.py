"""LoRa radios: the small ``Radio`` interface every chip driver implements,
the modulation/packet parameters it is configured with, and the events its
``service()`` returns. Drivers: ``drivers.lora.sx126x`` (SX1261/2/8, command
interface) and ``drivers.lora.sx127x`` (SX1276/7/8/9, register interface).

Owns the radio side of a LoRa link. Must not know the mesh (duty-cycle
budgets, packets, routes) nor how SPI/GPIO reach the chip: handles are
injected (``spi.transfer(bytes) -> bytes`` for one chip-select framed
transaction, ``pin.value()`` / ``pin.value(v)``). Portable (MicroPython).

The Radio interface (docs/radio.md)::

    radio.connect()                 reset, find the chip, calibrate
    radio.configure(params)         a LoRaParams
    radio.transmit(frame) -> int    start sending; time on air in us
    radio.listen()                  continuous receive
    radio.cad()                     channel activity detection (result as CadDone)
    radio.service() -> [events]     read and clear the interrupts: TxDone,
                                    Received, RxError, CadDone, TxTimeout
    radio.standby() / radio.sleep()
    radio.time_on_air_us(n)         the chip's formula for an n-byte frame
    radio.rssi_now() -> dBm         instantaneous channel power
    radio.fileno()                  the IRQ line's descriptor, or None
"""

from drivers.link import RadioConfigError
from drivers.lora.airtime import low_data_rate

# Coding rate 4/(4+cr): cr 1..4 as the datasheets number it.
CODING_RATES = {"4/5": 1, "4/6": 2, "4/7": 3, "4/8": 4}
BANDWIDTHS_HZ = (125000, 250000, 500000)

# EU868 defaults, the same channel ``mesh.links`` assumes when a link table
# names none (868.1 MHz, g1: 1 % duty cycle), so the radio transmits where the
# duty-cycle budget charges. 869.525 MHz (g3, 869.4-869.65 MHz, 10 %, 500 mW
# ERP: ETSI EN 300 220-2 / ERC REC 70-03 annex 1 h1.6) is the better mesh
# channel: configure it as ``channel = 869525000``.
REGION_DEFAULTS = {
    "EU868": {"frequency_hz": 868100000, "tx_power_dbm": 14, "sync_word": 0x12},
}


def coding_rate(value):
    """1..4 from ``"4/5"``..``"4/8"`` or the integer itself."""
    if isinstance(value, str):
        if value not in CODING_RATES:
            raise RadioConfigError("coding rate must be 4/5..4/8", param="coding_rate",
                                   value=value)
        return CODING_RATES[value]
    if value not in (1, 2, 3, 4):
        raise RadioConfigError("coding rate must be 1..4", param="coding_rate", value=value)
    return value


class LoRaParams:
    """Modulation and packet parameters shared by both chips.

    ``sync_word`` is the one-byte SX127x form (0x12 private, 0x34 LoRaWAN);
    the SX126x driver writes it as 0xX4Y4 (0x1424, 0x3444: SX1261/2
    datasheet §6.1.1.1 / register 0x0740). ``ldro`` None means the datasheets'
    rule: on when a symbol lasts 16 ms or more.
    """

    __slots__ = ("frequency_hz", "sf", "bandwidth_hz", "cr", "tx_power_dbm", "sync_word",
                 "preamble", "crc", "explicit", "iq_inverted", "ldro")

    def __init__(self, frequency_hz=869525000, sf=7, bandwidth_hz=125000, cr=1,
                 tx_power_dbm=14, sync_word=0x12, preamble=8, crc=True, explicit=True,
                 iq_inverted=False, ldro=None):
        self.frequency_hz = int(frequency_hz)
        self.sf = sf
        self.bandwidth_hz = bandwidth_hz
        self.cr = coding_rate(cr)
        self.tx_power_dbm = tx_power_dbm
        self.sync_word = sync_word
        self.preamble = preamble
        self.crc = bool(crc)
        self.explicit = bool(explicit)
        self.iq_inverted = bool(iq_inverted)
        self.ldro = ldro
        self.check()

    def check(self):
        if not 5 <= self.sf <= 12:
            raise RadioConfigError("spreading factor must be 5..12", param="sf", value=self.sf)
        if self.bandwidth_hz not in BANDWIDTHS_HZ:
            raise RadioConfigError("bandwidth must be 125, 250 or 500 kHz",
                                   param="bandwidth_hz", value=self.bandwidth_hz)
        if not 150000000 <= self.frequency_hz <= 960000000:
            raise RadioConfigError("frequency outside 150-960 MHz", param="frequency_hz",
                                   value=self.frequency_hz)
        if not 0 <= self.sync_word <= 0xFF:
            raise RadioConfigError("sync word is one byte", param="sync_word",
                                   value=self.sync_word)
        if not 6 <= self.preamble <= 0xFFFF:
            raise RadioConfigError("preamble must be 6..65535 symbols", param="preamble",
                                   value=self.preamble)

    def low_data_rate(self):
        """DE/LDRO: SX1276 datasheet §4.1.1.6, SX1261/2 datasheet §6.1.1.4."""
        if self.ldro is not None:
            return bool(self.ldro)
        return low_data_rate(self.sf, self.bandwidth_hz)

    def copy(self, **changes):
        p = LoRaParams(self.frequency_hz, self.sf, self.bandwidth_hz, self.cr,
                       self.tx_power_dbm, self.sync_word, self.preamble, self.crc,
                       self.explicit, self.iq_inverted, self.ldro)
        for k in changes:
            setattr(p, k, changes[k])
        p.cr = coding_rate(p.cr)
        p.check()
        return p

    def __repr__(self):
        return "LoRaParams(%d Hz, SF%d, %d kHz, 4/%d, %d dBm)" % (
            self.frequency_hz, self.sf, self.bandwidth_hz // 1000, self.cr + 4,
            self.tx_power_dbm)


def params_from_config(table):
    """LoRaParams from a ``[[mesh.link]] kind = "lora"`` table, read with the
    keys ``mesh.links`` reads too (docs/radio.md): ``channel`` (Hz) or
    ``frequency_mhz``, ``sf``, ``bandwidth`` (Hz) or ``bandwidth_khz``,
    ``coding_rate``, ``preamble``; and ``region``, ``tx_power_dbm``,
    ``sync_word``. Unknown keys are the caller's business (the agent
    validates its configuration)."""
    region = table.get("region", "EU868")
    if region not in REGION_DEFAULTS:
        raise RadioConfigError("unknown region", param="region", value=region)
    d = REGION_DEFAULTS[region]
    freq = table.get("channel")
    if freq is None and table.get("frequency_mhz") is not None:
        freq = int(round(table["frequency_mhz"] * 1000000))
    bw = table.get("bandwidth")
    if bw is None:
        bw = int(round(table.get("bandwidth_khz", 125) * 1000))
    return LoRaParams(
        frequency_hz=d["frequency_hz"] if freq is None else freq,
        sf=table.get("sf", 9),
        bandwidth_hz=bw,
        cr=table.get("coding_rate", "4/5"),
        tx_power_dbm=table.get("tx_power_dbm", d["tx_power_dbm"]),
        sync_word=table.get("sync_word", d["sync_word"]),
        preamble=table.get("preamble", 8))


class TxDone:
    """The frame started by ``transmit`` has left the antenna."""

    __slots__ = ("toa_us",)

    def __init__(self, toa_us):
        self.toa_us = toa_us


class TxTimeout:
    """The chip's TX timeout fired before the frame ended (a hardware fault)."""

    __slots__ = ()


class RxError:
    """A frame was heard but is unusable: ``reason`` "crc" or "header"."""

    __slots__ = ("reason",)

    def __init__(self, reason):
        self.reason = reason


class CadDone:
    """Channel activity detection ended; ``detected`` a LoRa preamble."""

    __slots__ = ("detected",)

    def __init__(self, detected):
        self.detected = detected


class Radio:
    """Base of the chip drivers: the interface, and the pieces they share."""

    chip = "?"
    max_payload = 255

    def connect(self):
        raise NotImplementedError

    def configure(self, params):
        raise NotImplementedError

    def transmit(self, frame):
        raise NotImplementedError

    def listen(self):
        raise NotImplementedError

    def cad(self):
        raise NotImplementedError

    def service(self):
        raise NotImplementedError

    def standby(self):
        raise NotImplementedError

    def sleep(self):
        raise NotImplementedError

    def time_on_air_us(self, n):
        raise NotImplementedError

    def rssi_now(self):
        raise NotImplementedError

    def fileno(self):
        return None

    def close(self):
        return None


def default_delay_us():
    """A ``delay_us(n)`` for BUSY/reset waits: ``time.sleep_us`` on
    MicroPython, ``time.sleep`` elsewhere (IO pacing, not protocol timing)."""
    import time
    sleep_us = getattr(time, "sleep_us", None)
    if sleep_us is not None:
        return sleep_us

    def delay(us):
        time.sleep(us / 1000000)
    return delay
