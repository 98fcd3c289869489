"""7E1 character framing (IEC 62056-21 §5) by what the port is: a pty keeps
no framing, so a character is a byte with bit 7 clear; a UART without 7 data
bits gets the parity in bit 7 of 8N1; a port's refusal is read back, not
trusted from tcsetattr (glibc reports it on a pty only when the speed stays)."""

from __future__ import annotations

import os
import tty

import pytest

from drivers import DriverError
from drivers.iec62056_21 import line
from drivers.iec62056_21.line import BYTES, PARITY_BIT7, IecLine
from drivers.serialio import Link


@pytest.fixture
def pty_path():
    master, slave = os.openpty()
    tty.setraw(slave)
    yield os.ttyname(slave), master
    os.close(master)
    os.close(slave)


@pytest.mark.parametrize("opened_at", [300, 9600])
def test_a_pty_refuses_7e1_whatever_the_speed_change(pty_path, opened_at: int) -> None:
    path, _ = pty_path
    link = Link(path, baudrate=opened_at).connect()
    try:
        assert link.is_pty
        with pytest.raises(DriverError):
            link.configure(baudrate=300, bytesize=7, parity="E")
        assert (link.baudrate, link.bytesize, link.parity) == (opened_at, 8, "N")
        link.configure(baudrate=1200)                       # the speed alone is fine
        assert link._framing() == (8, "N")
    finally:
        link.close()


def test_on_a_pty_characters_go_as_7bit_bytes(pty_path, monkeypatch) -> None:
    monkeypatch.setattr(line, "FRAMING", {})
    path, master = pty_path
    ln = IecLine(path).connect()
    try:
        assert ln.framing == BYTES
        ln._write(b"/?!\r\n")
        assert os.read(master, 16) == b"/?!\r\n"
        os.write(master, b"/ORC5X\r\n")
        assert ln._read(1.0) == b"/ORC5X\r\n"
    finally:
        ln.link.close()


class EightBitAdapter(Link):
    """A USB adapter whose UART has no 7-bit mode (the one piece of hardware
    this test lacks), over pyserial's loop:// — the real Link otherwise."""

    def configure(self, baudrate=None, bytesize=None, parity=None) -> None:
        if bytesize == 7:
            raise DriverError("%s refuses 7 data bits" % self.url, port=self.url)
        super().configure(baudrate, bytesize, parity)


def test_a_uart_without_7_bits_carries_the_parity_in_bit_7(monkeypatch) -> None:
    monkeypatch.setattr(line, "FRAMING", {})
    link = EightBitAdapter("loop://", baudrate=300).connect()
    ln = IecLine("loop://", link=link).connect()
    try:
        assert ln.framing == PARITY_BIT7 and (link.bytesize, link.parity) == (8, "N")
        ln._write(b"/?!\r\n")
        assert link.recorder.entries()[-1][2] == bytes([0xAF, 0x3F, 0x21, 0x8D, 0x0A])
        assert ln._read(1.0) == b"/?!\r\n"                   # looped back, parity stripped
    finally:
        link.close()
