"""Per-hop custody: the frames a node holds until the next hop acknowledges
them, ordered by priority, bounded in bytes (back-pressure), with retry
bookkeeping (exponential backoff with injected jitter).

Owns the queue and the retry arithmetic. Must not know routes, links, keys
or the air: ``mesh.node`` picks the next hop and the link for each item.
Two budgets: frames relayed for others (``relay_limit`` bytes; a full queue
answers the sender "busy", so the data stays with it) and this node's own
messages (``own_limit``; a full queue raises MeshBusy to the caller, so the
data stays in its archive). Portable (MicroPython).
"""

from mesh import MeshBusy
from mesh.duty import ticks_add


class Item:
    """One fragment (or ping/pong) in custody; header fields as
    ``mesh.packet.Header``. ``mid`` is the local message id of our own
    messages (None when relayed); ``avoid`` a neighbour to skip once (it
    answered busy or refused)."""

    __slots__ = ("ptype", "origin", "dest", "msgid", "index", "last", "prio", "down",
                 "payload", "hops", "order", "due", "attempts", "busy", "mid", "born",
                 "avoid")

    def __init__(self, ptype, origin, dest, msgid, index, last, prio, down, payload, hops,
                 mid, born):
        self.ptype = ptype
        self.origin = origin
        self.dest = dest
        self.msgid = msgid
        self.index = index
        self.last = last
        self.prio = prio
        self.down = down
        self.payload = payload
        self.hops = hops
        self.order = 0
        self.due = born
        self.attempts = 0
        self.busy = 0
        self.mid = mid
        self.born = born
        self.avoid = None

    def __repr__(self):
        return "Item(t=%d o=%03x d=%03x m=%d i=%d p=%d att=%d mid=%r)" % (
            self.ptype, self.origin, self.dest, self.msgid, self.index, self.prio,
            self.attempts, self.mid)


def backoff(attempt, base_ms, max_ms, rand):
    """Delay before attempt ``attempt`` + 1: base * 2^(attempt-1), capped,
    plus jitter uniform in [0, that delay) from ``rand(lo, hi)``."""
    d = base_ms << min(max(attempt - 1, 0), 20)
    if d > max_ms:
        d = max_ms
    return d + rand(0, d) if d > 0 else 0


class CustodyQueue:
    def __init__(self, relay_limit=32768, own_limit=131072):
        self.relay_limit = relay_limit
        self.own_limit = own_limit
        self.items = []               # sorted by (prio, order)
        self.relay_bytes = 0
        self.own_bytes = 0
        self._order = 0

    def fits_relay(self, nbytes):
        return self.relay_bytes + nbytes <= self.relay_limit

    def reserve_own(self, nbytes):
        """MeshBusy (reason "queue_full") if our own messages would exceed
        their budget with ``nbytes`` more."""
        if self.own_bytes + nbytes > self.own_limit:
            raise MeshBusy("custody queue full", reason="queue_full",
                           queued=self.own_bytes, size=nbytes, limit=self.own_limit)

    def push(self, item):
        self._order += 1
        item.order = self._order
        items = self.items
        lo, hi = 0, len(items)
        key = (item.prio, item.order)
        while lo < hi:                # bisect: MicroPython has no bisect module
            m = (lo + hi) // 2
            if (items[m].prio, items[m].order) <= key:
                lo = m + 1
            else:
                hi = m
        items.insert(lo, item)
        if item.mid is None:
            self.relay_bytes += len(item.payload)
        else:
            self.own_bytes += len(item.payload)

    def remove(self, item):
        try:
            self.items.remove(item)
        except ValueError:
            return False
        if item.mid is None:
            self.relay_bytes -= len(item.payload)
        else:
            self.own_bytes -= len(item.payload)
        return True

    def drop_message(self, mid):
        """Remove every fragment of our message ``mid``; how many."""
        gone = [i for i in self.items if i.mid == mid]
        for i in gone:
            self.remove(i)
        return len(gone)

    def retry_later(self, item, now_ms, base_ms, max_ms, rand, attempt=None):
        n = item.attempts if attempt is None else attempt
        item.due = ticks_add(now_ms, backoff(n, base_ms, max_ms, rand))

    def __len__(self):
        return len(self.items)

    def nbytes(self):
        return self.relay_bytes + self.own_bytes
