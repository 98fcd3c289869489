"""IEC 62056-21 messages and the framer that finds them in a byte stream.

Portable (CPython and MicroPython): plain classes, bytes in, bytes out.
Owns the byte layout of every message of the protocol (§6.3 of IEC
62056-21:2002) as small value objects with symmetric ``from_bytes()`` /
``to_bytes()``, the block check character, and ``Framer``: a hunting parser
that skips line noise, caps its buffer and turns any byte string into
messages or ``IecProtocolError``. Must not know states, timing or IO.

    Request          / ? address ! CR LF                       §6.3.1
    Identification   / X X X Z ident CR LF                     §6.3.2
    OptionSelect     ACK V Z Y CR LF                           §6.3.3
    Block            STX data ETX|EOT BCC                      §6.3.4, §6.3.5
    Command          SOH C D [STX data] ETX|EOT BCC            §6.3.6
    Ack / Nak        ACK / NAK                                 §6.3.7, §6.3.8
"""

from drivers.iec62056_21.errors import BccError, IecProtocolError

SOH = 0x01
STX = 0x02
ETX = 0x03
EOT = 0x04
ACK = 0x06
NAK = 0x15
CRLF = b"\r\n"

# Baud rate characters (§6.3.2 item 8 and 9): mode C/E digits, mode B letters.
BAUD_C = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}
BAUD_B = {"A": 600, "B": 1200, "C": 2400, "D": 4800, "E": 9600, "F": 19200}
INITIAL_BAUD = 300          # §6.2: every sign-on starts at 300 Bd, 7E1
MAX_ADDRESS = 32            # §6.3.1: device address, up to 32 characters
MAX_LINE = 128              # longest request/identification line we accept


def bcc(data):
    """XOR of ``data``: pass the bytes after SOH/STX up to and including ETX/EOT (§6.3.14)."""
    x = 0
    for b in data:
        x ^= b
    return x


def baud_char_for(baud):
    """The mode C option-select character for ``baud`` (300 → '0' … 19200 → '6')."""
    for ch, rate in BAUD_C.items():
        if rate == baud:
            return ch
    raise ValueError("no IEC 62056-21 baud character for %r" % (baud,))


def _text(frame):
    """7-bit ASCII text of a frame; anything else is a remote protocol error."""
    for b in frame:
        if b > 0x7F:
            raise IecProtocolError("8-bit byte in a 7-bit IEC 62056-21 frame", raw=frame.hex())
    return frame.decode()


def _printable(s, what, frame, extra=""):
    for ch in s:
        if (ch < " " or ch > "~") and ch not in extra:
            raise IecProtocolError("control character in %s" % what, raw=frame.hex())


class Request:
    """``/?<address>!`` CR LF; the address may be empty (§6.3.1)."""

    kind = "request"
    __slots__ = ("address",)

    def __init__(self, address=""):
        self.address = str(address)

    @classmethod
    def from_bytes(cls, frame):
        s = _text(frame)
        if not (s.startswith("/?") and s.endswith("!\r\n")):
            raise IecProtocolError("not a request message", raw=frame.hex())
        addr = s[2:-3]
        if len(addr) > MAX_ADDRESS or "!" in addr or "/" in addr:
            raise IecProtocolError("bad device address in request", raw=frame.hex())
        _printable(addr, "device address", frame)
        return cls(addr)

    def to_bytes(self):
        return b"/?" + self.address.encode() + b"!\r\n"

    def __eq__(self, other):
        return isinstance(other, Request) and self.address == other.address

    def __repr__(self):
        return "Request(%r)" % self.address


class Identification:
    """``/XXXZ<ident>`` CR LF (§6.3.2). ``ident`` keeps any ``\\W`` enhanced
    identification pairs (e.g. ``\\2`` for mode E) so it re-encodes byte for byte."""

    kind = "identification"
    __slots__ = ("manufacturer", "baud_char", "ident")

    def __init__(self, manufacturer, baud_char, ident):
        self.manufacturer = manufacturer
        self.baud_char = baud_char
        self.ident = ident

    @classmethod
    def from_bytes(cls, frame):
        s = _text(frame)
        if len(s) < 7 or s[0] != "/" or not s.endswith("\r\n") or s[1] == "?":
            raise IecProtocolError("not an identification message", raw=frame.hex())
        body = s[1:-2]
        _printable(body, "identification", frame)
        if "/" in body or "!" in body:
            raise IecProtocolError("'/' or '!' inside identification", raw=frame.hex())
        return cls(body[0:3], body[3], body[4:])

    def to_bytes(self):
        return ("/%s%s%s\r\n" % (self.manufacturer, self.baud_char, self.ident)).encode()

    @property
    def enhanced(self):
        """The enhanced identification characters (``\\2`` → ['2'])."""
        out = []
        s = self.ident
        while len(s) >= 2 and s[0] == "\\":
            out.append(s[1])
            s = s[2:]
        return out

    @property
    def model(self):
        s = self.ident
        while len(s) >= 2 and s[0] == "\\":
            s = s[2:]
        return s

    @property
    def mode(self):
        """'C' (digit: option select), 'B' (letter A–I: switch without ACK), 'A' (else)."""
        ch = self.baud_char
        if "0" <= ch <= "9":
            return "C"
        if "A" <= ch <= "I":
            return "B"
        return "A"

    @property
    def baud(self):
        """The speed the meter proposes (300 in mode A or for unknown characters)."""
        return BAUD_C.get(self.baud_char) or BAUD_B.get(self.baud_char) or INITIAL_BAUD

    def __eq__(self, other):
        return isinstance(other, Identification) and self.to_bytes() == other.to_bytes()

    def __repr__(self):
        return "Identification(%r, %r, %r)" % (self.manufacturer, self.baud_char, self.ident)


