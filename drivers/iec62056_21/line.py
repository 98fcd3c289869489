"""The IO loop around the sans-IO IEC 62056-21 core, over ``drivers.serialio.Link``.

CPython only (pyserial). Owns the line: 7E1 at the speeds the core asks for
(``BaudChange``), the meter's reaction time before each send, and reading
until the core yields a message, with a silence timeout that tells a silent
meter (``MeterTimeout``) from one talking noise (``GarbledAnswer``). Must not
know sessions or the MeterClient verbs (io).

Character framing (IEC 62056-21 §5: one start bit, 7 data bits, even parity,
one stop bit), by what the port is:

* a UART that does 7E1: it adds the parity bit on the wire and checks and
  drops it on receive; we hand it 7-bit characters;
* a UART that refuses 7 data bits (some USB adapters): 8N1 has the same ten
  bit times, so we put the even parity into bit 7 ourselves and strip it
  from what we receive;
* a pseudo-terminal: no wire and no framing (the kernel keeps CS8 whatever
  is asked). The other end reads exactly the bytes we write, so a character
  is a byte with bit 7 clear: setting a parity bit there would hand a meter
  ``\xaf?!\x8d\n`` for ``/?!`` CR LF — not characters it knows.
"""

from __future__ import annotations

import logging
import termios
import time

import serial

from drivers import DriverError, MeterTimeout
from drivers.iec62056_21.core import NEED_DATA, BaudChange, Connection
from drivers.iec62056_21.errors import GarbledAnswer, IecProtocolError
from drivers.iec62056_21.frames import INITIAL_BAUD
from drivers.serialio import Link

log = logging.getLogger(__name__)
MAX_ANSWER_S = 300.0        # hard cap on one answer, however slow the line
GARBLED_MIN = 3             # noise bytes that make a silence a garbled answer (not a glitch)
UART_7E1, PARITY_BIT7, BYTES = "7E1", "8N1+parity", "bytes"    # framings, as above
FRAMING: dict[str, str] = {}    # what ports that refuse 7E1 were found to need, by URL


class IecLine:
    """A Link driven by a ``core.Connection``: the verbs' plumbing."""

    def __init__(self, url: str, address: str = "", timeout: float = 2.0,
                 link: Link | None = None) -> None:
        self.url = url
        self.address = str(address or "")
        self.timeout = timeout
        self.link = link
        self._own_link = link is None
        self._last_rx = 0.0
        self.framing = FRAMING.get(url, UART_7E1)

    # -- the line ----------------------------------------------------------------
    def _line(self, baud: int) -> None:
        """Put the port at ``baud`` 7E1, or at 8N1 when it refuses 7 data bits
        (the framing then decides what happens to bit 7, see above)."""
        assert self.link is not None
        if self.framing == UART_7E1:
            try:
                self.link.configure(baudrate=baud, bytesize=7, parity="E")
                return
            except (DriverError, OSError, ValueError, termios.error, serial.SerialException) as e:
                self.framing = BYTES if self.link.is_pty else PARITY_BIT7
                FRAMING[self.url] = self.framing
                log.info("%s refuses 7E1 (%s); %s", self.url, e,
                         "a pty: 7-bit characters as bytes" if self.framing == BYTES
                         else "8N1 with the parity in bit 7")
        self.link.configure(baudrate=baud, bytesize=8, parity="N")

    def _write(self, data: bytes) -> None:
        assert self.link is not None
        if self.framing == PARITY_BIT7:
            data = bytes(b | ((bin(b).count("1") & 1) << 7) for b in data)
        self.link.send(data)

    def _read(self, timeout: float) -> bytes:
        assert self.link is not None
        data = self.link.recv(timeout)
        if self.framing == PARITY_BIT7 and data:
            data = bytes(b & 0x7F for b in data)
        return data

    # -- lifecycle -----------------------------------------------------------
    def connect(self):
        if self.link is None:
            self.link = Link(self.url, baudrate=INITIAL_BAUD)
        if not self.link.is_open:
            self.link.connect()
        self._line(INITIAL_BAUD)
        return self

    def close(self) -> None:
        if self._own_link and self.link is not None:
            self.link.close()

    # -- the engine loop -------------------------------------------------------
    def _tx(self, conn: Connection, msg) -> None:
        wait = self._last_rx + conn.reaction_time - time.monotonic()
        if wait > 0:            # t_r: the meter turns its line around (IO timing, §5.3)
            time.sleep(wait)
        self._write(conn.send(msg))

    def _await(self, conn: Connection):
        """The next message from the meter, carrying out line events on the way."""
        assert self.link is not None
        start = time.monotonic()
        quiet_since = start
        noise0 = conn.noise[0]
        while True:
            ev = conn.next_event()
            if isinstance(ev, BaudChange):
                self._line(ev.baud)
                continue
            if ev is not NEED_DATA:
                return ev
            now = time.monotonic()
            if now - quiet_since > self.timeout or now - start > MAX_ANSWER_S:
                self._silence(conn, noise0)
            data = self._read(0.05)
            if data:
                self._last_rx = time.monotonic()
                conn.receive_data(data)
                if conn.noise[0] == noise0:     # only real progress resets the clock
                    quiet_since = time.monotonic()

    def _silence(self, conn: Connection, noise0: int) -> None:
        count, noise = conn.noise
        fields = dict(meter=self.address, port=self.url, state=conn.state,
                      baud=conn.line_baud)
        if count - noise0 >= GARBLED_MIN:
            raise GarbledAnswer("garbled answer: %d bytes of line noise" % (count - noise0),
                                raw=noise.hex(), **fields)
        if conn.pending:
            raise IecProtocolError("incomplete frame, then silence", **fields)
        raise MeterTimeout("meter %r silent for %.1fs" % (self.address, self.timeout), **fields)

