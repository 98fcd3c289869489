"""SX1261 / SX1262 / SX1268 (and LLCC68) LoRa driver over SPI, written from
the Semtech SX1261/2 datasheet rev. 2.1 (§ numbers below are that document's).

Owns the command interface of the chip: its opcodes, parameter encodings,
BUSY handshake, calibration, TCXO/regulator options, IRQ handling, buffer
access and packet status. Must not know the mesh or how SPI/GPIO are wired:
``spi.transfer(bytes) -> bytes`` (one NSS-framed transaction), ``busy`` and
optional ``dio1``/``reset`` pins with ``value()``/``value(v)`` are injected.
Portable (MicroPython).

Transactions (§8.3, chapter 13)::

    write command:  opcode  p1  p2 ...          MISO: -  status status ...
    read command:   opcode [p1 ..] NOP  0  0 .. MISO: -  .. status d1 d2 ...

The host waits for BUSY low before every command (§8.3.1); a chip in SLEEP
keeps BUSY high and wakes on the falling edge of NSS, discarding that command
(§9.3), so the driver wakes it with a throw-away GetStatus.
"""

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

from drivers.flight import FlightRecorder
from drivers.link import (
    FrameTooLong,
    LinkBusy,
    LinkClosed,
    RadioConfigError,
    RadioFault,
    Received,
    monotonic_ms,
)
from drivers.lora import CadDone, Radio, RxError, TxDone, TxTimeout, default_delay_us
from drivers.lora.airtime import time_on_air_us

# Opcodes (chapter 13, table 13-1 .. 13-5).
SET_SLEEP = const(0x84)            # §13.1.1
SET_STANDBY = const(0x80)          # §13.1.2
SET_FS = const(0xC1)               # §13.1.3
SET_TX = const(0x83)               # §13.1.4
SET_RX = const(0x82)               # §13.1.5
STOP_TIMER_ON_PREAMBLE = const(0x9F)   # §13.1.6
SET_RX_DUTY_CYCLE = const(0x94)    # §13.1.7
SET_CAD = const(0xC5)              # §13.1.8
SET_TX_CONTINUOUS_WAVE = const(0xD1)   # §13.1.9
SET_TX_INFINITE_PREAMBLE = const(0xD2)  # §13.1.10
SET_REGULATOR_MODE = const(0x96)   # §13.1.11
CALIBRATE = const(0x89)            # §13.1.12
CALIBRATE_IMAGE = const(0x98)      # §13.1.13
SET_PA_CONFIG = const(0x95)        # §13.1.14
SET_RX_TX_FALLBACK_MODE = const(0x93)  # §13.1.15
WRITE_REGISTER = const(0x0D)       # §13.2.1
READ_REGISTER = const(0x1D)        # §13.2.2
WRITE_BUFFER = const(0x0E)         # §13.2.3
READ_BUFFER = const(0x1E)          # §13.2.4
SET_DIO_IRQ_PARAMS = const(0x08)   # §13.3.1
GET_IRQ_STATUS = const(0x12)       # §13.3.3
CLEAR_IRQ_STATUS = const(0x02)     # §13.3.4
SET_DIO2_AS_RF_SWITCH_CTRL = const(0x9D)  # §13.3.5
SET_DIO3_AS_TCXO_CTRL = const(0x97)       # §13.3.6
SET_RF_FREQUENCY = const(0x86)     # §13.4.1
SET_PACKET_TYPE = const(0x8A)      # §13.4.2
GET_PACKET_TYPE = const(0x11)      # §13.4.3
SET_TX_PARAMS = const(0x8E)        # §13.4.4
SET_MODULATION_PARAMS = const(0x8B)  # §13.4.5
SET_PACKET_PARAMS = const(0x8C)    # §13.4.6
SET_CAD_PARAMS = const(0x88)       # §13.4.7
SET_BUFFER_BASE_ADDRESS = const(0x8F)  # §13.4.8
SET_LORA_SYMB_NUM_TIMEOUT = const(0xA0)  # §13.4.9
GET_STATUS = const(0xC0)           # §13.5.1
GET_RX_BUFFER_STATUS = const(0x13)  # §13.5.2
GET_PACKET_STATUS = const(0x14)    # §13.5.3
GET_RSSI_INST = const(0x15)        # §13.5.4
GET_STATS = const(0x10)            # §13.5.5
RESET_STATS = const(0x00)          # §13.5.6
GET_DEVICE_ERRORS = const(0x17)    # §13.6.1
CLEAR_DEVICE_ERRORS = const(0x07)  # §13.6.2

