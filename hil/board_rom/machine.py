"""``machine`` of the simulated board (runs inside MicroPython).

The subset the firmware uses, with MicroPython's signatures: ``UART`` (its
bytes go to the board's UART pseudo-terminal; a read waits up to
``timeout`` ms), ``Pin`` (the RS-485 driver-enable pin is honoured: bytes
written while it is low never reach the bus, bytes arriving while it is high
are lost, as on a real half-duplex transceiver), ``RTC``, ``idle``,
``lightsleep``, ``reset``, ``soft_reset``, ``unique_id``, ``freq``. Waiting
happens on the Node side, where Ctrl-C from the REPL is noticed and raised
as KeyboardInterrupt.
"""

import binascii
import time

import _board


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = str(id)
        if value is not None:
            self.value(value)

    def init(self, mode=-1, pull=-1, value=None):
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return _board.pin(self.id, -1)
        _board.pin(self.id, 1 if v else 0)
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class UART:
    def __init__(self, id, baudrate=9600, bits=8, parity=None, stop=1, **kw):
        self.id = id
        self.baudrate = baudrate
        self.timeout = 0
        self.timeout_char = 0
        self.init(baudrate, bits, parity, stop, **kw)

    def init(self, baudrate=None, bits=8, parity=None, stop=1, tx=None, rx=None,
             timeout=None, timeout_char=None, **kw):
        if baudrate:
            self.baudrate = baudrate
            _board.uart_init(self.baudrate)
        if timeout is not None:
            self.timeout = timeout
        if timeout_char is not None:
            self.timeout_char = timeout_char

    def deinit(self):
        pass

    def any(self):
        return _board.uart_any()

    def _wait(self, ms):
        start = time.ticks_ms()
        while not _board.uart_any():
            if time.ticks_diff(time.ticks_ms(), start) >= ms:
                return False
            _board.idle(1)
        return True

    def read(self, n=-1):
        if not self._wait(self.timeout):
            return None
        out = b""
        while n is None or n < 0 or len(out) < n:
            want = -1 if n is None or n < 0 else n - len(out)
            out += binascii.unhexlify(_board.uart_read(want))
            if (n is not None and 0 <= n <= len(out)) or not self._wait(self.timeout_char):
                break
        return out

    def readinto(self, buf, nbytes=None):
        data = self.read(len(buf) if nbytes is None else nbytes)
        if not data:
            return None
        buf[:len(data)] = data
        return len(data)

    def readline(self):
        out = b""
        while not out.endswith(b"\n"):
            c = self.read(1)
            if not c:
                break
            out += c
        return out or None

    def write(self, buf):
        return _board.uart_write(binascii.hexlify(bytes(buf)).decode())

    def flush(self):
        _board.uart_flush()

    def txdone(self):
        return bool(_board.uart_txdone())


class RTC:
    _offset = 0

    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        if dt is None:
            t = time.gmtime(int(time.time()) + RTC._offset)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        want = time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], dt[3], 0))
        RTC._offset = want - int(time.time())
        return None


def idle():
    _board.idle(1)


def lightsleep(ms=None):
    _board.idle(-1 if ms is None else ms)


def deepsleep(ms=None):
    reset()


def reset():
    _board.reset(1)
    raise SystemExit


def soft_reset():
    _board.reset(0)
    raise SystemExit


def unique_id():
    return b"WUMSIM01"


def freq(hz=None):
    return 240000000


def disable_irq():
    return 0


def enable_irq(state=0):
    pass
