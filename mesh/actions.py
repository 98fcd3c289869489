"""What a ``mesh.node.Node`` asks its IO loop to do, and what it reports:
small immutable value objects returned by ``Node.poll(now_ms)``.

Owns the action types only. Must not know links, sockets or radios (the IO
loop carries a ``Transmit`` out), nor what a payload means. Portable
(MicroPython): plain classes with ``__slots__``, equality by value.

    Transmit(link_no, frame, dest, params)   put ``frame`` on link ``link_no``;
        ``dest`` is the compact address of the neighbour (``BROADCAST`` for
        adverts) so a UDP link can pick the peer's endpoint; ``params`` is
        ``{}`` on UDP, on LoRa ``{"sf", "bw", "cr", "channel", "toa_ms"}``
        (the time on air the node already charged to its duty budget).
    Delivered(origin, payload, message_id, kind)   a whole message arrived
        for this node: at a gateway an uplink message from node ``origin``
        (an identity string such as "DC-0001"); at a node a downlink message
        from gateway ``origin``. ``kind`` is "up" or "down".
    MessageAcked(message_id)     every fragment of our message is in the
        custody of the next hop (per-hop delivery, NOT the HES's ack).
    MessageFailed(message_id, reason)   our message was given up ("retries",
        "no_route", "expired"); the caller keeps the data and tries later.
    PongReceived(node, rtt_ms, message_id)   the answer to ``Node.ping``.
"""

BROADCAST = 0xFFF


class _Value:
    __slots__ = ()

    def _key(self):
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other):
        return type(other) is type(self) and other._key() == self._key()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash((type(self).__name__,) + tuple(
            repr(v) if isinstance(v, dict) else v for v in self._key()))

    def __repr__(self):
        parts = []
        for n in self.__slots__:
            v = getattr(self, n)
            if isinstance(v, (bytes, bytearray)):
                v = "<%d bytes>" % len(v)
            else:
                v = repr(v)
            parts.append("%s=%s" % (n, v))
        return "%s(%s)" % (type(self).__name__, ", ".join(parts))


class Transmit(_Value):
    __slots__ = ("link_no", "frame", "dest", "params")

    def __init__(self, link_no, frame, dest=BROADCAST, params=None):
        self.link_no = link_no
        self.frame = frame
        self.dest = dest
        self.params = params if params is not None else {}


class Delivered(_Value):
    __slots__ = ("origin", "payload", "message_id", "kind")

    def __init__(self, origin, payload, message_id=0, kind="up"):
        self.origin = origin
        self.payload = payload
        self.message_id = message_id
        self.kind = kind


class MessageAcked(_Value):
    __slots__ = ("message_id",)

    def __init__(self, message_id):
        self.message_id = message_id


class MessageFailed(_Value):
    __slots__ = ("message_id", "reason")

    def __init__(self, message_id, reason):
        self.message_id = message_id
        self.reason = reason


class PongReceived(_Value):
    __slots__ = ("node", "rtt_ms", "message_id")

    def __init__(self, node, rtt_ms, message_id):
        self.node = node
        self.rtt_ms = rtt_ms
        self.message_id = message_id
