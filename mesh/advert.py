"""Gateway advertisements: the 13-byte route announcements a node's
adverts carry (several per frame), and sequence-number arithmetic.

Owns the byte layout only. Must not know how routes are chosen
(``mesh.routing``) or the frame around it (``mesh.packet``). Portable.

Advert, 13 bytes big-endian::

    0      1      3      5       6     7      9     10      11
    +------+------+------+-------+-----+------+-----+-------+------+
    |ver|fl|  gw  | seq  |uplink | load| cost |hops |budget |parent|
    +------+------+------+-------+-----+------+-----+-------+------+
    ver (4 bits) = 1; flags (4 bits): bit 0 = REQ (seq request), others 0
    uplink 0..255 (255 best), load 0..255 (255 saturated): the gateway's
    cost: sender's path cost to gw (COST_SCALE per perfect hop; 0xFFFF = retracted)
    hops: sender's hops to gw; budget: sender's remaining duty cycle 0..255
    parent: the sender's parent toward gw (0xFFFF: none, the sender is gw)
"""

import struct

from mesh import MeshProtocolError

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[no-untyped-def]
        return x

ADVERT_LEN = const(13)
VERSION = const(1)
FLAG_REQ = const(1)
NONE = const(0xFFFF)
INFINITE = const(0xFFFF)
HOP_LIMIT = const(16)
_FMT = ">BHHBBHBBH"


def seq_newer(a, b):
    """Serial-number arithmetic on 16 bits (RFC 1982): a is after b."""
    d = (a - b) & 0xFFFF
    return 0 < d < 0x8000



class Advert:
    """One gateway advertisement (layout in the module docstring)."""

    def __init__(self, gateway, seq, uplink, load, cost, hops, budget, parent=NONE, flags=0):
        self.gateway = gateway
        self.seq = seq
        self.uplink = uplink
        self.load = load
        self.cost = cost
        self.hops = hops
        self.budget = budget
        self.parent = parent
        self.flags = flags

    def to_bytes(self):
        return struct.pack(_FMT, (VERSION << 4) | self.flags, self.gateway, self.seq,
                           self.uplink, self.load, self.cost, self.hops, self.budget,
                           self.parent)

    @classmethod
    def from_bytes(cls, data):
        if len(data) != ADVERT_LEN:
            raise MeshProtocolError("advert length", reason="advert_length", length=len(data))
        v, gw, seq, up, load, cost, hops, budget, parent = struct.unpack(_FMT, bytes(data))
        if v >> 4 != VERSION:
            raise MeshProtocolError("advert version", reason="advert_version", version=v >> 4)
        if v & 0x0E:
            raise MeshProtocolError("advert reserved flags", reason="advert_flags", flags=v & 15)
        if gw == NONE or (hops == 0 and parent != NONE) or hops > HOP_LIMIT:
            raise MeshProtocolError("advert fields", reason="advert_fields", gateway=gw, hops=hops)
        return cls(gw, seq, up, load, cost, hops, budget, parent, v & 15)

    def __eq__(self, other):
        return isinstance(other, Advert) and self.to_bytes() == other.to_bytes()

    def __repr__(self):
        return "Advert(gw=%d seq=%d cost=%d hops=%d parent=%d flags=%d)" % (
            self.gateway, self.seq, self.cost, self.hops, self.parent, self.flags)


def pack_adverts(adverts):
    return b"".join(a.to_bytes() for a in adverts)


def unpack_adverts(data):
    """A frame's concatenated adverts; MeshProtocolError on any bad one."""
    if len(data) == 0 or len(data) % ADVERT_LEN:
        raise MeshProtocolError("advert frame length", reason="advert_length", length=len(data))
    return [Advert.from_bytes(data[i:i + ADVERT_LEN]) for i in range(0, len(data), ADVERT_LEN)]
