"""What a concentrator puts inside a mesh message, and what comes back: the
sealed envelopes a gateway hands to the HES on its origin's behalf (a batch,
a command result, an idle poll), and the HES's answers for the origin.

Owns these byte layouts (version 1). Must not know the mesh (it carries them
opaque, end to end between the origin and a gateway), the envelopes'
contents (relays and the gateway never open them: the HES does), or any
socket. Portable (MicroPython).

Every message starts with a kind byte; integers are big-endian::

    up   (origin -> any gateway)
      0x01 BATCH    | seq (4)     | sealed batch (envelope kind 1)
      0x06 RESULT   | counter (4) | sealed command result (kind 3)
      0x07 POLL     | poll id (4) | sealed idle poll (kind 4); the id is the origin's
      0x0C FETCH    | fetch id (4) | package id (8) | sealed fetch request (kind 5):
                      a range of an update package (docs/firmware.md)
    down (gateway -> origin)
      0x02 ACK      | seq (4) | status (1) | flags (1) | server time, ms (6) [| commands]
                      status 0 accepted, 1 duplicate; flags bit 0 need_keyframe
      0x08 RACK     | counter (4) | status (1)          the HES stored that result
      0x09 POLLED   | poll id (4) | server time, ms (6) [| commands]
      0x0D CHUNK    | fetch id (4) | the package's bytes (1..)
      0x03 REFUSED  | request kind (1) | id (4) | reason (UTF-8, 1..64)
                      the HES refused that request's bytes
      0x04 RETRY    | request kind (1) | id (4) | reason (UTF-8, 1..64)
                      the gateway could not get an answer (its own uplink failed,
                      or it is busy): try later
      0x05 REPLY    | body (0..)       anything else for this origin: opaque here

    commands = n (1) | n x (length (2) | sealed command, kind 2)   (absent: none)

An ACK without commands is 13 bytes where the HTTP answer's JSON is ~80:
every byte on the air costs (docs/mesh.md §2.6). ``parse`` turns any bytes
into a ``Message`` or ``MeshMessageError`` (reason ``empty``, ``kind``,
``truncated``, ``status``, ``reason``, ``commands``), never another exception.
"""

from agent import AgentError

BATCH = 0x01
ACK = 0x02
REFUSED = 0x03
RETRY = 0x04
REPLY = 0x05
RESULT = 0x06
POLL = 0x07
RACK = 0x08
POLLED = 0x09
FETCH = 0x0C
CHUNK = 0x0D
UP = (BATCH, RESULT, POLL, FETCH)
KINDS = (BATCH, ACK, REFUSED, RETRY, REPLY, RESULT, POLL, RACK, POLLED, FETCH, CHUNK)
NAMES = {BATCH: "batch", ACK: "ack", REFUSED: "refused", RETRY: "retry", REPLY: "reply",
         RESULT: "result", POLL: "poll", RACK: "rack", POLLED: "polled", FETCH: "fetch",
         CHUNK: "chunk"}
ANSWERS = {ACK: BATCH, RACK: RESULT, POLLED: POLL, CHUNK: FETCH}  # answer -> request kind
STATUSES = ("accepted", "duplicate")
MAX_ID = 0xFFFFFFFF
MAX_TIME_MS = (1 << 48) - 1
MAX_REASON = 64
MAX_COMMANDS = 64
ACK_LEN = 13


class MeshMessageError(AgentError):
    """Bytes that are not a message of this layout (field ``reason``)."""


