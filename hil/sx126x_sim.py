"""A simulated SX1261/SX1262/SX1268: answers the SPI command set, drives the
BUSY and DIO1 pins, and sends/receives through a ``hil.radio.RadioMedium``,
so ``drivers.lora.sx126x.Sx126x`` runs unchanged against it.

Owns the chip's visible behaviour as the SX1261/2 datasheet rev. 2.1 states
it: status byte (table 13-76) on MISO from the second byte of every command,
read data after one status byte, BUSY high while a command is processed
(per-command times below, calibration 3.5 ms), in SLEEP, in reset and while
booting; a command sent while BUSY is high is ignored and counted; IRQ flags
gated by IrqMask, DIO1 = flags & DIO1 mask; the 256-byte data buffer with
TX/RX base addresses, the continuous-RX write pointer (§7.2); packet status
from the medium's RSSI/SNR; stats; device errors (a TCXO module whose DIO3
supply was never enabled fails XOSC start, as a real one would).
Must not know the driver: it sees bytes and pin reads only.

Not modelled (answered "failure to execute", counted in ``unmodelled``):
GFSK/BPSK/LR-FHSS transmission, SetRxDutyCycle, SetTxContinuousWave,
SetTxInfinitePreamble, LoRa bandwidths under 125 kHz, CAD exit modes other
than CAD_ONLY. Parameters out of the datasheet's ranges are refused with
"command processing error" and leave the previous setting.
"""

import math
import threading

from drivers.lora.airtime import time_on_air_us
from hil.radio import AirParams

STATUS_MODE = {"stdby_rc": 0x2, "stdby_xosc": 0x3, "fs": 0x4, "rx": 0x5, "cad": 0x5,
               "tx": 0x6}
OK, DATA, PROC_ERR, EXEC_FAIL, TX_DONE = 0x1, 0x2, 0x4, 0x5, 0x6
IRQ_TX_DONE, IRQ_RX_DONE, IRQ_PREAMBLE, IRQ_SYNC, IRQ_HEADER_VALID = 1, 2, 4, 8, 16
IRQ_HEADER_ERR, IRQ_CRC_ERR, IRQ_CAD_DONE, IRQ_CAD_DETECTED, IRQ_TIMEOUT = 32, 64, 128, 256, 512
ERR_PLL_CALIB, ERR_IMG_CALIB, ERR_XOSC_START = 0x0004, 0x0010, 0x0020
BW_CODES = {0x04: 125000, 0x05: 250000, 0x06: 500000}
NARROW_BW = (0x00, 0x01, 0x02, 0x03, 0x08, 0x09, 0x0A)
BOOT_US = 3500            # BUSY after power-on/reset/cold wake (§8.1: calibration at start)
WAKE_WARM_US = 400
CALIBRATE_US = 3500       # §13.1.12: "total calibration time 3.5 ms"
COMMAND_US = 3            # ordinary command processing time
STEP_NS = 15625           # timeouts in 15.625 us steps
REG_DEFAULTS = {0x0740: 0x14, 0x0741: 0x24, 0x0736: 0x0D, 0x0889: 0x00, 0x08D8: 0xC8,
                0x08E7: 0x18}


class _InPin:
    """A pin the driver reads (BUSY, DIO1)."""

    def __init__(self, read):
        self._read = read

    def value(self, v=None):
        return self._read()


class _ResetPin:
    def __init__(self, chip):
        self._chip = chip
        self._level = 1

    def value(self, v=None):
        if v is None:
            return self._level
        self._level = 1 if v else 0
        self._chip._reset_line(self._level)
        return None


