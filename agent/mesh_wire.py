"""What a concentrator puts inside a mesh message, and what comes back:
the sealed batch for a gateway to upload on its origin's behalf, and the
HES's answer for the origin.

Owns these few byte layouts (version 1). Must not know the mesh (it carries
them opaque, end to end between the origin and a gateway), the envelope's
contents (relays and the gateway never open it: the HES does), or any
socket. Portable (MicroPython).

Every message starts with a kind byte; integers are big-endian::

    up   (origin -> any gateway)
      0x01 BATCH    | seq (4) | sealed envelope (1..)
    down (gateway -> origin)
      0x02 ACK      | seq (4) | status (1) | flags (1) | server time, ms (6)
                      status 0 accepted, 1 duplicate; flags bit 0 need_keyframe
      0x03 REFUSED  | seq (4) | reason (UTF-8, 1..64)   the HES refused these bytes
      0x04 RETRY    | seq (4) | reason (UTF-8, 1..64)   the gateway could not reach
                      the HES (its own uplink failed, or it is busy): try later
      0x05 REPLY    | body (0..)                        anything else the HES has
                      for this origin (commands, from issue 11 on): opaque here

An ACK is 13 bytes where the HTTP answer's JSON is ~80: every byte on the
air costs (docs/mesh.md §2.6). ``parse`` turns any bytes into a ``Message``
or ``MeshMessageError`` (reason ``empty``, ``kind``, ``truncated``,
``status``, ``reason``), never another exception.
"""

from agent import AgentError

BATCH = 0x01
ACK = 0x02
REFUSED = 0x03
RETRY = 0x04
REPLY = 0x05
KINDS = (BATCH, ACK, REFUSED, RETRY, REPLY)
NAMES = {BATCH: "batch", ACK: "ack", REFUSED: "refused", RETRY: "retry", REPLY: "reply"}
STATUSES = ("accepted", "duplicate")
MAX_SEQ = 0xFFFFFFFF
MAX_TIME_MS = (1 << 48) - 1
MAX_REASON = 64
ACK_LEN = 13


class MeshMessageError(AgentError):
    """Bytes that are not a message of this layout (field ``reason``)."""


class Message:
    """One parsed message. ``kind`` one of ``KINDS``; ``seq`` for all but
    REPLY; ``body`` the envelope (BATCH) or the opaque reply (REPLY);
    ``status``, ``need_keyframe``, ``server_time`` (s, float) for ACK;
    ``reason`` for REFUSED / RETRY."""

    __slots__ = ("kind", "seq", "body", "status", "need_keyframe", "server_time", "reason")

    def __init__(self, kind: int, seq: int = 0, body: bytes = b"", status: str = "",
                 need_keyframe: bool = False, server_time: float = 0.0,
                 reason: str = "") -> None:
        self.kind = kind
        self.seq = seq
        self.body = body
        self.status = status
        self.need_keyframe = need_keyframe
        self.server_time = server_time
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return False
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self) -> str:
        return "Message(%s, seq=%d, %d bytes, status=%r, reason=%r)" % (
            NAMES.get(self.kind, "?"), self.seq, len(self.body), self.status, self.reason)


def _seq(seq: int) -> bytes:
    if not 0 <= seq <= MAX_SEQ:
        raise MeshMessageError("seq out of range", reason="seq", seq=seq)
    return seq.to_bytes(4, "big")


def _reason(reason: str) -> bytes:
    raw = reason.encode()[:MAX_REASON] or b"?"
    while True:                          # never cut a UTF-8 sequence in half
        try:
            raw.decode()
            return raw
        except UnicodeError:
            raw = raw[:-1]


def batch(seq: int, sealed: bytes) -> bytes:
    if not sealed:
        raise MeshMessageError("empty batch", reason="empty")
    return bytes((BATCH,)) + _seq(seq) + bytes(sealed)


def ack(seq: int, status: str, server_time: float, need_keyframe: bool = False) -> bytes:
    if status not in STATUSES:
        raise MeshMessageError("unknown ack status", reason="status", status=status)
    ms = int(server_time * 1000 + 0.5)
    ms = 0 if ms < 0 else (MAX_TIME_MS if ms > MAX_TIME_MS else ms)
    return (bytes((ACK,)) + _seq(seq) + bytes((STATUSES.index(status), 1 if need_keyframe else 0))
            + ms.to_bytes(6, "big"))


def refused(seq: int, reason: str) -> bytes:
    return bytes((REFUSED,)) + _seq(seq) + _reason(reason)


def retry(seq: int, reason: str) -> bytes:
    return bytes((RETRY,)) + _seq(seq) + _reason(reason)


def reply(body: bytes) -> bytes:
    return bytes((REPLY,)) + bytes(body)


def parse(data: bytes) -> Message:
    """Any bytes -> a ``Message``, or ``MeshMessageError``."""
    data = bytes(data)
    if not data:
        raise MeshMessageError("empty message", reason="empty")
    kind = data[0]
    if kind not in KINDS:
        raise MeshMessageError("unknown message kind", reason="kind", kind=kind)
    if kind == REPLY:
        return Message(REPLY, body=data[1:])
    if len(data) < 5:
        raise MeshMessageError("message truncated", reason="truncated", size=len(data))
    seq = int.from_bytes(data[1:5], "big")
    rest = data[5:]
    if kind == BATCH:
        if not rest:
            raise MeshMessageError("batch without envelope", reason="truncated", seq=seq)
        return Message(BATCH, seq, rest)
    if kind == ACK:
        if len(data) != ACK_LEN:
            raise MeshMessageError("ack of wrong length", reason="truncated", size=len(data))
        if rest[0] >= len(STATUSES) or rest[1] & 0xFE:
            raise MeshMessageError("unknown ack status", reason="status", seq=seq)
        return Message(ACK, seq, status=STATUSES[rest[0]], need_keyframe=bool(rest[1] & 1),
                       server_time=int.from_bytes(rest[2:8], "big") / 1000)
    if not 1 <= len(rest) <= MAX_REASON:
        raise MeshMessageError("reason of wrong length", reason="reason", seq=seq)
    try:
        text = rest.decode()
    except UnicodeError:
        raise MeshMessageError("reason not UTF-8", reason="reason", seq=seq) from None
    return Message(kind, seq, reason=text)