# IRQ bits (table 13-29).
IRQ_TX_DONE = const(0x0001)
IRQ_RX_DONE = const(0x0002)
IRQ_PREAMBLE_DETECTED = const(0x0004)
IRQ_SYNC_WORD_VALID = const(0x0008)
IRQ_HEADER_VALID = const(0x0010)
IRQ_HEADER_ERR = const(0x0020)
IRQ_CRC_ERR = const(0x0040)
IRQ_CAD_DONE = const(0x0080)
IRQ_CAD_DETECTED = const(0x0100)
IRQ_TIMEOUT = const(0x0200)
IRQ_ALL = const(0x03FF)
IRQ_USED = const(0x03E3)   # TxDone RxDone HeaderErr CrcErr CadDone CadDetected Timeout

# Status byte (table 13-76): bits 6:4 chip mode, bits 3:1 command status.
MODE_STDBY_RC = const(0x2)
MODE_STDBY_XOSC = const(0x3)
MODE_FS = const(0x4)
MODE_RX = const(0x5)
MODE_TX = const(0x6)
CMD_DATA_AVAILABLE = const(0x2)
CMD_TIMEOUT = const(0x3)
CMD_PROCESSING_ERROR = const(0x4)
CMD_EXEC_FAILURE = const(0x5)
CMD_TX_DONE = const(0x6)
CMD_FAULTS = {CMD_TIMEOUT: "command_timeout", CMD_PROCESSING_ERROR: "command_error",
              CMD_EXEC_FAILURE: "command_failed"}

# OpError bits of GetDeviceErrors (table 13-85).
DEVICE_ERRORS = ("rc64k_calib", "rc13m_calib", "pll_calib", "adc_calib", "img_calib",
                 "xosc_start", "pll_lock", "", "pa_ramp")

PACKET_TYPE_LORA = const(0x01)     # §13.4.2 table 13-38
LORA_BW = {125000: 0x04, 250000: 0x05, 500000: 0x06}   # table 13-47
TCXO_VOLTAGES = (1.6, 1.7, 1.8, 2.2, 2.4, 2.7, 3.0, 3.3)  # table 13-35, codes 0..7
# CalibrateImage band edges (§9.2.1 table 9-2): (low MHz, high MHz, freq1, freq2).
IMAGE_BANDS = ((430, 440, 0x6B, 0x6F), (470, 510, 0x75, 0x81), (779, 787, 0xC1, 0xC5),
               (863, 870, 0xD7, 0xDB), (902, 928, 0xE1, 0xE9))
# SetPaConfig for the highest power (table 13-21): paDutyCycle, hpMax, deviceSel, paLut.
PA_CONFIG = {"sx1261": b"\x04\x00\x01\x01", "sx1262": b"\x04\x07\x00\x01",
             "sx1268": b"\x04\x07\x00\x01", "llcc68": b"\x04\x07\x00\x01"}
POWER_RANGE = {"sx1261": (-17, 15), "sx1262": (-9, 22), "sx1268": (-9, 22), "llcc68": (-9, 22)}
# LLCC68 datasheet table 6-? : the SFs it demodulates per bandwidth.
LLCC68_MAX_SF = {125000: 9, 250000: 10, 500000: 11}

REG_IQ_POLARITY = const(0x0736)    # §15.4 workaround register
REG_SYNC_WORD = const(0x0740)      # LoRa sync word MSB/LSB (table 12-1)
REG_TX_MODULATION = const(0x0889)  # §15.1 workaround register
RAMP_200US = const(0x04)           # table 13-41
TIMEOUT_STEP_NS = const(15625)     # timeouts count 15.625 us steps (§13.1.4)