class Message:
    """One parsed message. ``kind`` one of ``KINDS``; ``seq`` the request's
    id (batch seq, result counter, poll id) for all but REPLY; ``ref`` the
    request kind an answer is for; ``body`` the envelope (up) or the opaque
    reply; ``status``, ``need_keyframe``, ``server_time`` (s), ``commands``
    (sealed) for answers; ``reason`` for REFUSED / RETRY."""

    __slots__ = ("kind", "seq", "body", "status", "need_keyframe", "server_time", "reason",
                 "ref", "commands")

    def __init__(self, kind: int, seq: int = 0, body: bytes = b"", status: str = "",
                 need_keyframe: bool = False, server_time: float = 0.0, reason: str = "",
                 ref: int = 0, commands: "tuple[bytes, ...]" = ()) -> None:
        self.kind = kind
        self.seq = seq
        self.body = body
        self.status = status
        self.need_keyframe = need_keyframe
        self.server_time = server_time
        self.reason = reason
        self.ref = ref if ref else ANSWERS.get(kind, kind)
        self.commands = tuple(commands)

    @property
    def key(self) -> "tuple[int, int]":
        """(request kind, id): what an answer answers, or what a request is."""
        return (self.ref, self.seq)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return False
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self) -> str:
        return "Message(%s, seq=%d, %d bytes, status=%r, reason=%r, %d commands)" % (
            NAMES.get(self.kind, "?"), self.seq, len(self.body), self.status, self.reason,
            len(self.commands))


def _id(n: int) -> bytes:
    if not 0 <= n <= MAX_ID:
        raise MeshMessageError("id out of range", reason="seq", seq=n)
    return n.to_bytes(4, "big")


def _ms(t: float) -> bytes:
    ms = int(t * 1000 + 0.5)
    ms = 0 if ms < 0 else (MAX_TIME_MS if ms > MAX_TIME_MS else ms)
    return ms.to_bytes(6, "big")


def _reason(reason: str) -> bytes:
    raw = reason.encode()[:MAX_REASON] or b"?"
    while True:                          # never cut a UTF-8 sequence in half
        try:
            raw.decode()
            return raw
        except UnicodeError:
            raw = raw[:-1]


def _commands(commands: "tuple[bytes, ...] | list[bytes]") -> bytes:
    if not commands:
        return b""
    if len(commands) > MAX_COMMANDS:
        raise MeshMessageError("too many commands", reason="commands", n=len(commands))
    out = bytes((len(commands),))
    for c in commands:
        if not 1 <= len(c) <= 0xFFFF:
            raise MeshMessageError("command of bad length", reason="commands", size=len(c))
        out += len(c).to_bytes(2, "big") + bytes(c)
    return out


def request(kind: int, n: int, sealed: bytes) -> bytes:
    """An up message: BATCH (seq), RESULT (counter) or POLL (poll id)."""
    if kind not in UP:
        raise MeshMessageError("not a request kind", reason="kind", kind=kind)
    if not sealed:
        raise MeshMessageError("empty envelope", reason="empty")
    return bytes((kind,)) + _id(n) + bytes(sealed)


def batch(seq: int, sealed: bytes) -> bytes:
    return request(BATCH, seq, sealed)


def ack(seq: int, status: str, server_time: float, need_keyframe: bool = False,
        commands: "tuple[bytes, ...]" = ()) -> bytes:
    if status not in STATUSES:
        raise MeshMessageError("unknown ack status", reason="status", status=status)
    return (bytes((ACK,)) + _id(seq) + bytes((STATUSES.index(status), 1 if need_keyframe else 0))
            + _ms(server_time) + _commands(commands))


def rack(counter: int, status: str) -> bytes:
    if status not in STATUSES:
        raise MeshMessageError("unknown result status", reason="status", status=status)
    return bytes((RACK,)) + _id(counter) + bytes((STATUSES.index(status),))


def polled(poll_id: int, server_time: float, commands: "tuple[bytes, ...]" = ()) -> bytes:
    return bytes((POLLED,)) + _id(poll_id) + _ms(server_time) + _commands(commands)


def fetch_body(package_id: str, sealed: bytes) -> bytes:
    """A FETCH request's body: the package id (16 hex, as 8 bytes), then the
    sealed request; the gateway needs the id for the HES's URL."""
    try:
        pid = bytes.fromhex(package_id)
    except ValueError:
        pid = b""
    if len(pid) != 8 or not sealed:
        raise MeshMessageError("not a fetch request", reason="truncated")
    return pid + bytes(sealed)


