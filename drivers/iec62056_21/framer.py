"""The IEC 62056-21 framer: finds messages in whatever a serial line delivers.

Portable (CPython and MicroPython). Owns hunting (skip bytes that cannot
start a message and count them), completeness (a line ends at CR LF, a block
one byte after ETX/EOT), the buffer cap, and turning every frame into a
``frames`` message or ``IecProtocolError``. A bad frame is consumed before
the error is raised, so the next call re-hunts from the byte after it. Must
not know states, timing or IO.

``role`` says whose messages we parse: "client" parses what a meter sends
(a lone ACK is an acknowledgement), "meter" parses what a master sends (ACK
followed by a digit starts an option select, so a lone ACK at the end of the
buffer waits for one more byte while ``ack_may_be_option`` is true).
"""

from drivers.iec62056_21.errors import IecProtocolError
from drivers.iec62056_21.frames import (
    ACK,
    EOT,
    ETX,
    MAX_LINE,
    NAK,
    SOH,
    STX,
    Ack,
    Block,
    Command,
    Identification,
    Nak,
    OptionSelect,
    Request,
)

SLASH = 0x2F
QUESTION = 0x3F
MAX_FRAME = 65536


class Framer:
    def __init__(self, role="client", max_frame=MAX_FRAME):
        if role not in ("client", "meter"):
            raise ValueError("role must be 'client' or 'meter'")
        self.role = role
        self.max_frame = max_frame
        self.ack_may_be_option = True
        self.discarded = 0          # bytes skipped while hunting (line noise)
        self.noise = b""            # the last skipped bytes, for the flight recorder
        self._buf = b""
        self._scan = 1              # where the search for the frame's end resumes

    def feed(self, data):
        self._buf += bytes(data)

    @property
    def pending(self):
        return len(self._buf)

    def clear(self):
        self._buf = b""
        self._scan = 1

    def _take(self, n):
        frame = self._buf[:n]
        self._buf = self._buf[n:]
        self._scan = 1
        return frame

    def _skip(self, n):
        junk = self._take(n)
        self.discarded += n
        self.noise = (self.noise + junk)[-64:]

    def next_frame(self):
        """The next complete message, or None when more bytes are needed."""
        while self._buf:
            b = self._buf[0]
            if b == SLASH:
                return self._line()
            if b == SOH or b == STX:
                return self._block(b)
            if b == ACK:
                return self._ack()
            if b == NAK:
                self._take(1)
                return Nak()
            # Not a message start: line noise, an idle line's zeros, a
            # mismatched baud rate. Skip up to the next plausible start.
            i = 1
            n = len(self._buf)
            while i < n and self._buf[i] not in (SLASH, SOH, STX, ACK, NAK):
                i += 1
            self._skip(i)
        return None

    def _line(self):
        buf = self._buf
        n = len(buf)
        i = self._scan
        while i < n:
            c = buf[i]
            if c == 0x0A and buf[i - 1] == 0x0D:
                break
            if i > MAX_LINE:
                frame = self._take(i)
                raise IecProtocolError("no CR LF within %d bytes" % MAX_LINE, raw=frame.hex())
            if (c < 0x20 and c != 0x0D and c != 0x0A) or c == SLASH:
                # A control character or a second '/' (never inside a request or
                # identification): noise opened this line; re-hunt from here.
                frame = self._take(i)
                raise IecProtocolError("unterminated line", raw=frame.hex())
            i += 1
        if i >= n:
            self._scan = n
            return None
        frame = self._take(i + 1)
        if frame[1] == QUESTION:
            return Request.from_bytes(frame)
        return Identification.from_bytes(frame)

    def _block(self, start):
        buf = self._buf
        n = len(buf)
        i = self._scan
        while i < n:
            c = buf[i]
            if c == ETX or c == EOT:
                break
            if (c < 0x20 and c not in (0x0D, 0x0A) and not (c == STX and start == SOH and i == 3)
                    or (c == SLASH and self.role == "meter")):
                # ('/' is not allowed in data sets; a master's block holding one
                # is noise that swallowed the start of a request.)
                # A control character inside a block: the block is broken;
                # drop what came before it and re-hunt from it.
                frame = self._take(i)
                raise IecProtocolError("unterminated block", raw=frame.hex())
            i += 1
        if i >= n - 1:            # no end yet, or the BCC has not arrived
            self._scan = i if i < n else n
            if n > self.max_frame:
                frame = self._take(n)
                raise IecProtocolError("block longer than %d bytes" % self.max_frame,
                                       raw=frame[:256].hex())
            return None
        frame = self._take(i + 2)
        if start == STX:
            return Block.from_bytes(frame)
        return Command.from_bytes(frame)

    def _ack(self):
        buf = self._buf
        n = len(buf)
        if n == 1:
            if self.role == "meter" and self.ack_may_be_option:
                return None
            self._take(1)
            return Ack()
        if not (0x30 <= buf[1] <= 0x39):
            self._take(1)
            return Ack()
        if n < 6:
            if self.role == "client":      # a meter's ACK never carries digits
                self._take(1)
                return Ack()
            return None
        if buf[4:6] != b"\r\n":
            self._take(1)
            return Ack()
        return OptionSelect.from_bytes(self._take(6))
