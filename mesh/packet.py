"""Mesh frames on the air: the compact clear header, the sealed body, and
the message header a first fragment carries.

Owns the byte layouts (drawn in docs/mesh.md) and their parsing. Must not
know keys (``mesh.secure`` seals the body and checks the tag), routes or
queues. ``Header.from_bytes`` turns any bytes into a header or raises
``MeshProtocolError`` (with ``reason``); nothing else escapes. Portable.

Common part (6 bytes; 8 with the L flag)::

    byte 0      T T T L H H H H   type (3 bits), L = epoch follows, hop limit (4 bits)
    bytes 1-3   tx (12 bits) | rx (12 bits)         transmitter, receiver (0xFFF = all)
    bytes 4-5   counter (16 bits)                   low half of the sender's frame counter
    bytes 6-7   epoch (16 bits), only when L = 1    high half (the persisted boot epoch)

DATA (up), DOWN, PING, PONG add 6 bytes, 12 in all, and are always short:
L on a data-like frame is refused (``reason "long"``) and never encoded, so
a LoRa data frame's header is 12 bytes whatever happens (the epoch travels
in ACK and ADVERT only, docs/mesh.md §3.2)::

    bytes 0-2   origin (12 bits) | dest (12 bits)
    byte  3     message id (per origin, wraps at 256)
    bytes 4-5   P P Z D 0 0 I I I I I I I I I I
                P priority 0..3, Z = last fragment, D = downward (1 for DOWN,
                0 for DATA, either for PING/PONG), 0 reserved, I index 0..1023

ACK adds 3 bytes (9 in all, 11 with L; sent with L): acked counter (16 bits), status
(0 ok, 1 busy: not taken, keep it and retry later, 2 refused: cannot be
forwarded by me, try another neighbour). ADVERT adds nothing; rx = 0xFFF
(sent with L).
The body is the CCM ciphertext of the payload followed by a 4-byte tag.
"""

import hashlib
import struct

from mesh import MeshProtocolError

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[no-untyped-def]
        return x

DATA = const(0)
DOWN = const(1)
ACK = const(2)
ADVERT = const(3)
PING = const(4)
PONG = const(5)
TYPE_NAMES = ("data", "down", "ack", "advert", "ping", "pong")
DATA_LIKE = (DATA, DOWN, PING, PONG)

BROADCAST = const(0xFFF)
HOP_LIMIT = const(15)
TAG_LEN = const(4)
MAX_INDEX = const(1023)
ACK_OK = const(0)
ACK_BUSY = const(1)
ACK_REFUSED = const(2)

COMMON_LEN = const(6)
DATA_EXTRA = const(6)
ACK_EXTRA = const(3)


def _err(reason, **fields):
    return MeshProtocolError("bad mesh frame: " + reason, reason=reason, **fields)


