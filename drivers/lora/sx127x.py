"""SX1276 / SX1277 / SX1278 / SX1279 (and RFM95-98 modules) LoRa driver over
SPI, written from the Semtech SX1276/77/78/79 datasheet rev. 7 (§ below).

Owns the register interface in LoRa mode: operating modes, frequency, PA,
modem configuration, FIFO with its TX/RX base addresses, IRQ flags, DIO0
mapping, packet RSSI/SNR. Must not know the mesh or how SPI/GPIO are wired:
``spi.transfer(bytes) -> bytes`` (one NSS-framed transaction) and optional
``dio0``/``reset`` pins are injected. Portable (MicroPython).

SPI access (§4.3): the first byte is wnr (1 = write) and a 7-bit address; the
following bytes are data, the address incrementing after each (burst), except
at RegFifo (0x00) where each byte moves the FIFO pointer RegFifoAddrPtr.
"""

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

from drivers.link import (
    FrameTooLong,
    LinkBusy,
    LinkClosed,
    RadioConfigError,
    RadioFault,
    Received,
    monotonic_ms,
)
from drivers.lora import CadDone, Radio, RxError, TxDone, default_delay_us
from drivers.lora.airtime import time_on_air_us

# LoRa register map (§6.4).
REG_FIFO = const(0x00)
REG_OP_MODE = const(0x01)
REG_FRF_MSB = const(0x06)
REG_PA_CONFIG = const(0x09)
REG_OCP = const(0x0B)
REG_LNA = const(0x0C)
REG_FIFO_ADDR_PTR = const(0x0D)
REG_FIFO_TX_BASE = const(0x0E)
REG_FIFO_RX_BASE = const(0x0F)
REG_FIFO_RX_CURRENT = const(0x10)
REG_IRQ_FLAGS_MASK = const(0x11)
REG_IRQ_FLAGS = const(0x12)
REG_RX_NB_BYTES = const(0x13)
REG_PKT_SNR = const(0x19)
REG_PKT_RSSI = const(0x1A)
REG_RSSI = const(0x1B)
REG_MODEM_CONFIG1 = const(0x1D)
REG_MODEM_CONFIG2 = const(0x1E)
REG_PREAMBLE_MSB = const(0x20)
REG_PAYLOAD_LENGTH = const(0x22)
REG_MAX_PAYLOAD_LENGTH = const(0x23)
REG_MODEM_CONFIG3 = const(0x26)
REG_DETECT_OPTIMIZE = const(0x31)
REG_INVERT_IQ = const(0x33)
REG_DETECTION_THRESHOLD = const(0x37)
REG_SYNC_WORD = const(0x39)
REG_INVERT_IQ2 = const(0x3B)
REG_DIO_MAPPING1 = const(0x40)
REG_VERSION = const(0x42)
REG_PA_DAC = const(0x4D)

# RegOpMode (§6.4): bit 7 LongRangeMode (changeable in SLEEP only), bits 2:0 mode.
LONG_RANGE = const(0x80)
MODE_SLEEP = const(0)
MODE_STDBY = const(1)
MODE_TX = const(3)
MODE_RX_CONTINUOUS = const(5)
MODE_CAD = const(7)

# RegIrqFlags (§6.4), cleared by writing 1.
IRQ_RX_TIMEOUT = const(0x80)
IRQ_RX_DONE = const(0x40)
IRQ_CRC_ERROR = const(0x20)
IRQ_VALID_HEADER = const(0x10)
IRQ_TX_DONE = const(0x08)
IRQ_CAD_DONE = const(0x04)
IRQ_CAD_DETECTED = const(0x01)

# RegDioMapping1 bits 7:6, DIO0 in LoRa mode (§4.1.?, table 18): RxDone, TxDone, CadDone.
DIO0_RX_DONE = const(0x00)
DIO0_TX_DONE = const(0x40)
DIO0_CAD_DONE = const(0x80)

BW_CODES = {125000: 0x7, 250000: 0x8, 500000: 0x9}   # RegModemConfig1 bits 7:4
VERSION = const(0x12)                                # RegVersion of SX1276/77/78/79
HF_RSSI_OFFSET = -157                                # §5.5.5: HF port (band 1)
LF_RSSI_OFFSET = -164                                # LF port (bands 2, 3)


