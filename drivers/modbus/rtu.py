"""Modbus RTU framing, sans-IO and portable (CPython and MicroPython).

Owns: CRC-16/Modbus, the byte layout of RTU frames (requests a server hears,
responses a client hears, exception responses), builders for the requests
and responses the meter path uses, and a hunting framer: bytes in, frames
out ("consume and return frame"); it skips leading garbage, re-hunts after a
bad CRC and caps its buffer. Other stations' frames on a multi-drop bus are
normal frames (the caller filters by address), never errors.

Must not know: serial ports, timing (the 3.5-character gap is the IO layer's
business: it may call ``Framer.reset()`` when the line was idle), register
maps or OBIS.

Frame layout (Modbus over serial line V1.02 §2.5.1)::

    +---------+----------+-----------------+-----------+
    | address | function |      data       | CRC lo,hi |
    |  1 byte |  1 byte  |  0..252 bytes   |  2 bytes  |
    +---------+----------+-----------------+-----------+
"""

import struct

from drivers import RemoteProtocolError

REQUEST = "request"      # what a server hears (master -> meter)
RESPONSE = "response"    # what a client hears (meter -> master)

MAX_FRAME = 256          # Modbus over serial line §2.5.1
MAX_BUFFER = 2 * MAX_FRAME

READ_COILS = 0x01
READ_DISCRETE = 0x02
READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_COIL = 0x05
WRITE_SINGLE = 0x06
WRITE_MULTIPLE = 0x10

FUNCTIONS = {
    0x01: "read_coils", 0x02: "read_discrete_inputs", 0x03: "read_holding_registers",
    0x04: "read_input_registers", 0x05: "write_single_coil", 0x06: "write_single_register",
    0x07: "read_exception_status", 0x08: "diagnostics", 0x0F: "write_multiple_coils",
    0x10: "write_multiple_registers", 0x11: "report_server_id",
}
# Modbus Application Protocol V1.1b3 §7 "MODBUS Exception Codes".
EXCEPTIONS = {
    1: "illegal_function", 2: "illegal_data_address", 3: "illegal_data_value",
    4: "server_device_failure", 5: "acknowledge", 6: "server_device_busy",
    8: "memory_parity_error", 10: "gateway_path_unavailable",
    11: "gateway_target_failed_to_respond",
}


class RtuError(RemoteProtocolError):
    """A byte string that is not a valid RTU frame (fields: reason, raw)."""


def _crc_table() -> "list[int]":
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/Modbus (poly 0xA001 reflected, init 0xFFFF) as an int; it is
    sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    """``address + function + data`` -> the frame with its CRC appended."""
    return bytes(body) + crc16(body).to_bytes(2, "little")


def frame_length(buf: bytes, role: str, i: int = 0) -> int:
    """Length of the frame starting at ``buf[i]``: an int, 0 if more bytes are
    needed to tell, or -1 if ``buf[i:]`` cannot start a frame of this ``role``.
    Application Protocol §6 PDU sizes plus address and CRC."""
    avail = len(buf) - i
    if avail < 2:
        return 0
    if buf[i] > 247:
        return -1
    fc = buf[i + 1]
    if role == RESPONSE:
        if fc & 0x80:
            return 5 if (fc & 0x7F) in FUNCTIONS else -1
        if fc in (0x01, 0x02, 0x03, 0x04, 0x11):
            if avail < 3:
                return 0
            n = buf[i + 2]
            if n == 0 or (fc in (0x03, 0x04) and n & 1):
                return -1
            return 5 + n
        if fc in (0x05, 0x06, 0x08, 0x0F, 0x10):
            return 8
        if fc == 0x07:
            return 5
        return -1
    if fc in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x08):
        return 8
    if fc in (0x0F, 0x10):
        if avail < 7:
            return 0
        return 9 + buf[i + 6]
    if fc in (0x07, 0x11):
        return 4
    return -1


