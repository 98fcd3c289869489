"""Fragmentation of a message into frame-sized chunks, and reassembly at
the destination: fragments in any order, duplicated or missing give the
right message or a timeout, never a wrong one.

Owns chunking and the reassembly buffers. Must not know headers' bytes,
keys or routes: the caller hands in (key, index, last, chunk) from an
authenticated frame, where ``key`` names one message of one origin (the node
uses (type, origin address, message id)). Whether the joined bytes are the
right message is decided by the message header's length and SHA-256 digest
(``mesh.packet.parse_message``), so chunks of two messages that share a key
(an origin that rebooted and reused an id) can only fail the digest.
Time is a tick in (may wrap). Portable (MicroPython).
"""

from mesh import MeshBusy, MeshLocalError
from mesh.duty import ticks_diff
from mesh.packet import MAX_INDEX

NEW = "new"               # stored, message not complete yet
DUPLICATE = "duplicate"   # already had it (or the whole message): ack, drop
CONFLICT = "conflict"     # inconsistent with what is held (dropped, counted)
COMPLETE = "complete"     # the last missing chunk: the joined bytes are returned


def split(message, size):
    """Chunks of at most ``size`` bytes (at least one chunk)."""
    if size < 1:
        raise MeshLocalError("fragment size must be positive", reason="mtu", size=size)
    n = (len(message) + size - 1) // size if message else 1
    if n - 1 > MAX_INDEX:
        raise MeshLocalError("message needs too many fragments", reason="too_big",
                             size=len(message), fragments=n)
    return [message[i * size:(i + 1) * size] for i in range(n)]


class Reassembler:
    """Buffers per message key: ``add`` returns (status, message bytes or
    None). ``max_bytes`` bounds buffered chunks: a fragment of a *new*
    message beyond it raises MeshBusy (the sender keeps it and retries);
    fragments of messages already started are taken up to twice the bound, so
    started messages can finish. A message not completed within
    ``timeout_ms`` of its last new fragment is dropped by ``expire``; keys
    of completed messages are remembered ``done_ms`` to refuse late copies."""

    def __init__(self, timeout_ms=600000, max_bytes=1 << 20, done_ms=1800000):
        self.timeout_ms = timeout_ms
        self.max_bytes = max_bytes
        self.done_ms = done_ms
        self.partial = {}             # key -> [tick, {index: chunk}, count or None, bytes]
        self.done = {}                # key -> tick completed
        self.bytes = 0
        self.timeouts = 0
        self.conflicts = 0

    def add(self, key, index, last, chunk, now_ms):
        if key in self.done:
            return DUPLICATE, None
        p = self.partial.get(key)
        if p is None:
            if self.bytes + len(chunk) > self.max_bytes:
                raise MeshBusy("reassembly buffers full", reason="reassembly_full")
            p = self.partial[key] = [now_ms, {}, None, 0]
        elif self.bytes + len(chunk) > 2 * self.max_bytes:
            raise MeshBusy("reassembly buffers full", reason="reassembly_full")
        chunks = p[1]
        held = chunks.get(index)
        if held is not None:
            if held == chunk:
                return DUPLICATE, None
            self.conflicts += 1
            return CONFLICT, None
        count = index + 1 if last else None
        if (count is not None and p[2] is not None and count != p[2]) or \
                (p[2] is not None and index >= p[2]) or \
                (count is not None and chunks and max(chunks) >= count):
            self.conflicts += 1
            return CONFLICT, None
        if count is not None:
            p[2] = count
        chunks[index] = chunk
        p[0] = now_ms
        p[3] += len(chunk)
        self.bytes += len(chunk)
        if p[2] is None or len(chunks) != p[2]:
            return NEW, None
        del self.partial[key]
        self.bytes -= p[3]
        self.done[key] = now_ms
        return COMPLETE, b"".join(chunks[i] for i in range(p[2]))

    def forget_done(self, key):
        """A completed message failed its digest: let a good copy in."""
        self.done.pop(key, None)

    def expire(self, now_ms):
        """Drop buffers idle longer than the timeout; how many."""
        gone = 0
        for key in list(self.partial):
            p = self.partial[key]
            if ticks_diff(now_ms, p[0]) >= self.timeout_ms:
                del self.partial[key]
                self.bytes -= p[3]
                gone += 1
        for key in list(self.done):
            if ticks_diff(now_ms, self.done[key]) >= self.done_ms:
                del self.done[key]
        self.timeouts += gone
        return gone

    def __len__(self):
        return len(self.partial)
