"""An IEC 62056-21 protocol mode C tariff device written from the standard,
for tests only: the independent oracle our client is held against.

Written from IEC 62056-21:2002 alone — §5 (character format: one start bit,
seven data bits, even parity, one stop bit; ISO 646 7-bit characters), §6.3
(the messages below) and §6.4.3 (protocol mode C) — and imports nothing but
the standard library: no code from ``drivers.iec62056_21`` or
``hil.iec_meter``, so the two cannot agree on a mistake.

    request            / ? address ! CR LF                   (300 Bd)
    identification     / X X X Z ident CR LF                 (300 Bd)
    option select      ACK V Z Y CR LF                       (300 Bd)
    readout  (Y = 0)   STX data-lines ! CR LF ETX BCC        (at Z, then back to 300 Bd)
    programming (Y=1)  SOH P 0 STX (serial) ETX BCC          (at Z)
        P1             SOH P 1 STX (password) ETX BCC  -> ACK, or the error message
        R1             SOH R 1 STX addr() ETX BCC      -> STX addr(value) ETX BCC
        B0             SOH B 0 ETX BCC                 -> silence, back to 300 Bd
        NAK            -> the last message again; a command with a bad BCC -> NAK
    error message      STX (ERROR) ETX BCC

The line, as a tariff device's UART sees it, served on a real pseudo-terminal:

* The meter sets the pty's termios itself (it shares one termios with the
  master's end): raw, 300 Bd, and asks for CS7 + PARENB. A pty has no
  character framing — the kernel keeps CS8 and no parity whatever is asked
  (``kept`` records it) — so a 7E1 character travels as one byte with bit 7
  clear, in both directions. A byte with bit 7 set is not a 7-bit character:
  the receiver counts a line error and drops the message under way.
* The meter transmits at its own speed (10 bit times a character) and, after
  the option select, switches the line to the agreed speed before it sends
  the answer; it returns to 300 Bd after the readout and after B0.
* Reaction time t_r: the meter answers ``reaction`` seconds after the end of
  the message it answers (the standard allows 200 ms to 1500 ms). Its
  half-duplex receiver is enabled only 200 ms after the last character it sent
  (the master's own t_r); characters arriving earlier are lost.
* After the identification it waits at most ``t_t`` (1.5 s) for the option
  select; in programming mode a session idle for 10 s is abandoned.
"""

from __future__ import annotations

import os
import select
import termios
import threading
import time
import tty

