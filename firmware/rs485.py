"""A half-duplex RS-485 port on a MicroPython board: ``machine.UART`` plus
the transceiver's driver-enable (DE, tied to /RE) pin.

Portable. Owns the direction switching (DE high, write, wait until the last
stop bit left the shift register, DE low: a reply that starts while DE is
still high is lost on a real transceiver) and waiting for bytes with a
deadline. Every handle is injected: ``uart`` (``write``, ``read``, ``any``,
optional ``flush``/``txdone``/``init``), ``de`` (a ``machine.Pin`` or None
for an auto-direction transceiver), ``ticks_ms``/``ticks_diff`` and
``idle`` (``machine.idle`` on a board). Must not know protocols.
"""


class Rs485:
    def __init__(self, uart, de=None, baud=9600, ticks_ms=None, ticks_diff=None, idle=None):
        import time
        self.uart = uart
        self.de = de
        self.baudrate = baud
        self.ticks_ms = ticks_ms or time.ticks_ms
        self.ticks_diff = ticks_diff or time.ticks_diff
        self.idle = idle or _default_idle()
        self.sent = 0
        self.received = 0
        if de is not None:
            de.value(0)

    def send(self, data):
        if self.de is not None:
            self.de.value(1)
        try:
            self.uart.write(data)
            self._drain(len(data))
        finally:
            if self.de is not None:
                self.de.value(0)
        self.sent += len(data)

    def _drain(self, n):
        """Return once the UART has shifted out the last byte."""
        flush = getattr(self.uart, "flush", None)
        if flush is not None:
            flush()
            return
        txdone = getattr(self.uart, "txdone", None)
        start = self.ticks_ms()
        limit = n * 11000 // self.baudrate + 2     # 11 bits a byte, in ms
        while self.ticks_diff(self.ticks_ms(), start) < limit:
            if txdone is not None and txdone():
                return
            self.idle()

    def recv(self, timeout_ms):
        """What arrived within ``timeout_ms`` (b"" when nothing did)."""
        start = self.ticks_ms()
        while True:
            n = self.uart.any()
            if n:
                data = self.uart.read(n) or b""
                self.received += len(data)
                return data
            if self.ticks_diff(self.ticks_ms(), start) >= timeout_ms:
                return b""
            self.idle()

    def set_baud(self, baud):
        self.baudrate = baud
        self.uart.init(baudrate=baud)


def _default_idle():
    try:
        import machine
        return machine.idle
    except ImportError:
        import time
        return lambda: time.sleep_ms(1)
