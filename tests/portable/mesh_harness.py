"""A tiny in-memory medium and virtual clock for multi-node tests of the
mesh core (tests only: the real radio medium lives in ``hil``).

Nodes are ``mesh.node.Node`` objects on one link each; ``edges`` say who
hears whom, each direction losing frames with its own probability. A frame
takes 1 ms on UDP, its time on air on LoRa; on LoRa every neighbour hears
it (receivers filter), on UDP only its destination (or all, for
broadcasts). Deterministic for a seed. Portable (MicroPython).
"""

from mesh.actions import Delivered, MessageAcked, MessageFailed, PongReceived, Transmit
from mesh.node import Node
from mesh.secure import MemoryCounterStore
from mesh.trickle import XorShift

KEY = bytes(range(32))


class Net:
    def __init__(self, names, edges, gateways=(), kind="udp", loss=0.0, seed=1,
                 link=None, **options):
        self.rand = XorShift(seed)
        self.now = 0
        self.kind = kind
        self.queue = []               # sorted [(time, seq, receiver name, frame)]
        self.seq = 0
        self.up = {}
        self.nodes = {}
        self.stores = {}
        self.hears = {}               # name -> {name: loss}
        self.events = []              # (time, node name, action) of every non-Transmit
        self.sent = []                # (time, node name, Transmit)
        self.options = options
        self.link = link if link is not None else {"kind": kind}
        self.gateways = set(gateways)
        for n in names:
            self.hears[n] = {}
            self.stores[n] = MemoryCounterStore()
            self.start(n)
        for e in edges:
            a, b = e[0], e[1]
            lo = e[2] if len(e) > 2 else loss
            self.hears[a][b] = lo
            self.hears[b][a] = lo
        self.names = list(names)

    def start(self, n):
        role = "gateway" if n in self.gateways else "node"
        self.nodes[n] = Node(n, role, KEY, [self.link], self.stores[n],
                             rand=XorShift(self.rand(1, 1 << 30)), members=self.members(),
                             now_ms=self.now, **self.options)
        self.up[n] = True
        if hasattr(self, "due"):
            self.due[n] = self.now

    def members(self):
        return sorted(self.stores)

    def kill(self, n):
        self.up[n] = False

    def restart(self, n):
        self.start(n)

    def _schedule(self, t, who, frame):
        self.seq += 1
        entry = (t, self.seq, who, frame)
        q = self.queue
        i = len(q)
        while i > 0 and q[i - 1][:2] > entry[:2]:
            i -= 1
        q.insert(i, entry)

    def _carry(self, n, actions):
        for a in actions:
            if isinstance(a, Transmit):
                self.sent.append((self.now, n, a))
                delay = a.params.get("toa_ms", 1) if a.params else 1
                for m, loss in self.hears[n].items():
                    if self.kind == "udp" and a.dest != 0xFFF and \
                            self.nodes[m].address != a.dest:
                        continue
                    if loss and self.rand(0, 1000000) < int(loss * 1000000):
                        continue
                    self._schedule(self.now + delay, m, a.frame)
            else:
                self.events.append((self.now, n, a))

    def poll_all(self):
        for n in self.names:
            if self.up[n]:
                self._poll(n)

    def _poll(self, n):
        node = self.nodes[n]
        self._carry(n, node.poll(self.now))
        self.due[n] = node.next_deadline()

    def run(self, until_ms):
        """Advance the clock to ``until_ms``, delivering frames and polling
        each node after it received and at its deadline."""
        if not hasattr(self, "due"):
            self.due = {}
        for n in self.names:
            if self.up[n]:
                self._poll(n)
        while True:
            t = until_ms
            if self.queue and self.queue[0][0] < t:
                t = self.queue[0][0]
            for n in self.names:
                d = self.due.get(n)
                if self.up[n] and d is not None and d < t:
                    t = d
            self.now = max(self.now, t)
            touched = []
            while self.queue and self.queue[0][0] <= self.now:
                _, _, m, frame = self.queue.pop(0)
                if self.up[m]:
                    self.nodes[m].receive(0, frame, -90.0, 5.0, self.now)
                    touched.append(m)
            for n in self.names:
                d = self.due.get(n)
                if self.up[n] and (n in touched or (d is not None and d <= self.now)):
                    self._poll(n)
            if self.now >= until_ms and not (self.queue and self.queue[0][0] <= until_ms):
                return

    def of(self, cls, name=None):
        return [(t, n, a) for (t, n, a) in self.events
                if isinstance(a, cls) and (name is None or n == name)]

    def delivered(self, name=None):
        return self.of(Delivered, name)

    def acked(self, name=None):
        return self.of(MessageAcked, name)

    def failed(self, name=None):
        return self.of(MessageFailed, name)

    def pongs(self, name=None):
        return self.of(PongReceived, name)


def max_hour_airtime(sent, name, window=3600000):
    """Largest air time inside any one-hour window of ``name``'s frames.
    The maximum over all windows is reached with the window starting at a
    frame's start or ending at a frame's end, so those are the ones tried."""
    tx = [(t, t + a.params["toa_ms"]) for (t, n, a) in sent if n == name]
    starts = [s for s, _ in tx] + [e - window for _, e in tx]
    worst = 0
    for w in starts:
        total = 0
        for s, e in tx:
            lo = s if s > w else w
            hi = e if e < w + window else w + window
            if hi > lo:
                total += hi - lo
        if total > worst:
            worst = total
    return worst