SOH, STX, ETX, EOT, ACK, NAK = 0x01, 0x02, 0x03, 0x04, 0x06, 0x15
CRLF = b"\r\n"
BAUD = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}
INITIAL_BAUD = 300
BITS_PER_CHAR = 10            # start + 7 data + even parity + stop
T_R_MASTER = 0.2              # the master must wait this long before it answers
T_T = 1.5                     # the meter's wait for the option select
SESSION_IDLE = 10.0
ADDRESS_CHARS = set(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz ")


def bcc(body: bytes) -> int:
    """Block check character: XOR of every byte after SOH/STX up to and
    including ETX/EOT."""
    x = 0
    for b in body:
        x ^= b
    return x


def block(text: str) -> bytes:
    body = text.encode("ascii") + bytes([ETX])
    return bytes([STX]) + body + bytes([bcc(body)])


def command(cmd: str, ctype: str, data: str | None = None) -> bytes:
    body = (cmd + ctype).encode("ascii")
    if data is not None:
        body += bytes([STX]) + data.encode("ascii")
    body += bytes([ETX])
    return bytes([SOH]) + body + bytes([bcc(body)])


class OracleMeter:
    """One mode C meter on its own pty; ``path`` is the master's device."""

    def __init__(self, datasets: list[tuple[str, str]], address: str = "",
                 manufacturer: str = "ORC", ident: str = "ORACLE-C1", baud_char: str = "5",
                 serial: str = "70010203", password: str = "4711",
                 reaction: float = 0.25, line_gaps: dict[int, float] | None = None,
                 clock=time.time) -> None:
        self.datasets = list(datasets)       # the readout, in order: (address, value)
        self.address = address               # besides the empty address of /?!
        self.manufacturer = manufacturer
        self.ident = ident
        self.baud_char = baud_char           # the speed we propose
        self.serial = serial
        self.password = password
        self.reaction = reaction
        self.line_gaps = line_gaps or {}     # {data line index: pause after it} (t_a < 1500 ms)
        self.clock = clock                   # 0.9.1 / 0.9.2 for R1
        self.path = ""
        self.kept: tuple[int, bool] | None = None   # (data bits, parity) the pty kept
        self.heard: list[bytes] = []         # every complete message, as received
        self.sent: list[tuple[int, bytes]] = []      # (baud, message)
        self.sign_ons = 0
        self.line_errors = 0                 # bytes no 7-bit line carries
        self.deaf_drops = 0                  # characters lost inside our turnaround
        self._master = self._slave = -1
        self._baud = INITIAL_BAUD
        self._state = "IDLE"
        self._deadline = 0.0
        self._buf = bytearray()
        self._deaf_until = 0.0
        self._last: bytes | None = None
        self._authed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the line --------------------------------------------------------------
    def start(self) -> OracleMeter:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._set_line(INITIAL_BAUD)
        self._thread = threading.Thread(target=self._serve, name="oracle-meter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def __enter__(self) -> OracleMeter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _set_line(self, baud: int) -> None:
        """Our UART at ``baud`` 7E1; TCSADRAIN: what we sent leaves first. A pty
        refuses the framing (glibc reads the termios back and reports EINVAL
        unless the speed changed too; the kernel keeps CS8 either way)."""
        attrs = termios.tcgetattr(self._master)
        attrs[4] = attrs[5] = getattr(termios, "B%d" % baud)
        frame = attrs[2] & ~(termios.CSIZE | termios.PARENB | termios.PARODD)
        try:
            attrs[2] = frame | termios.CS7 | termios.PARENB
            termios.tcsetattr(self._master, termios.TCSADRAIN, attrs)
        except termios.error:
            attrs[2] = frame | termios.CS8
            termios.tcsetattr(self._master, termios.TCSADRAIN, attrs)
        cflag = termios.tcgetattr(self._master)[2]
        self.kept = (7 if cflag & termios.CSIZE == termios.CS7 else 8,
                     bool(cflag & termios.PARENB))
        self._baud = baud

    def _send(self, msg: bytes, gaps: dict[int, float] | None = None) -> None:
        """Transmit at our speed, one character time each (plus any pauses)."""
        ct = BITS_PER_CHAR / float(self._baud)
        t = last = time.monotonic()
        for i, b in enumerate(msg):
            d = t - time.monotonic()
            if d > 0:
                time.sleep(d)
            last = time.monotonic()          # no master can have heard it earlier
            os.write(self._master, bytes([b]))
            t += ct + (gaps or {}).get(i, 0.0)
        self.sent.append((self._baud, msg))
        self._last = msg
        # Half duplex: deaf while sending (what arrived meanwhile is read later
        # with a later time stamp) and for the master's turnaround after.
        self._deaf_until = last + T_R_MASTER

    def _answer(self, msg: bytes, at: float, baud: int | None = None,
                gaps: dict[int, float] | None = None) -> None:
        d = at + self.reaction - time.monotonic()
        if d > 0:
            time.sleep(d)
        if baud is not None and baud != self._baud:
            self._set_line(baud)
        self._send(msg, gaps)

    # -- the receiver ----------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self._master], [], [], 0.05)
            now = time.monotonic()
            if self._state != "IDLE" and now > self._deadline:
                self._idle()
            if not r:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                continue
            for b in data:
                if now < self._deaf_until:
                    self.deaf_drops += 1
                    continue
                if b > 0x7F:
                    self.line_errors += 1
                    self._buf.clear()
                    continue
                self._buf.append(b)
                msg = self._complete()
                if msg is not None:
                    self.heard.append(msg)
                    self._handle(msg, now)

    def _complete(self) -> bytes | None:
        """A whole message at the head of the buffer, or None (more to come).
        Bytes that cannot start a message in our state are dropped."""
        buf = self._buf
        while buf:
            first = buf[0]
            if first == ord("/") or (first == ACK and self._state == "IDENTIFIED"):
                if buf.endswith(CRLF):
                    return self._take(len(buf))
                if len(buf) > 40:
                    buf.clear()
                return None
            if first in (SOH, STX) and self._state == "PROGRAMMING":
                if len(buf) >= 2 and buf[-2] in (ETX, EOT):
                    return self._take(len(buf))
                return None
            if first in (ACK, NAK) and self._state == "PROGRAMMING":
                return self._take(1)
            del buf[0]
        return None

    def _take(self, n: int) -> bytes:
        msg = bytes(self._buf[:n])
        del self._buf[:n]
        return msg

    def _idle(self) -> None:
        if self._baud != INITIAL_BAUD:
            self._set_line(INITIAL_BAUD)
        self._state = "IDLE"
        self._authed = False
        self._buf.clear()

    # -- the protocol ----------------------------------------------------------
    def _handle(self, msg: bytes, at: float) -> None:
        if msg[:1] == b"/":
            self._request(msg, at)
        elif self._state == "IDENTIFIED":
            self._option(msg, at)
        elif self._state == "PROGRAMMING":
            self._deadline = time.monotonic() + SESSION_IDLE
            self._programming(msg, at)

    def _request(self, msg: bytes, at: float) -> None:
        self._idle()
        if not (msg.startswith(b"/?") and msg.endswith(b"!\r\n")):
            return
        addr = msg[2:-3]
        if len(addr) > 32 or not set(addr) <= ADDRESS_CHARS:
            return
        if addr and addr.decode() != self.address:
            return
        self.sign_ons += 1
        self._answer(("/%s%s%s\r\n" % (self.manufacturer, self.baud_char, self.ident)).encode(),
                     at)
        self._state = "IDENTIFIED"
        self._deadline = time.monotonic() + T_T

    def _option(self, msg: bytes, at: float) -> None:
        ok = (len(msg) == 6 and msg[0] == ACK and msg[1:2] == b"0"
              and chr(msg[2]) in BAUD and msg[2] <= ord(self.baud_char)
              and msg[3:4] in (b"0", b"1"))
        if not ok:
            self._idle()
            return
        baud = BAUD[chr(msg[2])]
        if msg[3:4] == b"0":
            lines = ["%s(%s)\r\n" % ds for ds in self.datasets] + ["!\r\n"]
            text = "".join(lines)
            gaps: dict[int, float] = {}
            pos = 0                                  # index of the line's LF, STX first
            for i, ln in enumerate(lines):
                pos += len(ln)
                if i in self.line_gaps:
                    gaps[pos] = self.line_gaps[i]
            self._answer(block(text), at, baud, gaps)
            self._idle()
            return
        self._answer(command("P", "0", "(%s)" % self.serial), at, baud)
        self._state = "PROGRAMMING"
        self._deadline = time.monotonic() + SESSION_IDLE

    def _programming(self, msg: bytes, at: float) -> None:
        if msg[0] == NAK:
            if self._last is not None:
                self._answer(self._last, at)
            return
        if msg[0] != SOH or len(msg) < 5 or bcc(msg[1:-1]) != msg[-1]:
            self._answer(bytes([NAK]), at)
            return
        name = msg[1:3].decode("ascii", "replace")
        data = msg[4:-2].decode("ascii", "replace") if msg[3] == STX else None
        if name == "B0":
            self._idle()
        elif name == "P1":
            self._authed = data == "(%s)" % self.password
            self._answer(bytes([ACK]) if self._authed else block("(ERROR)"), at)
        elif name == "R1" and self._authed and data and data.endswith("()"):
            self._answer(block(self._read(data[:-2])), at)
        else:
            self._answer(block("(ERROR)"), at)

    def _read(self, address: str) -> str:
        t = time.gmtime(self.clock())
        values = dict(self.datasets)
        values["0.9.1"] = "%02d:%02d:%02d" % (t.tm_hour, t.tm_min, t.tm_sec)
        values["0.9.2"] = "%02d-%02d-%02d" % (t.tm_year % 100, t.tm_mon, t.tm_mday)
        if address not in values:
            return "(ERROR)"
        return "%s(%s)" % (address, values[address])