class Sx126xSim:
    """One chip on ``medium`` as node ``node_id``: ``transfer(bytes)`` is the
    SPI, ``busy``/``dio1``/``reset`` the pins. ``tcxo`` True: the module's
    crystal is a TCXO powered from DIO3 (SetDIO3AsTcxoCtrl needed)."""

    # opcode: (name, kind, parameter count (exact, or (min, max)), handler name)
    COMMANDS = {
        0x84: ("SetSleep", "w", 1, "_set_sleep"), 0x80: ("SetStandby", "w", 1, "_set_standby"),
        0xC1: ("SetFs", "w", 0, "_set_fs"), 0x83: ("SetTx", "w", 3, "_set_tx"),
        0x82: ("SetRx", "w", 3, "_set_rx"), 0x9F: ("StopTimerOnPreamble", "w", 1, "_store"),
        0x94: ("SetRxDutyCycle", "w", 6, "_unmodelled"), 0xC5: ("SetCAD", "w", 0, "_set_cad"),
        0xD1: ("SetTxContinuousWave", "w", 0, "_unmodelled"),
        0xD2: ("SetTxInfinitePreamble", "w", 0, "_unmodelled"),
        0x96: ("SetRegulatorMode", "w", 1, "_set_regulator"),
        0x89: ("Calibrate", "w", 1, "_calibrate"), 0x98: ("CalibrateImage", "w", 2, "_cal_image"),
        0x95: ("SetPaConfig", "w", 4, "_set_pa"), 0x93: ("SetRxTxFallbackMode", "w", 1, "_fallback"),
        0x0D: ("WriteRegister", "w", (3, 258), "_write_register"),
        0x0E: ("WriteBuffer", "w", (2, 257), "_write_buffer"),
        0x08: ("SetDioIrqParams", "w", 8, "_set_dio_irq"),
        0x02: ("ClearIrqStatus", "w", 2, "_clear_irq"),
        0x9D: ("SetDIO2AsRfSwitchCtrl", "w", 1, "_set_dio2"),
        0x97: ("SetDIO3AsTcxoCtrl", "w", 4, "_set_tcxo"),
        0x86: ("SetRfFrequency", "w", 4, "_set_freq"), 0x8A: ("SetPacketType", "w", 1, "_set_ptype"),
        0x8E: ("SetTxParams", "w", 2, "_set_tx_params"),
        0x8B: ("SetModulationParams", "w", (4, 8), "_set_modulation"),
        0x8C: ("SetPacketParams", "w", (6, 9), "_set_packet"),
        0x88: ("SetCadParams", "w", 7, "_set_cad_params"),
        0x8F: ("SetBufferBaseAddress", "w", 2, "_set_base"),
        0xA0: ("SetLoRaSymbNumTimeout", "w", 1, "_store"),
        0x00: ("ResetStats", "w", 6, "_reset_stats"), 0x07: ("ClearDeviceErrors", "w", 2, "_clear_errors"),
        # reads: parameter count before the status byte
        0xC0: ("GetStatus", "r", 0, "_r_none"), 0x12: ("GetIrqStatus", "r", 0, "_r_irq"),
        0x13: ("GetRxBufferStatus", "r", 0, "_r_rxbuf"), 0x14: ("GetPacketStatus", "r", 0, "_r_pkt"),
        0x15: ("GetRssiInst", "r", 0, "_r_rssi"), 0x10: ("GetStats", "r", 0, "_r_stats"),
        0x11: ("GetPacketType", "r", 0, "_r_ptype"), 0x17: ("GetDeviceErrors", "r", 0, "_r_errors"),
        0x1D: ("ReadRegister", "r", 2, "_r_register"), 0x1E: ("ReadBuffer", "r", 1, "_r_buffer"),
    }

    def __init__(self, medium, node_id, variant="sx1262", tcxo=False):
        self.medium = medium
        self.node_id = node_id
        self.variant = variant
        self.tcxo = tcxo
        self.counters = {"transactions": 0, "busy_violations": 0, "unknown_opcodes": 0,
                         "bad_length": 0, "param_errors": 0, "unmodelled": 0}
        self.log = []                         # names of executed commands, in order
        self._lock = threading.RLock()
        self._powered = True
        self._reset_held = False
        self.busy = _InPin(self._busy)
        self.dio1 = _InPin(self._dio1)
        self.reset = _ResetPin(self)
        self._por()
        medium.attach(node_id, self)

    # -- power ----------------------------------------------------------

    def _por(self, boot_us=0):
        """Power-on reset state (the datasheet's defaults where it gives them)."""
        self.mode = "stdby_rc"
        self.cmd_status = OK
        self.busy_until = self.medium.now_us + boot_us
        self.packet_type = 0
        self.freq_hz = 915000000
        self.sf, self.bw_code, self.cr, self.ldro = 7, 0x04, 1, 0
        self.preamble, self.implicit, self.payload_len, self.crc, self.iq = 8, 0, 0xFF, 1, 0
        self.tx_base = self.rx_base = 0
        self.buffer = bytearray(256)
        self.irq = self.irq_mask = self.dio1_mask = self.dio2_mask = self.dio3_mask = 0
        self.regs = dict(REG_DEFAULTS)
        self.power_dbm, self.ramp = 0, 0
        self.pa_max = 15 if self.variant == "sx1261" else 22
        self.regulator, self.tcxo_ctrl, self.dio2_switch = 0, None, False
        self.fallback = "stdby_rc"
        self.errors = ERR_XOSC_START if self.tcxo else 0
        self.calibrated = False
        self.rx_continuous = False
        self.rx_ptr = self.last_start = self.last_len = 0
        self.pkt = (0xFF, 0, 0xFF)
        self.stats = [0, 0, 0]
        self.cad_params = (0x02, 22, 10, 0, 0)
        self.sleep_warm = False
        self._timer = None

    def _reset_line(self, level):
        with self._lock:
            self._stop_radio()
            self._reset_held = level == 0
            self._por(0 if self._reset_held else BOOT_US)

    def on_power(self, up):
        with self._lock:
            self._powered = up
            self._timer = None
            self._por(BOOT_US)

    def _busy(self):
        with self._lock:
            if not self._powered:
                return 0
            if self._reset_held or self.mode == "sleep":
                return 1
            return 1 if self.medium.now_us < self.busy_until else 0

    def _dio1(self):
        with self._lock:
            return 1 if self._powered and self.irq & self.dio1_mask else 0

    # -- SPI --------------------------------------------------------------

    def transfer(self, data):
        """One NSS-framed transaction: returns as many bytes as were sent."""
        with self._lock:
            data = bytes(data)
            n = len(data)
            self.counters["transactions"] += 1
            if n == 0:
                return b""
            if not self._powered or self._reset_held:
                return bytes(n)
            if self.mode == "sleep":
                self._wake()
                return bytes(n)
            if self.medium.now_us < self.busy_until:
                self.counters["busy_violations"] += 1
                return bytes((self._status(),)) * n
            spec = self.COMMANDS.get(data[0])
            if spec is None:
                self.counters["unknown_opcodes"] += 1
                self.cmd_status = PROC_ERR
                return bytes((self._status(),)) * n
            status = self._status()
            name, kind, count, handler = spec
            if kind == "r":
                return self._read(data, status, count, handler)
            lo, hi = (count, count) if isinstance(count, int) else count
            if not lo <= n - 1 <= hi:
                self.counters["bad_length"] += 1
                self.cmd_status = PROC_ERR
            else:
                self.log.append(name)
                self.cmd_status = getattr(self, handler)(data[1:])
                if self.cmd_status == PROC_ERR:
                    self.counters["param_errors"] += 1
                if self.busy_until < self.medium.now_us + COMMAND_US and self.mode != "sleep":
                    self.busy_until = self.medium.now_us + COMMAND_US
            return bytes((status,)) * n

    def _status(self):
        return (STATUS_MODE.get(self.mode, 0x2) << 4) | (self.cmd_status << 1)

    def _read(self, data, status, k, handler):
        n = len(data)
        out = bytearray((status,)) * n
        if n < 2 + k:                       # no room for the status byte: nothing read
            self.counters["bad_length"] += 1
            self.cmd_status = PROC_ERR
            return bytes(out)
        body = getattr(self, handler)(data[1:1 + k], n - 2 - k)
        out[2 + k:2 + k + len(body)] = body[:n - 2 - k]
        for i in range(2 + k + len(body), n):
            out[i] = 0
        self.cmd_status = DATA
        return bytes(out)

    def _wake(self):
        """NSS falling edge in SLEEP (§9.3): warm start keeps the configuration
        (the data buffer is not retained), cold start is a power-on reset."""
        warm = self.sleep_warm
        if warm:
            self.buffer = bytearray(256)
        else:
            self._por()
        self.mode = "stdby_rc"
        self.busy_until = self.medium.now_us + (WAKE_WARM_US if warm else BOOT_US)

    # -- reads --------------------------------------------------------------

    def _r_none(self, p, n):
        return b""

    def _r_irq(self, p, n):
        return bytes((self.irq >> 8, self.irq & 0xFF))

    def _r_rxbuf(self, p, n):
        return bytes((self.last_len, self.last_start))

    def _r_pkt(self, p, n):
        return bytes(self.pkt)

    def _r_rssi(self, p, n):
        if self.mode not in ("rx", "cad"):
            return b"\xff"
        dbm = self.medium.channel_power_dbm(self.node_id, self._air_params())
        return bytes((max(0, min(255, int(round(-2 * dbm)))),))

    def _r_stats(self, p, n):
        s = self.stats
        return bytes((s[0] >> 8, s[0] & 0xFF, s[1] >> 8, s[1] & 0xFF, s[2] >> 8, s[2] & 0xFF))

    def _r_ptype(self, p, n):
        return bytes((self.packet_type,))

    def _r_errors(self, p, n):
        return bytes((self.errors >> 8, self.errors & 0xFF))

    def _r_register(self, p, n):
        addr = (p[0] << 8) | p[1]
        return bytes(self.regs.get((addr + i) & 0xFFFF, 0) for i in range(n))

    def _r_buffer(self, p, n):
        return bytes(self.buffer[(p[0] + i) & 0xFF] for i in range(n))

    # -- writes (each returns the command status) -----------------------------

    def _store(self, p):
        return OK

    def _unmodelled(self, p):
        self.counters["unmodelled"] += 1
        return EXEC_FAIL

    def _standby_only(self):
        return self.mode in ("stdby_rc", "stdby_xosc")

    def _set_sleep(self, p):
        if not self._standby_only():             # §13.1.1: only from STDBY
            return EXEC_FAIL
        self.sleep_warm = bool(p[0] & 0x04)
        self.mode = "sleep"
        return OK

    def _set_standby(self, p):
        if p[0] > 1:
            return PROC_ERR
        self._stop_radio()
        self.mode = "stdby_xosc" if p[0] else "stdby_rc"
        return OK

    def _set_fs(self, p):
        self._stop_radio()
        self.mode = "fs"
        return OK

    def _radio_ready(self, modes=("stdby_rc", "stdby_xosc", "fs")):
        """SetTx/SetRx/SetCAD preconditions: LoRa, a modelled bandwidth, the
        crystal running (a TCXO module needs its DIO3 supply), a mode it may
        be entered from."""
        if self.packet_type != 1 or self.bw_code in NARROW_BW:
            self.counters["unmodelled"] += 1
            return False
        if self.tcxo and self.tcxo_ctrl is None:
            self.errors |= ERR_XOSC_START
            return False
        return self.mode in modes

    def _set_tx(self, p):
        if not self._radio_ready():
            return EXEC_FAIL
        n = self.payload_len
        frame = bytes(self.buffer[(self.tx_base + i) & 0xFF] for i in range(n))
        toa = time_on_air_us(n, self.sf, BW_CODES[self.bw_code], self.cr, not self.implicit,
                             bool(self.crc), self.preamble, bool(self.ldro), "sx126x")
        end = self.medium.transmit(self.node_id, frame, self._air_params(),
                                   power_dbm=min(self.power_dbm, self.pa_max), toa_us=toa)
        if end is None:
            return EXEC_FAIL
        self.mode = "tx"
        steps = int.from_bytes(p, "big")
        if steps and steps * STEP_NS // 1000 < toa:
            self._timer = self.medium.schedule(self.medium.now_us + steps * STEP_NS // 1000,
                                               self._on_timeout, "tx")
        return OK

    def _set_rx(self, p):
        if not self._radio_ready(("stdby_rc", "stdby_xosc", "fs", "rx")):
            return EXEC_FAIL
        self._stop_radio()
        steps = int.from_bytes(p, "big")
        self.rx_continuous = steps == 0xFFFFFF
        self.rx_ptr = self.rx_base
        self.mode = "rx"
        self.medium.listen(self.node_id, self._air_params())
        if steps and not self.rx_continuous:
            self._timer = self.medium.schedule(self.medium.now_us + steps * STEP_NS // 1000,
                                               self._on_timeout, "rx")
        return OK

    def _set_cad(self, p):
        if not self._radio_ready():
            return EXEC_FAIL
        if self.cad_params[3] != 0:
            return self._unmodelled(p)
        symbols = 1 << self.cad_params[0]
        dur = symbols * (1 << self.sf) * 1000000 // BW_CODES[self.bw_code]
        self.mode = "cad"
        self._timer = self.medium.schedule(self.medium.now_us + dur, self._on_cad,
                                           self.medium.now_us)
        return OK

    def _set_regulator(self, p):
        if p[0] > 1:
            return PROC_ERR
        self.regulator = p[0]
        return OK

    def _calibrate(self, p):
        if self.mode != "stdby_rc":
            return EXEC_FAIL
        self.busy_until = self.medium.now_us + CALIBRATE_US
        if self.tcxo and self.tcxo_ctrl is None:
            self.errors |= ERR_XOSC_START | ERR_PLL_CALIB
        else:
            self.calibrated = True
        return OK

    def _cal_image(self, p):
        self.busy_until = self.medium.now_us + CALIBRATE_US
        if self.tcxo and self.tcxo_ctrl is None:
            self.errors |= ERR_IMG_CALIB
        return OK

    def _set_pa(self, p):
        if p[3] != 0x01 or p[2] > 1 or p[1] > 7:
            return PROC_ERR
        high = p[2] == 0 and self.variant != "sx1261"
        self.pa_max = 22 if high else 15
        return OK

    def _fallback(self, p):
        mode = {0x20: "stdby_rc", 0x30: "stdby_xosc", 0x40: "fs"}.get(p[0])
        if mode is None:
            return PROC_ERR
        self.fallback = mode
        return OK

    def _write_register(self, p):
        addr = (p[0] << 8) | p[1]
        for i, b in enumerate(p[2:]):
            self.regs[(addr + i) & 0xFFFF] = b
        return OK

    def _write_buffer(self, p):
        for i, b in enumerate(p[1:]):
            self.buffer[(p[0] + i) & 0xFF] = b
        return OK

    def _set_dio_irq(self, p):
        self.irq_mask = (p[0] << 8) | p[1]
        self.dio1_mask = (p[2] << 8) | p[3]
        self.dio2_mask = (p[4] << 8) | p[5]
        self.dio3_mask = (p[6] << 8) | p[7]
        return OK

    def _clear_irq(self, p):
        self.irq &= ~((p[0] << 8) | p[1])
        return OK

    def _set_dio2(self, p):
        if p[0] > 1:
            return PROC_ERR
        self.dio2_switch = bool(p[0])
        return OK

    def _set_tcxo(self, p):
        if p[0] > 7:
            return PROC_ERR
        self.tcxo_ctrl = (p[0], int.from_bytes(p[1:4], "big"))
        return OK

    def _set_freq(self, p):
        rf = int.from_bytes(p, "big")
        self.freq_hz = (rf * 32000000 + (1 << 24)) >> 25       # §13.4.1, rounded
        return OK

    def _set_ptype(self, p):
        if p[0] > 1 or not self._standby_only():
            return PROC_ERR
        self.packet_type = p[0]
        return OK

    def _set_tx_params(self, p):
        power = p[0] - 256 if p[0] > 127 else p[0]
        lo = -17 if self.variant == "sx1261" else -9
        if not lo <= power <= self.pa_max or p[1] > 7:
            return PROC_ERR
        self.power_dbm, self.ramp = power, p[1]
        return OK

    def _set_modulation(self, p):
        if self.packet_type != 1:
            return OK                            # GFSK parameters: accepted, not modelled
        sf, bw, cr, ldro = p[0], p[1], p[2], p[3]
        if not (5 <= sf <= 12 and (bw in BW_CODES or bw in NARROW_BW) and 1 <= cr <= 4
                and ldro <= 1):
            return PROC_ERR
        self.sf, self.bw_code, self.cr, self.ldro = sf, bw, cr, ldro
        return OK

    def _set_packet(self, p):
        if self.packet_type != 1:
            return OK
        if p[2] > 1 or p[4] > 1 or p[5] > 1:
            return PROC_ERR
        self.preamble = (p[0] << 8) | p[1]
        self.implicit, self.payload_len, self.crc, self.iq = p[2], p[3], p[4], p[5]
        return OK

    def _set_cad_params(self, p):
        if p[0] > 4 or p[3] > 2:
            return PROC_ERR
        self.cad_params = (p[0], p[1], p[2], p[3], int.from_bytes(p[4:7], "big"))
        return OK

    def _set_base(self, p):
        self.tx_base, self.rx_base = p[0], p[1]
        return OK

    def _reset_stats(self, p):
        self.stats = [0, 0, 0]
        return OK

    def _clear_errors(self, p):
        self.errors = 0
        return OK

    # -- the air -------------------------------------------------------------

    def _air_params(self):
        msb, lsb = self.regs.get(0x0740, 0x14), self.regs.get(0x0741, 0x24)
        return AirParams("lora", self.freq_hz, self.sf, BW_CODES.get(self.bw_code, 125000),
                         self.cr, (msb & 0xF0) | (lsb >> 4), bool(self.iq), not self.implicit,
                         bool(self.crc), self.preamble, bool(self.ldro))

    def _stop_radio(self):
        if self._timer is not None:
            self.medium.cancel(self._timer)
            self._timer = None
        if self.mode == "tx":
            self.medium.abort(self.node_id)
        elif self.mode == "rx":
            self.medium.listen(self.node_id, None)

    def _raise(self, bits):
        self.irq |= bits & self.irq_mask

    def _to_fallback(self):
        self.mode = self.fallback

    def on_tx_done(self, end_us):
        with self._lock:
            if self.mode != "tx":
                return
            if self._timer is not None:
                self.medium.cancel(self._timer)
                self._timer = None
            self._to_fallback()
            self.cmd_status = TX_DONE
            self._raise(IRQ_TX_DONE)

    def on_frame(self, rec):
        with self._lock:
            if self.mode != "rx":
                return
            flags = IRQ_PREAMBLE | IRQ_SYNC | IRQ_HEADER_VALID | IRQ_RX_DONE
            self.stats[0] += 1
            if not rec.ok:
                flags |= IRQ_CRC_ERR
                self.stats[1] += 1
            n = len(rec.frame)
            for i in range(n):
                self.buffer[(self.rx_ptr + i) & 0xFF] = rec.frame[i]
            self.last_start, self.last_len = self.rx_ptr, n
            if self.rx_continuous:
                self.rx_ptr = (self.rx_ptr + n) & 0xFF
            noise = rec.rssi - rec.snr
            total = 10 * math.log10(10 ** (rec.rssi / 10) + 10 ** (noise / 10))
            snr = max(-128, min(127, int(round(rec.snr * 4))))
            self.pkt = (max(0, min(255, int(round(-2 * total)))), snr & 0xFF,
                        max(0, min(255, int(round(-2 * rec.rssi)))))
            if not self.rx_continuous:
                self._stop_radio()
                self._to_fallback()
            self._raise(flags)

    def _on_timeout(self, what):
        with self._lock:
            self._timer = None
            if what == "rx" and self.medium.receiving(self.node_id):
                return                     # the timer stops on a detected header (§13.1.6)
            if self.mode in ("tx", "rx"):
                self._stop_radio()
                self._to_fallback()
                self._raise(IRQ_TIMEOUT)

    def _on_cad(self, start):
        with self._lock:
            self._timer = None
            if self.mode != "cad":
                return
            found = self.medium.activity(self.node_id, self._air_params(), start,
                                         self.medium.now_us)
            self._to_fallback()
            self._raise(IRQ_CAD_DONE | (IRQ_CAD_DETECTED if found else 0))