class OptionSelect:
    """``ACK V Z Y`` CR LF (§6.3.3): protocol V ('0' normal), baud Z, mode Y
    ('0' data readout, '1' programming, '6'–'9' manufacturer specific)."""

    kind = "option"
    __slots__ = ("protocol", "baud_char", "mode_char")

    def __init__(self, baud_char, mode_char="0", protocol="0"):
        self.protocol = protocol
        self.baud_char = baud_char
        self.mode_char = mode_char

    @classmethod
    def from_bytes(cls, frame):
        s = _text(frame)
        if len(s) != 6 or frame[0] != ACK or not s.endswith("\r\n"):
            raise IecProtocolError("not an option select message", raw=frame.hex())
        _printable(s[1:4], "option select", frame)
        return cls(s[2], s[3], s[1])

    def to_bytes(self):
        return bytes([ACK]) + (self.protocol + self.baud_char + self.mode_char).encode() + CRLF

    @property
    def programming(self):
        return self.mode_char == "1"

    @property
    def baud(self):
        return BAUD_C.get(self.baud_char, INITIAL_BAUD)

    def __eq__(self, other):
        return isinstance(other, OptionSelect) and self.to_bytes() == other.to_bytes()

    def __repr__(self):
        return "OptionSelect(%r, %r, %r)" % (self.baud_char, self.mode_char, self.protocol)


class Block:
    """``STX data ETX BCC`` (or EOT for a partial block): the data message of a
    readout, an answer to R1/R5, or an error message ``(ERROR)`` (§6.3.4–6.3.5)."""

    kind = "block"
    __slots__ = ("data", "partial")

    def __init__(self, data, partial=False):
        self.data = data if isinstance(data, str) else bytes(data).decode()
        self.partial = partial

    @classmethod
    def from_bytes(cls, frame):
        if len(frame) < 3 or frame[0] != STX or frame[-2] not in (ETX, EOT):
            raise IecProtocolError("not a data block", raw=frame.hex())
        if bcc(frame[1:-1]) != frame[-1]:
            raise BccError("block check character mismatch", raw=frame.hex())
        s = _text(frame[1:-2])
        _printable(s, "data block", frame, "\r\n")
        return cls(s, frame[-2] == EOT)

    def to_bytes(self):
        body = self.data.encode() + bytes([EOT if self.partial else ETX])
        return bytes([STX]) + body + bytes([bcc(body)])

    @property
    def error(self):
        """The meter's error text when the block is an error message ``(xxx)``."""
        d = self.data
        if d.startswith("(") and d.endswith(")") and d.count("(") == 1 and "ER" in d.upper():
            return d[1:-1]
        return None

    def __eq__(self, other):
        return isinstance(other, Block) and (self.data, self.partial) == (other.data, other.partial)

    def __repr__(self):
        return "Block(%r%s)" % (self.data[:60], ", partial" if self.partial else "")


COMMANDS = "PWRBE"   # password, write, read, break, execute (§6.3.6 item 17)


class Command:
    """``SOH C D STX data ETX BCC``; break ``SOH B 0 ETX BCC`` carries no data (§6.3.6)."""

    kind = "command"
    __slots__ = ("command", "ctype", "data", "partial")

    def __init__(self, command, ctype, data=None, partial=False):
        self.command = command
        self.ctype = str(ctype)
        self.data = data
        self.partial = partial

    @classmethod
    def from_bytes(cls, frame):
        if len(frame) < 5 or frame[0] != SOH or frame[-2] not in (ETX, EOT):
            raise IecProtocolError("not a command message", raw=frame.hex())
        if bcc(frame[1:-1]) != frame[-1]:
            raise BccError("block check character mismatch", raw=frame.hex())
        s = _text(frame[1:-2])
        cmd, ctype, rest = s[0], s[1], s[2:]
        if cmd not in COMMANDS or not ("0" <= ctype <= "9"):
            raise IecProtocolError("unknown command %r" % s[:2], raw=frame.hex())
        data = None
        if rest:
            if rest[0] != "\x02":
                raise IecProtocolError("command data must start with STX", raw=frame.hex())
            data = rest[1:]
            _printable(data, "command data", frame, "\r\n")
        return cls(cmd, ctype, data, frame[-2] == EOT)

    def to_bytes(self):
        body = (self.command + self.ctype).encode()
        if self.data is not None:
            body += bytes([STX]) + self.data.encode()
        body += bytes([EOT if self.partial else ETX])
        return bytes([SOH]) + body + bytes([bcc(body)])

    @property
    def name(self):
        return self.command + self.ctype

    def __eq__(self, other):
        return isinstance(other, Command) and self.to_bytes() == other.to_bytes()

    def __repr__(self):
        return "Command(%s, %r)" % (self.name, self.data)


class Ack:
    kind = "ack"

    def to_bytes(self):
        return bytes([ACK])

    def __eq__(self, other):
        return isinstance(other, Ack)

    def __repr__(self):
        return "Ack()"


class Nak:
    kind = "nak"

    def to_bytes(self):
        return bytes([NAK])

    def __eq__(self, other):
        return isinstance(other, Nak)

    def __repr__(self):
        return "Nak()"


def Break():
    """The break command ``SOH B 0 ETX BCC`` (§6.3.6): ends any session."""
    return Command("B", "0")