class Frame:
    """One RTU frame: ``address``, ``function`` (bit 7 set for an exception
    response) and ``data`` (the PDU after the function code, before the CRC)."""

    __slots__ = ("address", "function", "data", "role")

    def __init__(self, address: int, function: int, data: bytes = b"",
                 role: str = RESPONSE) -> None:
        self.address = address
        self.function = function
        self.data = bytes(data)
        self.role = role

    @classmethod
    def from_bytes(cls, raw: bytes, role: str = RESPONSE) -> "Frame":
        """Exactly one whole frame, CRC checked; RtuError otherwise."""
        raw = bytes(raw)
        n = frame_length(raw, role)
        if n < 0:
            raise RtuError("not a Modbus RTU %s" % role, reason="header", raw=raw.hex())
        if n == 0 or len(raw) < n:
            raise RtuError("truncated Modbus RTU %s" % role, reason="short", raw=raw.hex())
        if len(raw) > n:
            raise RtuError("%d bytes after the frame" % (len(raw) - n), reason="trailing",
                           raw=raw.hex())
        if crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
            raise RtuError("bad CRC", reason="crc", raw=raw.hex())
        return cls(raw[0], raw[1], raw[2:-2], role)

    def to_bytes(self) -> bytes:
        return with_crc(bytes([self.address, self.function]) + self.data)

    @property
    def is_exception(self) -> bool:
        return self.role == RESPONSE and bool(self.function & 0x80)

    @property
    def exception_code(self) -> "int | None":
        return self.data[0] if self.is_exception and self.data else None

    def registers(self) -> "list[int]":
        """Register words of a read response (0x03/0x04)."""
        if self.role != RESPONSE or self.function not in (READ_HOLDING, READ_INPUT):
            raise RtuError("not a register read response", reason="function",
                           raw=self.to_bytes().hex())
        body = self.data[1:]
        return list(struct.unpack(">%dH" % (len(body) // 2), body))

    def request_fields(self) -> "tuple[int, int, list[int]]":
        """(start, count or value, words) of a register request."""
        if self.role != REQUEST or len(self.data) < 4:
            raise RtuError("not a register request", reason="function",
                           raw=self.to_bytes().hex())
        start, second = struct.unpack(">HH", self.data[:4])
        words = []
        if self.function == WRITE_MULTIPLE:
            body = self.data[5:]
            words = list(struct.unpack(">%dH" % (len(body) // 2), body))
        return start, second, words

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Frame) and self.address == other.address
                and self.function == other.function and self.data == other.data)

    def __repr__(self) -> str:
        return "Frame(%s %d fc=0x%02x %s)" % (self.role, self.address, self.function,
                                              self.data.hex())


# -- builders (Application Protocol §6.3, §6.4, §6.6, §6.12, §7) ---------------
def read_request(address: int, function: int, start: int, count: int) -> Frame:
    return Frame(address, function, struct.pack(">HH", start, count), REQUEST)


def write_single_request(address: int, register: int, value: int) -> Frame:
    return Frame(address, WRITE_SINGLE, struct.pack(">HH", register, value), REQUEST)


def write_multiple_request(address: int, start: int, words: "list[int]") -> Frame:
    data = struct.pack(">HHB", start, len(words), 2 * len(words))
    data += struct.pack(">%dH" % len(words), *words)
    return Frame(address, WRITE_MULTIPLE, data, REQUEST)


def read_response(address: int, function: int, words: "list[int]") -> Frame:
    data = bytes([2 * len(words)]) + struct.pack(">%dH" % len(words), *words)
    return Frame(address, function, data, RESPONSE)


def write_response(address: int, function: int, start: int, second: int) -> Frame:
    return Frame(address, function, struct.pack(">HH", start, second), RESPONSE)


def exception_response(address: int, function: int, code: int) -> Frame:
    return Frame(address, (function | 0x80) & 0xFF, bytes([code]), RESPONSE)


# -- the hunting framer -------------------------------------------------------
class Framer:
    """Bytes in (``receive_data``), frames out (``next_frame`` -> Frame, or
    None for "need more data"). ``skipped`` counts bytes dropped as garbage,
    ``crc_errors`` complete candidates whose CRC failed; ``last_error`` is the
    latest RtuError seen (kept for the flight recorder, never raised)."""

    def __init__(self, role: str = RESPONSE) -> None:
        self.role = role
        self.buf = b""
        self.skipped = 0
        self.crc_errors = 0
        self.last_error: "RtuError | None" = None

    def receive_data(self, data: bytes) -> None:
        self.buf += bytes(data)
        if len(self.buf) > MAX_BUFFER:
            drop = len(self.buf) - MAX_BUFFER
            self.buf = self.buf[drop:]
            self.skipped += drop

    def reset(self) -> None:
        """Line idle (3.5 character times): a half-received frame is noise."""
        self.skipped += len(self.buf)
        self.buf = b""

    def next_frame(self) -> "Frame | None":
        frame, used = consume(self.buf, self.role, self)
        if used:
            self.buf = self.buf[used:]
        return frame

    def frames(self) -> "list[Frame]":
        out = []  # type: list[Frame]
        while True:
            f = self.next_frame()
            if f is None:
                return out
            out.append(f)


def consume(buf: bytes, role: str,
            stats: "Framer | None" = None) -> "tuple[Frame | None, int]":
    """-> (frame or None, bytes used). Hunts for the earliest complete frame
    with a good CRC; drops only the prefix that can no longer start one."""
    drop = -1            # last offset known not to start a frame
    counted = False      # one bad-CRC count per call, not one per hunted offset
    for i in range(len(buf)):
        n = frame_length(buf, role, i)
        if n < 0:
            if drop == i - 1:
                drop = i
            continue
        if n == 0 or i + n > len(buf):
            continue     # might still complete
        end = i + n
        if crc16(buf[i:end - 2]) == int.from_bytes(buf[end - 2:end], "little"):
            if stats is not None and i:
                stats.skipped += i
            return Frame(buf[i], buf[i + 1], buf[i + 2:end - 2], role), end
        if drop == i - 1:
            drop = i
            if stats is not None and not counted:
                counted = True
                stats.crc_errors += 1
                stats.last_error = RtuError("bad CRC", reason="crc", raw=buf[i:end].hex())
    if stats is not None and drop >= 0:
        stats.skipped += drop + 1
    return None, drop + 1
