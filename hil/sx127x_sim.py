"""A simulated SX1276/77/78/79 in LoRa mode: answers register reads and
writes over SPI as the datasheet (rev. 7) describes them, drives DIO0, and
sends/receives through a ``hil.radio.RadioMedium``, so
``drivers.lora.sx127x.Sx127x`` runs unchanged against it.

Owns the chip's visible behaviour: burst access with auto-increment except at
RegFifo, which walks RegFifoAddrPtr (§4.3); RegOpMode's LongRangeMode bit
changeable in SLEEP only (§6.4); RegIrqFlags cleared by writing ones and
gated by RegIrqFlagsMask; DIO0 per RegDioMapping1 (RxDone, TxDone, CadDone);
TX of RegPayloadLength bytes from RegFifoTxBaseAddr ending in STDBY; RX
writing each packet at the receive pointer (RegFifoRxCurrentAddr,
RegRxNbBytes), RXSINGLE ending in STDBY or RxTimeout after the symbol
timeout; packet SNR/RSSI registers by §5.5.5; RegRssiValue; RegVersion 0x12;
output power decoded from RegPaConfig/RegPaDac (§5.4.3).
Must not know the driver. Not modelled: FSK/OOK mode (registers are kept,
nothing is sent: counted in ``unmodelled``), frequency hopping, bandwidths
under 125 kHz. Registers without a LoRa meaning read back what was written.
"""

import threading

from drivers.lora.airtime import time_on_air_us
from hil.radio import AirParams

DEFAULTS = {0x01: 0x09, 0x06: 0x6C, 0x07: 0x80, 0x08: 0x00, 0x09: 0x4F, 0x0A: 0x09,
            0x0B: 0x2B, 0x0C: 0x20, 0x0E: 0x80, 0x1D: 0x72, 0x1E: 0x70, 0x1F: 0x64,
            0x21: 0x08, 0x22: 0x01, 0x23: 0xFF, 0x26: 0x04, 0x31: 0xC3, 0x33: 0x27,
            0x37: 0x0A, 0x39: 0x12, 0x3B: 0x1D, 0x42: 0x12, 0x4D: 0x84}
READ_ONLY = (0x10, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x25, 0x42)
BW = {0x7: 125000, 0x8: 250000, 0x9: 500000}
SLEEP, STDBY, FSTX, TX, FSRX, RXCONT, RXSINGLE, CAD = range(8)
IRQ_RX_TIMEOUT, IRQ_RX_DONE, IRQ_CRC, IRQ_HEADER = 0x80, 0x40, 0x20, 0x10
IRQ_TX_DONE, IRQ_CAD_DONE, IRQ_CAD_DETECTED = 0x08, 0x04, 0x01
DIO0_SOURCE = (IRQ_RX_DONE, IRQ_TX_DONE, IRQ_CAD_DONE, 0)


class _Pin:
    def __init__(self, read, write=None):
        self._read = read
        self._write = write

    def value(self, v=None):
        if v is None:
            return self._read()
        if self._write is not None:
            self._write(1 if v else 0)
        return None