class Sx126x(Radio):
    """Driver for one SX126x chip; see the module docstring for the handles.

    ``tcxo_voltage`` (1.6..3.3) when the module's TCXO is powered by DIO3;
    ``regulator`` "dcdc" or "ldo"; ``dio2_rf_switch`` when DIO2 drives the
    antenna switch; ``delay_us(n)`` paces BUSY/reset waits (injected so a
    simulator can advance its clock); ``clock_ms()`` stamps received frames.
    """

    chip = "sx126x"

    def __init__(self, spi, busy, dio1=None, reset=None, variant="sx1262",
                 tcxo_voltage=None, tcxo_delay_us=5000, regulator="dcdc",
                 dio2_rf_switch=False, delay_us=None, clock_ms=None,
                 busy_timeout_us=50000):
        if variant not in PA_CONFIG:
            raise RadioConfigError("unknown SX126x variant", param="variant", value=variant)
        if tcxo_voltage is not None and tcxo_voltage not in TCXO_VOLTAGES:
            raise RadioConfigError("TCXO voltage not in table 13-35", param="tcxo_voltage",
                                   value=tcxo_voltage)
        self.spi = spi
        self.busy = busy
        self.dio1 = dio1
        self.reset_pin = reset
        self.variant = variant
        self.tcxo_voltage = tcxo_voltage
        self.tcxo_delay_us = tcxo_delay_us
        self.regulator = regulator
        self.dio2_rf_switch = dio2_rf_switch
        self.delay_us = delay_us or default_delay_us()
        self.clock_ms = clock_ms or monotonic_ms
        self.busy_timeout_us = busy_timeout_us
        self.flight = FlightRecorder(size=32)
        self.params = None
        self.counters = {"tx": 0, "rx": 0, "crc_errors": 0, "header_errors": 0,
                         "tx_timeouts": 0}
        self._connected = False
        self._asleep = False
        self._mode = "standby"
        self._tx_toa = 0

    # -- transactions ---------------------------------------------------

    def _wait_busy(self):
        waited = 0
        step = 2
        while self.busy.value():
            if waited >= self.busy_timeout_us:
                raise RadioFault("BUSY stuck high", chip=self.variant, reason="busy_timeout",
                                 waited_us=waited, flight=self.flight.dump())
            self.delay_us(step)
            waited += step
            step = min(step * 2, 1000)

    def _xfer(self, data):
        if self._asleep:
            # §9.3: NSS falling edge wakes the chip; this command is lost.
            self.spi.transfer(bytes((GET_STATUS, 0)))
            self._asleep = False
        self._wait_busy()
        out = self.spi.transfer(data)
        t = self.clock_ms() / 1000
        self.flight.record("tx", data, t)
        self.flight.record("rx", out, t)
        if out is None or len(out) != len(data):
            raise RadioFault("SPI answered %s bytes for %d" % (
                None if out is None else len(out), len(data)), chip=self.variant,
                reason="spi", flight=self.flight.dump())
        return out

    def _check(self, status, name):
        if status == 0x00 or status == 0xFF:
            raise RadioFault("no SX126x answers on SPI (status 0x%02x)" % status,
                             chip=self.variant, reason="no_chip", command=name,
                             status=status, flight=self.flight.dump())
        fault = CMD_FAULTS.get((status >> 1) & 7)
        if fault is not None:
            raise RadioFault("%s: %s (status 0x%02x; this or the previous command)" % (
                name, fault, status), chip=self.variant, reason=fault, command=name,
                status=status, flight=self.flight.dump())
        return status

    def command(self, opcode, params=b"", name="command"):
        """A write command; checks the status the chip returns (byte 2)."""
        out = self._xfer(bytes((opcode,)) + bytes(params))
        if len(out) > 1:
            self._check(out[1], name)

    def read(self, opcode, params=b"", n=1, name="read"):
        """A read command: ``params``, one status byte, then ``n`` data bytes."""
        k = len(params)
        out = self._xfer(bytes((opcode,)) + bytes(params) + bytes(1 + n))
        self._check(out[1 + k], name)
        return out[2 + k:]

    # -- set-up ---------------------------------------------------------

    def connect(self):
        """Reset (if wired), find the chip, set TCXO/regulator, calibrate."""
        if self.reset_pin is not None:
            self.reset_pin.value(0)
            self.delay_us(200)              # NRESET low >= 100 us (§8.1, table 8-1)
            self.reset_pin.value(1)
        self._asleep = False
        self.command(SET_STANDBY, b"\x00", "SetStandby")
        mode = (self.status() >> 4) & 7
        if mode != MODE_STDBY_RC:
            raise RadioFault("chip not in STDBY_RC after SetStandby (mode %d)" % mode,
                             chip=self.variant, reason="no_chip", flight=self.flight.dump())
        if self.tcxo_voltage is not None:
            steps = self.tcxo_delay_us * 1000 // TIMEOUT_STEP_NS
            self.command(SET_DIO3_AS_TCXO_CTRL, bytes((TCXO_VOLTAGES.index(self.tcxo_voltage),))
                         + steps.to_bytes(3, "big"), "SetDIO3AsTcxoCtrl")
        self.command(SET_REGULATOR_MODE, b"\x01" if self.regulator == "dcdc" else b"\x00",
                     "SetRegulatorMode")
        # XOSC_START_ERR is flagged at power-up when a TCXO is used (§13.3.6): clear, then
        # calibrate every block (§13.1.12) and read what failed.
        self.command(CLEAR_DEVICE_ERRORS, b"\x00\x00", "ClearDeviceErrors")
        self.command(CALIBRATE, b"\x7f", "Calibrate")
        errors = self.device_errors()
        if errors:
            names = [DEVICE_ERRORS[i] for i in range(len(DEVICE_ERRORS))
                     if errors >> i & 1 and DEVICE_ERRORS[i]]
            raise RadioFault("calibration failed: %s" % ", ".join(names), chip=self.variant,
                             reason="calibration", errors=errors, failed=names,
                             flight=self.flight.dump())
        if self.dio2_rf_switch:
            self.command(SET_DIO2_AS_RF_SWITCH_CTRL, b"\x01", "SetDIO2AsRfSwitchCtrl")
        self.command(SET_PACKET_TYPE, bytes((PACKET_TYPE_LORA,)), "SetPacketType")
        self.command(SET_BUFFER_BASE_ADDRESS, b"\x00\x00", "SetBufferBaseAddress")
        self._connected = True
        self._mode = "standby"

    def _check_params(self, p):
        lo, hi = POWER_RANGE[self.variant]
        if not lo <= p.tx_power_dbm <= hi:
            raise RadioConfigError("%s transmits %d..%d dBm" % (self.variant, lo, hi),
                                   param="tx_power_dbm", value=p.tx_power_dbm)
        if self.variant == "llcc68" and p.sf > LLCC68_MAX_SF[p.bandwidth_hz]:
            raise RadioConfigError("LLCC68 does not demodulate this SF at this bandwidth",
                                   param="sf", value=p.sf)

    def configure(self, params):
        """Frequency, image calibration, PA, modulation, packet, sync word, IRQs."""
        self._need_connected()
        self._check_params(params)
        self.standby()
        rf = (params.frequency_hz << 25) // 32000000          # §13.4.1
        self.command(SET_RF_FREQUENCY, rf.to_bytes(4, "big"), "SetRfFrequency")
        mhz = params.frequency_hz // 1000000
        for lo, hi, f1, f2 in IMAGE_BANDS:
            if lo <= mhz <= hi:
                self.command(CALIBRATE_IMAGE, bytes((f1, f2)), "CalibrateImage")
        self.command(SET_PA_CONFIG, PA_CONFIG[self.variant], "SetPaConfig")
        self.command(SET_TX_PARAMS, bytes((params.tx_power_dbm & 0xFF, RAMP_200US)),
                     "SetTxParams")
        self.command(SET_MODULATION_PARAMS, bytes((
            params.sf, LORA_BW[params.bandwidth_hz], params.cr,
            1 if params.low_data_rate() else 0)), "SetModulationParams")
        self.params = params
        self._packet_params(0xFF)
        sw = params.sync_word
        self.write_register(REG_SYNC_WORD, bytes(((sw & 0xF0) | 0x04, ((sw & 0x0F) << 4) | 0x04)))
        # §15.4: bit 2 of 0x0736 set for standard IQ, cleared for inverted IQ.
        iq = self.read_register(REG_IQ_POLARITY, 1)[0]
        iq = (iq & 0xFB) if params.iq_inverted else (iq | 0x04)
        self.write_register(REG_IQ_POLARITY, bytes((iq,)))
        # §15.1: bit 2 of 0x0889 cleared at 500 kHz, set otherwise.
        tm = self.read_register(REG_TX_MODULATION, 1)[0]
        tm = (tm & 0xFB) if params.bandwidth_hz == 500000 else (tm | 0x04)
        self.write_register(REG_TX_MODULATION, bytes((tm,)))
        mask = IRQ_USED.to_bytes(2, "big")
        self.command(SET_DIO_IRQ_PARAMS, mask + mask + b"\x00\x00\x00\x00", "SetDioIrqParams")
        self._check(self.status(), "configure")

    def _packet_params(self, length):
        p = self.params
        self.command(SET_PACKET_PARAMS, p.preamble.to_bytes(2, "big") + bytes((
            0 if p.explicit else 1, length, 1 if p.crc else 0, 1 if p.iq_inverted else 0)),
            "SetPacketParams")                                 # §13.4.6 table 13-66

    # -- operation ------------------------------------------------------

    def time_on_air_us(self, n):
        p = self.params
        return time_on_air_us(n, p.sf, p.bandwidth_hz, p.cr, p.explicit, p.crc, p.preamble,
                              p.low_data_rate(), "sx126x")

    def transmit(self, frame):
        """Write the frame to the buffer and SetTx; returns its time on air (us)."""
        self._need_configured()
        if len(frame) > self.max_payload:
            raise FrameTooLong("LoRa frame too long", link="lora", size=len(frame),
                               mtu=self.max_payload)
        if self._mode == "tx":
            raise LinkBusy("a transmission is in progress", link="lora")
        if self._mode != "standby":
            self.standby()
        self._packet_params(len(frame))
        self.command(WRITE_BUFFER, b"\x00" + bytes(frame), "WriteBuffer")
        self.command(CLEAR_IRQ_STATUS, IRQ_ALL.to_bytes(2, "big"), "ClearIrqStatus")
        toa = self.time_on_air_us(len(frame))
        # A safety timeout of twice the time on air (+100 ms) in 15.625 us steps.
        steps = min((2 * toa + 100000) * 1000 // TIMEOUT_STEP_NS, 0xFFFFFE)
        self.command(SET_TX, steps.to_bytes(3, "big"), "SetTx")
        self._mode = "tx"
        self._tx_toa = toa
        self.counters["tx"] += 1
        return toa

    def listen(self):
        """Continuous receive (SetRx 0xFFFFFF, §13.1.5)."""
        self._need_configured()
        if self._mode != "standby":
            self.standby()
        self._packet_params(0xFF)
        self.command(CLEAR_IRQ_STATUS, IRQ_ALL.to_bytes(2, "big"), "ClearIrqStatus")
        self.command(SET_RX, b"\xff\xff\xff", "SetRx")
        self._mode = "rx"

    def cad(self):
        """Channel activity detection over 4 symbols (§13.1.8, §13.4.7)."""
        self._need_configured()
        if self._mode != "standby":
            self.standby()
        peak = {5: 18, 6: 19, 7: 22, 8: 22, 9: 24, 10: 25, 11: 26, 12: 30}[self.params.sf]
        self.command(SET_CAD_PARAMS, bytes((0x02, peak, 10, 0x00, 0, 0, 0)), "SetCadParams")
        self.command(CLEAR_IRQ_STATUS, IRQ_ALL.to_bytes(2, "big"), "ClearIrqStatus")
        self.command(SET_CAD, b"", "SetCAD")
        self._mode = "cad"

    def service(self):
        """Read and clear the IRQs; -> [TxDone | TxTimeout | Received | RxError | CadDone]."""
        if not self._connected or self._asleep:
            return []
        if self.dio1 is not None and not self.dio1.value():
            return []
        irq = self.irq_status()
        if not irq:
            return []
        self.command(CLEAR_IRQ_STATUS, irq.to_bytes(2, "big"), "ClearIrqStatus")
        events = []
        if irq & IRQ_TX_DONE and self._mode == "tx":
            self._mode = "standby"                 # fallback mode STDBY_RC (§13.1.15)
            events.append(TxDone(self._tx_toa))
        if irq & IRQ_TIMEOUT and self._mode == "tx":
            self._mode = "standby"
            self.counters["tx_timeouts"] += 1
            events.append(TxTimeout())
        if irq & IRQ_RX_DONE:
            events.append(self._rx_event(irq))
        elif irq & IRQ_HEADER_ERR:
            self.counters["header_errors"] += 1
            events.append(RxError("header"))
        if irq & IRQ_CAD_DONE and self._mode == "cad":
            self._mode = "standby"
            events.append(CadDone(bool(irq & IRQ_CAD_DETECTED)))
        return events

    def _rx_event(self, irq):
        if irq & (IRQ_CRC_ERR | IRQ_HEADER_ERR):
            reason = "crc" if irq & IRQ_CRC_ERR else "header"
            self.counters["crc_errors" if reason == "crc" else "header_errors"] += 1
            return RxError(reason)
        n, start = self.read(GET_RX_BUFFER_STATUS, b"", 2, "GetRxBufferStatus")
        data = self.read(READ_BUFFER, bytes((start,)), n, "ReadBuffer")
        st = self.read(GET_PACKET_STATUS, b"", 3, "GetPacketStatus")
        snr = (st[1] - 256 if st[1] > 127 else st[1]) / 4      # §13.5.3: SnrPkt / 4
        rssi = -st[2] / 2                                      # SignalRssiPkt: signal after despreading
        self.counters["rx"] += 1
        return Received(bytes(data), rssi, snr, self.clock_ms())

    def standby(self):
        self._need_connected()
        self.command(SET_STANDBY, b"\x00", "SetStandby")
        self._mode = "standby"

    def sleep(self):
        """Warm-start sleep (§13.1.1): configuration kept, woken by the next command."""
        self._need_connected()
        if self._mode != "standby":
            self.standby()                      # SetSleep is accepted from STDBY only
        self.command(SET_SLEEP, b"\x04", "SetSleep")
        self._asleep = True
        self._mode = "standby"

    def close(self):
        if self._connected and not self._asleep:
            self.sleep()
        self._connected = False

    # -- status ---------------------------------------------------------

    def status(self):
        """GetStatus (§13.5.1): the status byte, checked."""
        out = self._xfer(bytes((GET_STATUS, 0)))
        return self._check(out[1], "GetStatus")

    def irq_status(self):
        d = self.read(GET_IRQ_STATUS, b"", 2, "GetIrqStatus")
        return (d[0] << 8) | d[1]

    def device_errors(self):
        d = self.read(GET_DEVICE_ERRORS, b"", 2, "GetDeviceErrors")
        return (d[0] << 8) | d[1]

    def rssi_now(self):
        return -self.read(GET_RSSI_INST, b"", 1, "GetRssiInst")[0] / 2

    def read_register(self, address, n):
        return self.read(READ_REGISTER, address.to_bytes(2, "big"), n, "ReadRegister")

    def write_register(self, address, data):
        self.command(WRITE_REGISTER, address.to_bytes(2, "big") + bytes(data), "WriteRegister")

    def fileno(self):
        f = getattr(self.dio1, "fileno", None)
        return f() if f is not None else None

    def _need_connected(self):
        if not self._connected:
            raise LinkClosed("radio not connected", link="lora", chip=self.variant)

    def _need_configured(self):
        self._need_connected()
        if self.params is None:
            raise LinkClosed("radio not configured", link="lora", chip=self.variant)