def split_fetch(body: bytes) -> "tuple[str, bytes]":
    """(package id, sealed request) of a FETCH body."""
    if len(body) < 9:
        raise MeshMessageError("fetch request truncated", reason="truncated", size=len(body))
    return bytes(body[:8]).hex(), bytes(body[8:])


def chunk(n: int, data: bytes) -> bytes:
    if not data:
        raise MeshMessageError("empty chunk", reason="empty")
    return bytes((CHUNK,)) + _id(n) + bytes(data)


def refused(ref: int, n: int, reason: str) -> bytes:
    """The HES refused request (``ref`` kind, id ``n``)."""
    return bytes((REFUSED, ref)) + _id(n) + _reason(reason)


def retry(ref: int, n: int, reason: str) -> bytes:
    return bytes((RETRY, ref)) + _id(n) + _reason(reason)


def reply(body: bytes) -> bytes:
    return bytes((REPLY,)) + bytes(body)


def _parse_commands(data: bytes, n: int) -> "tuple[bytes, ...]":
    if not data:
        return ()
    count = data[0]
    pos = 1
    out = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise MeshMessageError("commands truncated", reason="commands", seq=n)
        size = int.from_bytes(data[pos:pos + 2], "big")
        if size < 1 or pos + 2 + size > len(data):
            raise MeshMessageError("command of bad length", reason="commands", seq=n)
        out.append(data[pos + 2:pos + 2 + size])
        pos += 2 + size
    if pos != len(data) or not out:
        raise MeshMessageError("bytes after the commands", reason="commands", seq=n)
    return tuple(out)


def _status(b: int, n: int) -> str:
    if b >= len(STATUSES):
        raise MeshMessageError("unknown status", reason="status", seq=n)
    return STATUSES[b]


def _answer(kind: int, data: bytes) -> Message:
    if kind in (REFUSED, RETRY):
        if len(data) < 6:
            raise MeshMessageError("message truncated", reason="truncated", size=len(data))
        ref, n, rest = data[1], int.from_bytes(data[2:6], "big"), data[6:]
        if ref not in UP:
            raise MeshMessageError("answer to no request kind", reason="kind", ref=ref)
        if not 1 <= len(rest) <= MAX_REASON:
            raise MeshMessageError("reason of wrong length", reason="reason", seq=n)
        try:
            text = rest.decode()
        except UnicodeError:
            raise MeshMessageError("reason not UTF-8", reason="reason", seq=n) from None
        return Message(kind, n, reason=text, ref=ref)
    n = int.from_bytes(data[1:5], "big")
    rest = data[5:]
    if kind == ACK:
        if len(data) < ACK_LEN:
            raise MeshMessageError("ack truncated", reason="truncated", size=len(data))
        if rest[1] & 0xFE:
            raise MeshMessageError("unknown ack flags", reason="status", seq=n)
        return Message(ACK, n, status=_status(rest[0], n), need_keyframe=bool(rest[1] & 1),
                       server_time=int.from_bytes(rest[2:8], "big") / 1000,
                       commands=_parse_commands(rest[8:], n))
    if kind == CHUNK:
        if not rest:
            raise MeshMessageError("empty chunk", reason="truncated", size=len(data))
        return Message(CHUNK, n, rest)
    if kind == RACK:
        if len(rest) != 1:
            raise MeshMessageError("result ack of wrong length", reason="truncated",
                                   size=len(data))
        return Message(RACK, n, status=_status(rest[0], n))
    if len(rest) < 6:                                    # POLLED
        raise MeshMessageError("poll answer truncated", reason="truncated", size=len(data))
    return Message(POLLED, n, server_time=int.from_bytes(rest[:6], "big") / 1000,
                   commands=_parse_commands(rest[6:], n))


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
    if kind in UP:
        if len(data) < 6:
            raise MeshMessageError("request without envelope", reason="truncated",
                                   size=len(data))
        return Message(kind, int.from_bytes(data[1:5], "big"), data[5:])
    return _answer(kind, data)