class Sx127xSim:
    """One chip on ``medium`` as node ``node_id``: ``transfer(bytes)`` is the
    SPI, ``dio0`` and ``reset`` the pins."""

    def __init__(self, medium, node_id):
        self.medium = medium
        self.node_id = node_id
        self.counters = {"transactions": 0, "unmodelled": 0, "fifo_in_sleep": 0}
        self._lock = threading.RLock()
        self._powered = True
        self._reset_level = 1
        self.dio0 = _Pin(self._dio0)
        self.reset = _Pin(lambda: self._reset_level, self._reset_line)
        self._por()
        medium.attach(node_id, self)

    def _por(self):
        self.regs = bytearray(128)
        for addr, v in DEFAULTS.items():
            self.regs[addr] = v
        self.fifo = bytearray(256)
        self.rx_ptr = 0
        self._timer = None

    def _reset_line(self, level):
        with self._lock:
            self._stop_radio()
            self._reset_level = level
            self._por()

    def on_power(self, up):
        with self._lock:
            self._powered = up
            self._timer = None
            self._por()

    @property
    def mode(self):
        return self.regs[0x01] & 7

    def _lora(self):
        return bool(self.regs[0x01] & 0x80)

    def _dio0(self):
        with self._lock:
            if not self._powered or not self._lora():
                return 0
            src = DIO0_SOURCE[self.regs[0x40] >> 6]
            return 1 if self.regs[0x12] & src else 0

    # -- SPI ------------------------------------------------------------------

    def transfer(self, data):
        with self._lock:
            data = bytes(data)
            n = len(data)
            self.counters["transactions"] += 1
            out = bytearray(n)
            if n == 0 or not self._powered or self._reset_level == 0:
                return bytes(out)
            addr = data[0] & 0x7F
            write = bool(data[0] & 0x80)
            for i in range(1, n):
                if write:
                    self._write(addr, data[i])
                else:
                    out[i] = self._read(addr)
                if addr != 0x00:
                    addr = (addr + 1) & 0x7F
            return bytes(out)

    def _read(self, addr):
        if addr == 0x00:
            if self.mode == SLEEP:                   # FIFO not accessible in SLEEP
                self.counters["fifo_in_sleep"] += 1
                return 0
            ptr = self.regs[0x0D]
            self.regs[0x0D] = (ptr + 1) & 0xFF
            return self.fifo[ptr]
        if addr == 0x1B:
            return self._rssi_now()
        return self.regs[addr]

    def _write(self, addr, v):
        if addr == 0x00:
            if self.mode == SLEEP:
                self.counters["fifo_in_sleep"] += 1
                return
            ptr = self.regs[0x0D]
            self.fifo[ptr] = v
            self.regs[0x0D] = (ptr + 1) & 0xFF
        elif addr == 0x01:
            self._set_op_mode(v)
        elif addr == 0x12:
            self.regs[0x12] &= ~v & 0xFF
        elif addr not in READ_ONLY:
            self.regs[addr] = v

    def _set_op_mode(self, v):
        cur = self.regs[0x01]
        if cur & 7 != SLEEP:                         # LongRangeMode kept outside SLEEP
            v = (v & 0x7F) | (cur & 0x80)
        self._stop_radio()
        self.regs[0x01] = v
        mode = v & 7
        if not v & 0x80:
            if mode in (TX, RXCONT, RXSINGLE, CAD):
                self.counters["unmodelled"] += 1
            return
        if mode == TX:
            self._start_tx()
        elif mode in (RXCONT, RXSINGLE):
            self._start_rx(mode)
        elif mode == CAD:
            self._start_cad()

    def _to_standby(self):
        self.regs[0x01] = (self.regs[0x01] & 0xF8) | STDBY

    def _raise(self, bits):
        self.regs[0x12] |= bits & ~self.regs[0x11] & 0xFF

    # -- the air ----------------------------------------------------------------

    def _air_params(self):
        r = self.regs
        bw = BW.get(r[0x1D] >> 4)
        sf = r[0x1E] >> 4
        if bw is None or not 6 <= sf <= 12 or not 1 <= (r[0x1D] >> 1) & 7 <= 4:
            return None
        frf = (r[0x06] << 16) | (r[0x07] << 8) | r[0x08]
        return AirParams("lora", (frf * 32000000 + (1 << 18)) >> 19, sf, bw, (r[0x1D] >> 1) & 7,
                         r[0x39], bool(r[0x33] & 0x40), not r[0x1D] & 1, bool(r[0x1E] & 0x04),
                         (r[0x20] << 8) | r[0x21], bool(r[0x26] & 0x08))

    def _power_dbm(self):
        pa = self.regs[0x09]
        if pa & 0x80:                                 # PA_BOOST
            pmax = 20 if self.regs[0x4D] & 0x07 == 0x07 else 17
        else:                                          # RFO
            pmax = 10.8 + 0.6 * ((pa >> 4) & 7)
        return pmax - (15 - (pa & 0x0F))

    def _start_tx(self):
        p = self._air_params()
        if p is None:
            self.counters["unmodelled"] += 1
            self._to_standby()
            return
        n = self.regs[0x22]
        base = self.regs[0x0E]
        frame = bytes(self.fifo[(base + i) & 0xFF] for i in range(n))
        toa = time_on_air_us(n, p.sf, p.bw_hz, p.cr, p.explicit, p.crc, p.preamble, p.ldro,
                             "sx127x")
        if self.medium.transmit(self.node_id, frame, p, power_dbm=self._power_dbm(),
                                toa_us=toa) is None:
            self._to_standby()

    def _start_rx(self, mode):
        p = self._air_params()
        if p is None:
            self.counters["unmodelled"] += 1
            return
        self.rx_ptr = self.regs[0x0F]
        self.medium.listen(self.node_id, p)
        if mode == RXSINGLE:
            symbols = ((self.regs[0x1E] & 0x03) << 8) | self.regs[0x1F]
            t = symbols * (1 << p.sf) * 1000000 // p.bw_hz
            self._timer = self.medium.schedule(self.medium.now_us + t, self._on_rx_timeout)

    def _start_cad(self):
        p = self._air_params()
        if p is None:
            self.counters["unmodelled"] += 1
            return
        dur = 2 * (1 << p.sf) * 1000000 // p.bw_hz
        self._timer = self.medium.schedule(self.medium.now_us + dur, self._on_cad,
                                           self.medium.now_us)

    def _stop_radio(self):
        if self._timer is not None:
            self.medium.cancel(self._timer)
            self._timer = None
        if not self._lora():
            return
        if self.mode == TX:
            self.medium.abort(self.node_id)
        elif self.mode in (RXCONT, RXSINGLE):
            self.medium.listen(self.node_id, None)

    def _rssi_now(self):
        p = self._air_params()
        if p is None or self.mode not in (RXCONT, RXSINGLE, CAD):
            return 0
        dbm = self.medium.channel_power_dbm(self.node_id, p)
        return max(0, min(255, int(round(dbm - self._offset(p)))))

    def _offset(self, p):
        return -157 if p.freq_hz >= 779000000 else -164

    def on_tx_done(self, end_us):
        with self._lock:
            if self._lora() and self.mode == TX:
                self._to_standby()
                self._raise(IRQ_TX_DONE)

    def on_frame(self, rec):
        with self._lock:
            if not self._lora() or self.mode not in (RXCONT, RXSINGLE):
                return
            n = len(rec.frame)
            start = self.rx_ptr
            for i in range(n):
                self.fifo[(start + i) & 0xFF] = rec.frame[i]
            self.rx_ptr = (start + n) & 0xFF
            r = self.regs
            r[0x10], r[0x13], r[0x25] = start, n, (start + n - 1) & 0xFF
            snr = max(-128, min(127, int(round(rec.snr * 4))))
            r[0x19] = snr & 0xFF
            off = self._offset(rec.params)
            raw = rec.rssi - off - snr / 4 if snr < 0 else (rec.rssi - off) * 15 / 16
            r[0x1A] = max(0, min(255, int(round(raw))))
            r[0x1C] = (r[0x1C] & 0xBF) | (0x40 if rec.params.crc else 0)
            flags = IRQ_RX_DONE | IRQ_HEADER | (0 if rec.ok else IRQ_CRC)
            if self.mode == RXSINGLE:
                self._stop_radio()
                self._to_standby()
            self._raise(flags)

    def _on_rx_timeout(self):
        with self._lock:
            self._timer = None
            if self.mode == RXSINGLE and not self.medium.receiving(self.node_id):
                self._stop_radio()
                self._to_standby()
                self._raise(IRQ_RX_TIMEOUT)

    def _on_cad(self, start):
        with self._lock:
            self._timer = None
            if self.mode != CAD:
                return
            p = self._air_params()
            found = p is not None and self.medium.activity(self.node_id, p, start,
                                                           self.medium.now_us)
            self._to_standby()
            self._raise(IRQ_CAD_DONE | (IRQ_CAD_DETECTED if found else 0))
