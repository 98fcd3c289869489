"""The thin IO adapter under every sans-IO meter protocol: a serial port
named by URL (``/dev/ttyUSB0``, ``/dev/pts/5``, ``socket://host:port``,
``loop://``, ``spy://…``) through ``serial.serial_for_url``.

Owns opening (in ``connect()``, never in ``__init__``), RS-485 mode through
the kernel, baud/parity changes requested by a protocol core as events, timed
reads, and the port's flight recorder. Must not know any protocol.
"""

from __future__ import annotations

import os
import time
from typing import Any

from drivers import DriverError, MeterTimeout
from drivers.flight import FlightRecorder

PTY_SLAVE_MAJORS = range(136, 144)      # Linux: Unix98 pty slaves (/dev/pts/N)


class Link:
    def __init__(self, url: str, baudrate: int = 9600, bytesize: int = 8, parity: str = "N",
                 stopbits: int = 1, rs485: bool = False, recorder: FlightRecorder | None = None
                 ) -> None:
        self.url = url
        self.baudrate = baudrate
        self.bytesize = bytesize
        self.parity = parity
        self.stopbits = stopbits
        self.rs485 = rs485
        self.recorder = recorder or FlightRecorder()
        self.bytes_tx = 0
        self.bytes_rx = 0
        self._ser: Any = None

    def connect(self) -> Link:
        import serial

        try:
            self._ser = serial.serial_for_url(
                self.url, baudrate=self.baudrate, bytesize=self.bytesize, parity=self.parity,
                stopbits=self.stopbits, timeout=0, exclusive=None)
        except (serial.SerialException, OSError, ValueError) as e:
            raise DriverError("cannot open %s: %s" % (self.url, e), port=self.url) from e
        if self.rs485:
            import serial.rs485

            self._ser.rs485_mode = serial.rs485.RS485Settings()
        return self

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def configure(self, baudrate: int | None = None, bytesize: int | None = None,
                  parity: str | None = None) -> None:
        """Carry out a protocol's line-setting event (e.g. IEC 62056-21 baud switch).

        All-or-nothing: the settings are applied in one step, and a port that
        refuses them keeps its previous settings and raises ``DriverError``.
        Refusing includes keeping other character framing than asked: a pty
        (no wire, so no framing) and some USB adapters silently stay at 8 data
        bits without parity, and glibc reports that as EINVAL only when the
        speed did not change as well — so the framing is read back.
        """
        new = (baudrate or self.baudrate, bytesize or self.bytesize, parity or self.parity)
        if self._ser is not None:
            old = self._ser.get_settings()
            try:
                self._ser.apply_settings({"baudrate": new[0], "bytesize": new[1],
                                          "parity": new[2]})
                kept = self._framing()
                if kept is not None and new[2] in "NEO" and kept != (new[1], new[2]):
                    raise ValueError("the port keeps %d%s" % kept)
            except Exception as e:  # termios.error, SerialException, ValueError
                self._ser.apply_settings(old)
                raise DriverError("%s refuses %d %d%s: %s" % (self.url, new[0], new[1], new[2], e),
                                  port=self.url) from e
        self.baudrate, self.bytesize, self.parity = new

    def _framing(self) -> tuple[int, str] | None:
        """(data bits, parity) the port really runs, read back from its termios;
        None for ports without one (``socket://``, ``loop://``)."""
        fd = getattr(self._ser, "fd", None)
        if not isinstance(fd, int):
            return None
        import termios

        try:
            cflag = termios.tcgetattr(fd)[2]
        except termios.error:
            return None
        sizes = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}
        parity = "N"
        if cflag & termios.PARENB:
            parity = "O" if cflag & termios.PARODD else "E"
        return sizes[cflag & termios.CSIZE], parity

    @property
    def is_pty(self) -> bool:
        """True when the port is a pseudo-terminal: bytes go to the other end as
        written, with no wire and no character framing in between."""
        fd = getattr(self._ser, "fd", None)
        if not isinstance(fd, int):
            return False
        try:
            return os.major(os.fstat(fd).st_rdev) in PTY_SLAVE_MAJORS or \
                os.ttyname(fd).startswith("/dev/pts/")
        except OSError:
            return False

    def send(self, data: bytes) -> None:
        if self._ser is None:
            raise DriverError("port %s is not open" % self.url, port=self.url)
        self.recorder.record("tx", data, time.monotonic())
        self._ser.write(data)
        self._ser.flush()
        self.bytes_tx += len(data)

    def recv(self, timeout: float) -> bytes:
        """Whatever arrives within ``timeout`` seconds (b"" if nothing)."""
        if self._ser is None:
            raise DriverError("port %s is not open" % self.url, port=self.url)
        self._ser.timeout = timeout
        first = self._ser.read(1)
        if not first:
            return b""
        data = first + self._ser.read(self._ser.in_waiting)
        self.recorder.record("rx", data, time.monotonic())
        self.bytes_rx += len(data)
        return data

    def recv_until(self, done, timeout: float, inter_byte: float = 0.2) -> bytes:
        """Read until ``done(buffer)`` is true; MeterTimeout after ``timeout``."""
        deadline = time.monotonic() + timeout
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MeterTimeout("no complete answer within %.2fs" % timeout, port=self.url,
                                   partial=buf.hex())
            buf += self.recv(min(left, inter_byte))
            if done(buf):
                return buf

    def drain(self) -> None:
        if self._ser is not None:
            self._ser.reset_input_buffer()

    def close(self) -> None:
        if self._ser is not None:
            self._ser.close()
            self._ser = None
