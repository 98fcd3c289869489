"""Where a simulator serves: the far end of a pseudo-terminal pair, or a real
serial port (USB-RS485 adapter) named by a pyserial URL.

Owns opening, raw reads/writes and baud changes. ``PtyPort`` holds the master
side of a pty; the agent opens ``PtyPort.agent_path`` (the slave) like any
serial device. Ports are opened in ``open()``, never in ``__init__``.
"""

from __future__ import annotations

import errno
import os
import select
import termios
import tty
from typing import Any


class PtyPort:
    """The simulator's end of a pseudo-terminal pair."""

    def __init__(self, link: str | None = None) -> None:
        self.link = link            # optional stable symlink to the agent's end
        self.master = -1
        self.slave = -1
        self.agent_path = ""
        self.baudrate = 9600

    def open(self) -> PtyPort:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave, termios.TCSANOW)
        attrs = termios.tcgetattr(self.slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
        self.agent_path = os.ttyname(self.slave)
        os.set_blocking(self.master, False)
        if self.link:
            try:
                os.unlink(self.link)
            except FileNotFoundError:
                pass
            os.symlink(self.agent_path, self.link)
        return self

    def read(self, timeout: float) -> bytes:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return b""
        try:
            return os.read(self.master, 4096)
        except OSError as e:
            if e.errno in (errno.EIO, errno.EAGAIN):
                return b""
            raise

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
                view = view[n:]
            except BlockingIOError:
                select.select([], [self.master], [], 0.05)

    def set_baud(self, baud: int) -> None:
        self.baudrate = baud        # a pty has no line speed; the bus paces

    def flush_input(self) -> None:
        while self.read(0):
            pass

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1
        if self.link:
            try:
                os.unlink(self.link)
            except FileNotFoundError:
                pass


class SerialPort:
    """A real serial port or any pyserial URL (``/dev/ttyUSB1``, ``socket://…``)."""

    def __init__(self, url: str, baudrate: int = 9600, rs485: bool = False) -> None:
        self.url = url
        self.baudrate = baudrate
        self.rs485 = rs485
        self.agent_path = url
        self._ser: Any = None

    def open(self) -> SerialPort:
        import serial

        self._ser = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0)
        if self.rs485:
            import serial.rs485

            self._ser.rs485_mode = serial.rs485.RS485Settings()
        return self

    def read(self, timeout: float) -> bytes:
        assert self._ser is not None
        self._ser.timeout = timeout
        first = self._ser.read(1)
        if not first:
            return b""
        return first + self._ser.read(self._ser.in_waiting)

    def write(self, data: bytes) -> None:
        assert self._ser is not None
        self._ser.write(data)
        self._ser.flush()

    def set_baud(self, baud: int) -> None:
        self.baudrate = baud
        if self._ser is not None:
            self._ser.baudrate = baud

    def flush_input(self) -> None:
        if self._ser is not None:
            self._ser.reset_input_buffer()

    def close(self) -> None:
        if self._ser is not None:
            self._ser.close()
            self._ser = None


def open_port(spec: str, baudrate: int = 9600, link: str | None = None):
    """``pty`` → a new pty pair (agent's end in ``.agent_path``); else a URL."""
    if spec == "pty":
        p = PtyPort(link=link)
        p.baudrate = baudrate
        return p.open()
    return SerialPort(spec, baudrate=baudrate).open()