class Sx127x(Radio):
    """Driver for one SX127x chip. ``pa_boost`` True for modules wired to
    the PA_BOOST pin (RFM95/96, most boards: 2..17 dBm, 20 dBm with the high
    power DAC), False for the RFO pin (0..15 dBm)."""

    chip = "sx127x"

    def __init__(self, spi, dio0=None, reset=None, pa_boost=True, delay_us=None, clock_ms=None):
        self.spi = spi
        self.dio0 = dio0
        self.reset_pin = reset
        self.pa_boost = pa_boost
        self.delay_us = delay_us or default_delay_us()
        self.clock_ms = clock_ms or monotonic_ms
        self.params = None
        self.counters = {"tx": 0, "rx": 0, "crc_errors": 0}
        self._connected = False
        self._mode = "standby"
        self._tx_toa = 0

    # -- registers ----------------------------------------------------------

    def write(self, addr, data):
        out = self.spi.transfer(bytes((0x80 | addr,)) + bytes(data))
        if out is None or len(out) != 1 + len(data):
            raise RadioFault("SPI answered a wrong length", chip="sx127x", reason="spi")

    def read(self, addr, n=1):
        out = self.spi.transfer(bytes((addr & 0x7F,)) + bytes(n))
        if out is None or len(out) != 1 + n:
            raise RadioFault("SPI answered a wrong length", chip="sx127x", reason="spi")
        return out[1:]

    def reg(self, addr):
        return self.read(addr, 1)[0]

    def _op(self, mode):
        self.write(REG_OP_MODE, bytes((LONG_RANGE | mode,)))

    # -- set-up ---------------------------------------------------------------

    def connect(self):
        """Reset (§7.2.2: NRESET low 100 us, then 5 ms), check RegVersion,
        enter LoRa mode through SLEEP."""
        if self.reset_pin is not None:
            self.reset_pin.value(0)
            self.delay_us(100)
            self.reset_pin.value(1)
            self.delay_us(5000)
        version = self.reg(REG_VERSION)
        if version != VERSION:
            raise RadioFault("no SX127x answers (RegVersion 0x%02x)" % version, chip="sx127x",
                             reason="no_chip", version=version)
        self.write(REG_OP_MODE, bytes((MODE_SLEEP,)))
        self._op(MODE_SLEEP)
        if not self.reg(REG_OP_MODE) & LONG_RANGE:
            raise RadioFault("LoRa mode refused", chip="sx127x", reason="mode")
        self._op(MODE_STDBY)
        self._connected = True
        self._mode = "standby"

    def _check_params(self, p):
        if p.sf < 6:
            raise RadioConfigError("SX127x spreading factors are 6..12", param="sf", value=p.sf)
        if p.sf == 6 and p.explicit:
            raise RadioConfigError("SF6 works in implicit header mode only (§4.1.1.2)",
                                   param="explicit", value=True)
        lo, hi = (2, 20) if self.pa_boost else (0, 15)
        if not lo <= p.tx_power_dbm <= hi or (self.pa_boost and p.tx_power_dbm in (18, 19)):
            raise RadioConfigError("tx power out of the PA's range", param="tx_power_dbm",
                                   value=p.tx_power_dbm)

    def _power_registers(self, dbm):
        """RegPaConfig, RegPaDac, RegOcp for ``dbm`` (§5.4.2-5.4.3)."""
        if not self.pa_boost:                           # RFO, MaxPower 7: Pmax 15 dBm
            return 0x70 | dbm, 0x84, 0x2B
        if dbm == 20:                                   # +20 dBm: PaDac 0x87, Pout = 5 + OutputPower
            return 0x80 | 0x70 | 15, 0x87, 0x31         # OCP 140 mA
        return 0x80 | 0x70 | (dbm - 2), 0x84, 0x2B      # Pout = 17 - (15 - OutputPower); OCP 100 mA

    def configure(self, params):
        self._need_connected()
        self._check_params(params)
        p = params
        self.standby()
        frf = (p.frequency_hz << 19) // 32000000        # §4.1.4: Frf = F * 2^19 / 32 MHz
        self.write(REG_FRF_MSB, frf.to_bytes(3, "big"))
        pa, dac, ocp = self._power_registers(p.tx_power_dbm)
        self.write(REG_PA_CONFIG, bytes((pa,)))
        self.write(REG_PA_DAC, bytes((dac,)))
        self.write(REG_OCP, bytes((ocp,)))
        self.write(REG_LNA, b"\x23")                    # G1, LNA boost for the HF port
        mc1 = (BW_CODES[p.bandwidth_hz] << 4) | (p.cr << 1) | (0 if p.explicit else 1)
        mc2 = (p.sf << 4) | (0x04 if p.crc else 0)
        self.write(REG_MODEM_CONFIG1, bytes((mc1, mc2, 0x64)))     # + RegSymbTimeoutLsb
        self.write(REG_PREAMBLE_MSB, p.preamble.to_bytes(2, "big"))
        self.write(REG_MAX_PAYLOAD_LENGTH, b"\xff")
        self.write(REG_MODEM_CONFIG3, bytes((0x04 | (0x08 if p.low_data_rate() else 0),)))
        opt = self.reg(REG_DETECT_OPTIMIZE) & 0xF8
        self.write(REG_DETECT_OPTIMIZE, bytes((opt | (0x05 if p.sf == 6 else 0x03),)))
        self.write(REG_DETECTION_THRESHOLD, b"\x0c" if p.sf == 6 else b"\x0a")
        self.write(REG_SYNC_WORD, bytes((p.sync_word,)))
        iq = self.reg(REG_INVERT_IQ) & 0xBF
        self.write(REG_INVERT_IQ, bytes((iq | (0x40 if p.iq_inverted else 0),)))
        self.write(REG_INVERT_IQ2, b"\x19" if p.iq_inverted else b"\x1d")
        self.write(REG_FIFO_TX_BASE, b"\x00\x00")       # TX base 0, RX base 0
        self.write(REG_IRQ_FLAGS_MASK, b"\x00")
        if self.read(REG_MODEM_CONFIG1, 2) != bytes((mc1, mc2)):
            raise RadioFault("modem configuration did not stick", chip="sx127x",
                             reason="readback")
        self.params = p

    # -- operation ------------------------------------------------------------

    def time_on_air_us(self, n):
        p = self.params
        return time_on_air_us(n, p.sf, p.bandwidth_hz, p.cr, p.explicit, p.crc, p.preamble,
                              p.low_data_rate(), "sx127x")

    def transmit(self, frame):
        """FIFO from the TX base, RegPayloadLength, TX mode (§4.1.6.1)."""
        self._need_configured()
        if len(frame) > self.max_payload:
            raise FrameTooLong("LoRa frame too long", link="lora", size=len(frame),
                               mtu=self.max_payload)
        if self._mode == "tx":
            raise LinkBusy("a transmission is in progress", link="lora")
        self.standby()
        self.write(REG_FIFO_ADDR_PTR, b"\x00")
        self.write(REG_FIFO, frame)
        self.write(REG_PAYLOAD_LENGTH, bytes((len(frame),)))
        self.write(REG_DIO_MAPPING1, bytes((DIO0_TX_DONE,)))
        self.write(REG_IRQ_FLAGS, b"\xff")
        self._op(MODE_TX)
        self._mode = "tx"
        self._tx_toa = self.time_on_air_us(len(frame))
        self.counters["tx"] += 1
        return self._tx_toa

    def listen(self):
        """RX continuous (§4.1.6.2)."""
        self._need_configured()
        self.standby()
        self.write(REG_FIFO_ADDR_PTR, b"\x00")
        self.write(REG_DIO_MAPPING1, bytes((DIO0_RX_DONE,)))
        self.write(REG_IRQ_FLAGS, b"\xff")
        self._op(MODE_RX_CONTINUOUS)
        self._mode = "rx"

    def cad(self):
        self._need_configured()
        self.standby()
        self.write(REG_DIO_MAPPING1, bytes((DIO0_CAD_DONE,)))
        self.write(REG_IRQ_FLAGS, b"\xff")
        self._op(MODE_CAD)
        self._mode = "cad"

    def service(self):
        if not self._connected:
            return []
        if self.dio0 is not None and not self.dio0.value():
            return []
        flags = self.reg(REG_IRQ_FLAGS)
        if not flags:
            return []
        self.write(REG_IRQ_FLAGS, bytes((flags,)))
        events = []
        if flags & IRQ_TX_DONE and self._mode == "tx":
            self._mode = "standby"                       # TX ends in STDBY (§4.1.6.1)
            events.append(TxDone(self._tx_toa))
        if flags & IRQ_RX_DONE:
            events.append(self._rx_event(flags))
        if flags & IRQ_CAD_DONE and self._mode == "cad":
            self._mode = "standby"
            events.append(CadDone(bool(flags & IRQ_CAD_DETECTED)))
        return events

    def _rx_event(self, flags):
        if flags & IRQ_CRC_ERROR:
            self.counters["crc_errors"] += 1
            return RxError("crc")
        n = self.reg(REG_RX_NB_BYTES)
        self.write(REG_FIFO_ADDR_PTR, bytes((self.reg(REG_FIFO_RX_CURRENT),)))
        data = self.read(REG_FIFO, n)
        raw_snr, raw_rssi = self.read(REG_PKT_SNR, 2)
        snr = (raw_snr - 256 if raw_snr > 127 else raw_snr) / 4
        offset = HF_RSSI_OFFSET if self.params.frequency_hz >= 779000000 else LF_RSSI_OFFSET
        # §5.5.5: packet strength = offset + PacketRssi + SNR below 0 dB SNR,
        # offset + 16/15 PacketRssi above.
        rssi = offset + raw_rssi + snr if snr < 0 else offset + raw_rssi * 16 / 15
        self.counters["rx"] += 1
        return Received(bytes(data), rssi, snr, self.clock_ms())

    def standby(self):
        self._need_connected()
        self._op(MODE_STDBY)
        self._mode = "standby"

    def sleep(self):
        self._need_connected()
        self._op(MODE_SLEEP)
        self._mode = "standby"

    def close(self):
        if self._connected:
            self.sleep()
        self._connected = False

    def rssi_now(self):
        offset = HF_RSSI_OFFSET
        if self.params is not None and self.params.frequency_hz < 779000000:
            offset = LF_RSSI_OFFSET
        return offset + self.reg(REG_RSSI)

    def fileno(self):
        f = getattr(self.dio0, "fileno", None)
        return f() if f is not None else None

    def _need_connected(self):
        if not self._connected:
            raise LinkClosed("radio not connected", link="lora", chip="sx127x")

    def _need_configured(self):
        self._need_connected()
        if self.params is None:
            raise LinkClosed("radio not configured", link="lora", chip="sx127x")