class Header:
    """The clear header of one frame (fields as in the module docstring).
    ``epoch`` is None in the short form (no L flag); a data-like header
    must have None (``to_bytes`` raises ``MeshProtocolError`` "long")."""

    __slots__ = ("ptype", "hops", "tx", "rx", "counter", "epoch", "origin", "dest",
                 "msgid", "prio", "last", "down", "index", "acked", "status")

    def __init__(self, ptype, tx, rx, counter=0, epoch=None, hops=0, origin=0, dest=0,
                 msgid=0, prio=0, last=True, down=False, index=0, acked=0, status=0):
        self.ptype = ptype
        self.hops = hops
        self.tx = tx
        self.rx = rx
        self.counter = counter
        self.epoch = epoch
        self.origin = origin
        self.dest = dest
        self.msgid = msgid
        self.prio = prio
        self.last = last
        self.down = down
        self.index = index
        self.acked = acked
        self.status = status

    def size(self):
        n = COMMON_LEN + (2 if self.epoch is not None else 0)
        if self.ptype in DATA_LIKE:
            return n + DATA_EXTRA
        if self.ptype == ACK:
            return n + ACK_EXTRA
        return n

    def to_bytes(self):
        long = self.epoch is not None
        if long and self.ptype in DATA_LIKE:
            raise _err("long", type=self.ptype)
        out = bytearray(self.size())
        out[0] = (self.ptype << 5) | (0x10 if long else 0) | (self.hops & 15)
        a = (self.tx << 12) | self.rx
        out[1] = a >> 16
        out[2] = (a >> 8) & 0xFF
        out[3] = a & 0xFF
        out[4] = self.counter >> 8
        out[5] = self.counter & 0xFF
        i = 6
        if long:
            out[6] = self.epoch >> 8
            out[7] = self.epoch & 0xFF
            i = 8
        if self.ptype in DATA_LIKE:
            a = (self.origin << 12) | self.dest
            out[i] = a >> 16
            out[i + 1] = (a >> 8) & 0xFF
            out[i + 2] = a & 0xFF
            out[i + 3] = self.msgid
            w = ((self.prio << 14) | (0x2000 if self.last else 0)
                 | (0x1000 if self.down else 0) | self.index)
            out[i + 4] = w >> 8
            out[i + 5] = w & 0xFF
        elif self.ptype == ACK:
            struct.pack_into(">HB", out, i, self.acked, self.status)
        return bytes(out)

    @classmethod
    def from_bytes(cls, frame):
        """(Header, header length) of ``frame``; MeshProtocolError otherwise.
        Checks the layout and the body's minimum length, not the tag."""
        n = len(frame)
        if n < COMMON_LEN:
            raise _err("truncated", size=n)
        b0 = frame[0]
        ptype = b0 >> 5
        if ptype > PONG:
            raise _err("type", type=ptype)
        a = (frame[1] << 16) | (frame[2] << 8) | frame[3]
        h = cls(ptype, a >> 12, a & 0xFFF, (frame[4] << 8) | frame[5], None, b0 & 15)
        i = COMMON_LEN
        if b0 & 0x10:
            if ptype in DATA_LIKE:
                raise _err("long", type=ptype)
            if n < 8:
                raise _err("truncated", size=n)
            h.epoch = (frame[6] << 8) | frame[7]
            i = 8
        if ptype in DATA_LIKE:
            if n < i + DATA_EXTRA:
                raise _err("truncated", size=n)
            a = (frame[i] << 16) | (frame[i + 1] << 8) | frame[i + 2]
            h.origin = a >> 12
            h.dest = a & 0xFFF
            h.msgid = frame[i + 3]
            w = (frame[i + 4] << 8) | frame[i + 5]
            h.prio = w >> 14
            h.last = bool(w & 0x2000)
            h.down = bool(w & 0x1000)
            h.index = w & 0x3FF
            if w & 0x0C00:
                raise _err("reserved", bits=w & 0x0C00)
            i += DATA_EXTRA
        elif ptype == ACK:
            if n < i + ACK_EXTRA:
                raise _err("truncated", size=n)
            h.acked = (frame[i] << 8) | frame[i + 1]
            h.status = frame[i + 2]
            i += ACK_EXTRA
        h._check(n - i)
        return h, i

    def _check(self, body):
        t = self.ptype
        if self.tx == 0 or self.tx == BROADCAST or self.rx == 0:
            raise _err("address", tx=self.tx, rx=self.rx)
        if (t == ADVERT) != (self.rx == BROADCAST):
            raise _err("address", tx=self.tx, rx=self.rx)
        if t in DATA_LIKE:
            if self.origin in (0, BROADCAST) or self.dest in (0, BROADCAST):
                raise _err("address", origin=self.origin, dest=self.dest)
            if (t == DATA and self.down) or (t == DOWN and not self.down):
                raise _err("direction", type=t)
            if body < TAG_LEN + 1:
                raise _err("truncated", body=body)
        elif t == ACK:
            if self.status > ACK_REFUSED:
                raise _err("status", status=self.status)
            if body != TAG_LEN:
                raise _err("length", body=body)
        elif body < TAG_LEN:
            raise _err("truncated", body=body)

    def __eq__(self, other):
        return isinstance(other, Header) and other.to_bytes() == self.to_bytes()

    def __repr__(self):
        return "Header(%s tx=%03x rx=%03x ctr=%d ep=%r hops=%d %s)" % (
            TYPE_NAMES[self.ptype], self.tx, self.rx, self.counter, self.epoch, self.hops,
            "o=%03x d=%03x m=%d i=%d%s p=%d" % (self.origin, self.dest, self.msgid,
                                                 self.index, "L" if self.last else "",
                                                 self.prio)
            if self.ptype in DATA_LIKE else "a=%d s=%d" % (self.acked, self.status))


# -- message header (first fragment's payload starts with it) ----------------
#   byte 0: version (4 bits) = 1 | reserved 0; byte: n, n bytes origin identity;
#   byte: m, m bytes destination identity (0 for "any gateway");
#   3 bytes payload length; 4 bytes SHA-256(header bytes before it + payload)[0:4]

MSG_VERSION = const(1)
MAX_MESSAGE = const(0xFFFFFF)


def message_header(origin_id, dest_id, payload):
    o = origin_id.encode()
    d = dest_id.encode() if dest_id else b""
    head = (bytes((MSG_VERSION << 4, len(o))) + o + bytes((len(d),)) + d
            + len(payload).to_bytes(3, "big"))
    h = hashlib.sha256(head)
    h.update(payload)
    return head + h.digest()[:4]


def parse_message(data):
    """(origin identity, dest identity or "", payload) of a reassembled
    message; MeshProtocolError (reason "message") on any inconsistency."""
    try:
        if data[0] != MSG_VERSION << 4:
            raise _err("message", field="version")
        n = data[1]
        origin = bytes(data[2:2 + n]).decode()
        i = 2 + n
        m = data[i]
        dest = bytes(data[i + 1:i + 1 + m]).decode()
        i += 1 + m
        length = int.from_bytes(data[i:i + 3], "big")
        tag = bytes(data[i + 3:i + 7])
        payload = bytes(data[i + 7:])
        if n < 1 or len(tag) != 4 or len(payload) != length:
            raise _err("message", field="length")
        h = hashlib.sha256(bytes(data[:i + 3]))
        h.update(payload)
        if h.digest()[:4] != tag:
            raise _err("message", field="digest")
        return origin, dest, payload
    except (IndexError, UnicodeError):
        raise _err("message", field="layout") from None
