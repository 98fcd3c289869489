"""One concentrator in the mesh, sans-IO (h11-style): frames and time in,
actions out. The object an IO loop (UDP sockets, a LoRa driver) or a
discrete-event simulator drives; it holds packets, the secure link layer,
routing, custody queues, fragmentation, duty-cycle budget.

Owns the node's protocol state. Must not know sockets, radios, clocks,
threads or sleeps (time comes in as ``now_ms``, an integer millisecond tick
that may wrap like MicroPython's ``ticks_ms``; randomness is injected), nor
what a payload means (the agent's sealed batches; relays never see readings).
Portable (MicroPython).

API (stable; the agent and the simulator are written against it)::

    node = Node(identity, role, network_key, links, counter_store, rand=None,
                members=None, now_ms=0, **options)
        identity       this concentrator's id, e.g. "DC-0001"
        role           "node" | "gateway" | "auto" (gateway while set_uplink
                       says its own uplink works)
        network_key    the district's 32-byte key (bytes; hex is the caller's job)
        links          list of link dicts (mesh.links: {"kind": "udp"|"lora",
                       "mtu", "sf", "bandwidth", "coding_rate", "channel"});
                       link_no is the index in this list
        counter_store  load() -> int / save(int): the persisted counter epoch
                       (as agent.envelope's boot store); the node saves
                       load()+1 before its first frame, so a reboot never
                       reuses a nonce
        rand           rand(lo, hi) -> int in [lo, hi) (backoff jitter,
                       trickle); default a seeded xorshift
        members        the district roster: identities in provisioning order
                       (append-only), from which compact addresses are
                       derived without collision (mesh.address); None = this
                       node alone (addresses by hash, conflicts only detected)
        options        tuning: see DEFAULTS below

    node.address                      this node's 12-bit compact address
    node.receive(link_no, frame, rssi=None, snr=None, now_ms=0) -> int | None
        a frame from a link; returns the authenticated neighbour address (a
        UDP link learns the sender's endpoint from it), None if the frame was
        refused (counted in stats()["refused"] by reason) or not for us.
        Never raises on bad input.
    node.send_up(payload, priority, now_ms) -> message id
        to any gateway; priority 0 (events) .. 3 (bulk), lower goes first.
        Raises MeshBusy (reason "queue_full") when the custody queue cannot
        take it: keep the data in the archive and try later; MeshLocalError
        (reason "too_big") over MAX_MESSAGE bytes. At a gateway the message
        is delivered locally (Delivered on the next poll).
    node.send_down(dest, payload, now_ms, priority=0) -> message id
        gateway only: to node ``dest`` (identity) along learnt downward
        routes; MeshLocalError (reason "no_route" / "not_gateway").
    node.ping(dest, now_ms) -> message id          PongReceived later
    node.set_uplink(up, quality=255, load=0, now_ms=0)
        the gateway's own uplink state (quality and load 0..255 go into
        its adverts; role "auto" becomes a gateway while ``up``)
    node.poll(now_ms) -> [actions]    everything due by now (mesh.actions:
        Transmit, Delivered, MessageAcked, MessageFailed, PongReceived)
    node.next_deadline() -> tick      when poll must run next at the
        latest (now, if a frame was accepted or a message queued since)
    node.stats(now_ms) -> dict        neighbours, routes, parent, gateway,
        cost, queues, duty use, counters and refused frames by reason

``stats(now_ms)`` (JSON-ready; what ``wum status --json`` and ``wum mesh
neighbours|routes|stats`` show)::

    {"identity": "DC-0003", "address": 1234, "role": "node", "gateway_active": false,
     "gateway": "DC-0001" | null, "parent": "DC-0002" | null, "backup": ... | null,
     "cost": 412 | null,                      # COST_SCALE (128) = one perfect hop
     "neighbours": [{"id": "DC-0002", "address": 77, "link": 0, "kind": "lora",
                     "quality": 0.93,         # delivery ratio estimate 0..1
                     "etx": 1.07, "rssi": -97.0, "snr": 4.5, "last_heard_s": 12.3,
                     "dead": false}],         # dead: 5 unacked frames in a row
     "routes": [{"gateway": "DC-0001", "via": "DC-0002", "cost": 412, "hops": 3,
                 "seq": 17}],                 # one per known gateway, best first
     "downward": 41,                          # learnt downward routes
     "queue": {"frames": 3, "bytes": 640, "own_messages": 1},
     "duty": [{"link": 0, "band": "g1", "used_ms": 1210, "budget_ms": 36000,
               "remaining": 0.97}],           # LoRa links only
     "airtime_ms": 5230,                      # LoRa air time since start
     "epoch": 7,                              # frame counter epoch (restarts + wraps)
     "counters": {name: int for name in COUNTERS},   # frames_in/out, acks_out,
                  # retries, ack_timeouts, forwarded, delivered, duplicates,
                  # busy_in/out, refused_in/out, no_route, hop_limit, corrupt,
                  # reassembly_timeouts, duty_deferrals, rerouted, resent, ...
     "refused": {name: int for name in REFUSALS}}    # docs/mesh.md §3.3

Neighbour ids are identity strings when known (roster or the identity a
neighbour puts in its adverts), else "#%03x" of the address.

An IO loop: after every ``receive``/``send_*`` and whenever ``now`` reaches
``next_deadline()``, call ``poll(now)`` and carry out its Transmits in order.
A simulator may skip the poll after a ``receive`` when ``next_deadline()``
is still in the future (a frame for another node, or refused, changes
nothing that is due); ``next_deadline()`` is O(1).
"""

from mesh import MeshBusy, MeshLocalError
from mesh.actions import Delivered, MessageAcked, MessageFailed
from mesh.address import AddressTable, check_identity
from mesh.custody import CustodyQueue, Item
from mesh.downward import DownwardRoutes
from mesh.duty import DutyCycleBudget, ticks_add, ticks_diff
from mesh.fragment import Reassembler, split
from mesh.links import LinkSpec
from mesh.nodestats import node_stats
from mesh.packet import (
    DATA,
    DOWN,
    HOP_LIMIT,
    MAX_MESSAGE,
    PING,
    message_header,
)
from mesh.receive import FRAME_OVERHEAD, Receiver
from mesh.routing import INFINITE, NONE, Advert, RouteTable
from mesh.secure import LinkSecurity
from mesh.transmit import LinkState, Transmitter
from mesh.trickle import Trickle, XorShift

ROLES = ("node", "gateway", "auto")

DEFAULTS = {
    "max_retries": 8,                 # attempts of one frame before it is given up
    "backoff_ms": 500,                # first retry delay; doubles, plus jitter in [0, delay)
    "backoff_max_ms": 60000,
    "queue_bytes": 32768,             # custody queue for relayed fragments
    "own_bytes": 131072,              # our own messages waiting for their first hop
    "reassembly_bytes": 1 << 20,      # buffered fragments of incoming messages
    "reassembly_timeout_ms": 3600000,  # a message idle this long is dropped
    "dedup_ms": 1800000,              # relayed fragments / completed messages remembered
    "message_ttl_ms": 3600000,        # our message given up ("expired") after this
    "trickle_imin_ms": None,          # default 2 s on UDP-only nodes, 30 s with LoRa
    "trickle_doublings": None,        # default 8 on UDP-only nodes (8.5 min), 7 with LoRa (64 min)
    "trickle_k": 2,
    "route_ttl_ms": 3 * 3600000,
    "gateway_refresh_ms": 600000,     # a gateway bumps its seq this often (its liveness)
    "route_live_ms": 1500000,         # a route whose seq has not moved this long is dead
    "seq_hasten_ms": 75000,           # a new seq is advertised within this (trickle cap)
    "sync_jitter_ms": None,           # a sync advert (epoch news) goes within this
                                      # (default trickle Imin / 2: 1 s UDP, 15 s LoRa)
    "sync_gap_ms": None,              # and at most once per this (default 2 Imin)
    "downward_ttl_ms": 6 * 3600000,
    "housekeeping_ms": 60000,         # expiry sweeps run this often
    "mtu": None,                      # fragment for this MTU (default: the smallest link's)
    "reroute_hold_ms": None,          # wait before re-addressing uplink to another gateway
                                      # (default 5 trickle Imin: 10 s UDP, 150 s LoRa)
}
PRIORITIES = 4
COUNTERS = ("frames_in", "frames_out", "overheard", "data_out", "acks_out", "adverts_out",
            "retries", "ack_timeouts", "acks_stray", "acks_skipped", "adverts_skipped",
            "busy_in", "busy_out", "refused_in", "refused_out", "forwarded", "delivered",
            "duplicates", "hop_limit", "no_route", "corrupt", "reassembly_timeouts",
            "reassembly_conflicts", "duty_deferrals", "rerouted", "resent", "dropped_expired",
            "address_conflicts", "misaddressed", "messages_sent", "messages_failed",
            "sync_adverts")
REFUSALS = ("malformed", "unsynced", "bad_tag", "replay", "own_address", "address_conflict")


def _options(options):
    opt = dict(DEFAULTS)
    for k in options:
        if k not in DEFAULTS:
            raise MeshLocalError("unknown node option", reason="option", option=k)
        opt[k] = options[k]
    return opt


def _seed(identity):
    s = 2166136261
    for b in identity.encode():
        s = ((s ^ b) * 16777619) & 0xFFFFFFFF
    return s


class Node(Receiver, Transmitter):
    """See the module docstring."""

    def __init__(self, identity, role, network_key, links, counter_store, rand=None,
                 members=None, now_ms=0, **options):
        check_identity(identity)
        if role not in ROLES:
            raise MeshLocalError("unknown role", reason="role", role=role)
        if not links:
            raise MeshLocalError("a node needs at least one link", reason="link")
        o = self.opt = _options(options)
        self.identity = identity
        self.role = role
        self.rand = rand if rand is not None else XorShift(_seed(identity))
        self.addresses = AddressTable(members or ())
        self.address = self.addresses.address(identity)
        self.addresses.learn(self.address, identity)
        self.links = [LinkSpec.from_dict(d) if isinstance(d, dict) else d for d in links]
        self.mtu = o["mtu"] or min(link.mtu for link in self.links)
        self.frag_size = self.mtu - FRAME_OVERHEAD
        if self.frag_size < 16:
            raise MeshLocalError("MTU too small for mesh frames", reason="mtu", mtu=self.mtu)
        lora = any(link.duty_cycled for link in self.links)
        imin = o["trickle_imin_ms"] or (30000 if lora else 2000)
        doublings = o["trickle_doublings"]
        if doublings is None:
            doublings = 7 if lora else 8
        self.sec = LinkSecurity(network_key, self.address, counter_store)
        self.duty = DutyCycleBudget()
        self.routes = RouteTable(self.address, now_ms, gateway=(role == "gateway"),
                                 route_ttl_ms=o["route_ttl_ms"],
                                 neighbour_ttl_ms=o["route_ttl_ms"],
                                 live_ms=o["route_live_ms"],
                                 refresh_ms=o["gateway_refresh_ms"])
        self.down = DownwardRoutes(ttl_ms=o["downward_ttl_ms"])
        self.trickle = Trickle(imin, doublings, o["trickle_k"], now_ms, self.rand)
        self.trickle.reset(now_ms)            # a node that (re)starts speaks up soon
        self.reroute_hold_ms = o["reroute_hold_ms"] or 5 * imin
        self.sync_jitter_ms = o["sync_jitter_ms"] or imin // 2
        self._sync_due = None                 # tick a sync advert is due (epoch news)
        self._sync_last = None                # tick of the last one
        self._told = None                     # epoch our last advert (or queued one) carried
        self.unreachable = {}                 # gateway -> tick its route was first missed
        self.queue = CustodyQueue(o["queue_bytes"], o["own_bytes"])
        self.reasm = Reassembler(o["reassembly_timeout_ms"], o["reassembly_bytes"],
                                 o["dedup_ms"])
        self.lstate = [LinkState(now_ms) for _ in self.links]
        self.neigh = {}               # address -> Neighbour
        self.events = []              # actions other than Transmit, for the next poll
        self.own = {}                 # our message id -> [fragments not handed over, born, chunks]
        self.pings = {}               # wire message id -> [our message id, sent tick, identity]
        self.seen = {}                # relayed fragment key -> (tick, fingerprint): dedup
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.airtime_ms = 0
        self.bytes_out = 0
        self._mid = 0
        self._msgid = self.rand(0, 256)   # a reboot does not restart ids at 0
        self._retire = []
        self._now = now_ms
        self._dirty = True
        self._house = ticks_add(now_ms, o["housekeeping_ms"])
        self._deadline = now_ms

    def __repr__(self):
        return "Node(%r, address=%03x, role=%s)" % (self.identity, self.address, self.role)

    # -- our own messages --------------------------------------------------
    def _next_mid(self):
        self._mid += 1
        return self._mid

    def _enqueue(self, ptype, dest, dest_id, payload, prio, down, now, mid):
        if len(payload) > MAX_MESSAGE:
            raise MeshLocalError("message too big", reason="too_big", size=len(payload))
        msg = message_header(self.identity, dest_id, payload) + payload
        chunks = split(msg, self.frag_size)
        if mid is not None:
            self.queue.reserve_own(len(msg))
        elif not self.queue.fits_relay(len(msg)):
            raise MeshBusy("custody queue full", reason="queue_full")
        wire = self._msgid
        self._msgid = (wire + 1) & 0xFF
        last = len(chunks) - 1
        for i in range(len(chunks)):
            self.queue.push(Item(ptype, self.address, dest, wire, i, i == last, prio, down,
                                 chunks[i], HOP_LIMIT, mid, now))
        if mid is not None:
            self.own[mid] = [len(chunks), now, chunks]
            self.counters["messages_sent"] += 1
        self._dirty = True
        return wire

    def send_up(self, payload, priority, now_ms):
        self._now = now_ms
        if not 0 <= priority < PRIORITIES:
            raise MeshLocalError("priority must be 0..3", reason="priority", priority=priority)
        mid = self._next_mid()
        if self.routes.gateway:
            self.events.append(Delivered(self.identity, bytes(payload), 0, "up"))
            self.events.append(MessageAcked(mid))
            self.counters["delivered"] += 1
            return mid
        best = self.routes.best()               # 0: chosen when first sent
        self._enqueue(DATA, best[0] if best is not None else 0, "", bytes(payload),
                      priority, False, now_ms, mid)
        return mid

    def send_down(self, dest, payload, now_ms, priority=0):
        self._now = now_ms
        if not self.routes.gateway:
            raise MeshLocalError("only a gateway sends downlink", reason="not_gateway")
        if not 0 <= priority < PRIORITIES:
            raise MeshLocalError("priority must be 0..3", reason="priority", priority=priority)
        addr = self.addresses.address(dest)
        if addr == self.address:
            raise MeshLocalError("downlink to myself", reason="no_route", node=dest)
        if not self._alive(addr):
            self.down.next_hop(addr, now_ms)          # MeshLocalError "no_route"
        mid = self._next_mid()
        self._enqueue(DOWN, addr, dest, bytes(payload), priority, True, now_ms, mid)
        return mid

    def ping(self, dest, now_ms):
        """Ping node ``dest`` (identity): a neighbour, a gateway we route
        to, or (at a gateway) a node below; MeshLocalError "no_route"."""
        self._now = now_ms
        addr = self.addresses.address(dest)
        r = self.routes
        if addr == self.address:
            raise MeshLocalError("ping to myself", reason="no_route", node=dest)
        if addr in r.selected and not r.gateway:
            down = False
        elif self._alive(addr):
            down = True
        else:
            self.down.next_hop(addr, now_ms)          # MeshLocalError "no_route"
            down = True
        mid = self._next_mid()
        wire = self._enqueue(PING, addr, dest, b"", 0, down, now_ms, mid)
        self.pings[wire] = [mid, now_ms, dest]
        return mid

    def set_uplink(self, up, quality=255, load=0, now_ms=0):
        self._now = now_ms
        r = self.routes
        want = self.role == "gateway" or (self.role == "auto" and bool(up))
        moved = abs(quality - r.uplink) >= 16 or abs(load - r.load) >= 16
        r.uplink = max(0, min(255, quality))
        r.load = max(0, min(255, load))
        if want != r.gateway:
            r.gateway = want
            r.seq = (r.seq + 1) & 0xFFFF
            if not want:                            # retract ourselves as a gateway
                self._retire.append(Advert(self.address, r.seq, 0, 255, INFINITE, 0, 255, NONE))
            self.trickle.reset(now_ms)
        elif want and moved:
            r.seq = (r.seq + 1) & 0xFFFF
            self.trickle.hear_inconsistent(now_ms)
        self._dirty = True

    # -- time --------------------------------------------------------------
    def poll(self, now_ms):
        self._now = now_ms
        self._dirty = False
        out = []
        if ticks_diff(now_ms, self._house) >= 0:
            self._housekeeping(now_ms)
            self._house = ticks_add(now_ms, self.opt["housekeeping_ms"])
        self._check_timeouts(now_ms)
        if self.trickle.on_tick(now_ms):
            self._queue_advert(now_ms)
        self._sync(now_ms)
        if self.routes.gateway and self.queue.items:
            self._absorb(now_ms)
        for i in range(len(self.links)):
            self._service(i, now_ms, out)
        if self.events:
            out.extend(self.events)
            self.events = []
        self._deadline = self._compute_deadline()
        return out

    def _housekeeping(self, now):
        if self.routes.expire(now):
            self.trickle.hear_inconsistent(now)
        self.routes.refresh(now)                # a gateway's liveness: a new seq
        self._news(now)
        self.down.expire(now)
        self.counters["reassembly_timeouts"] += self.reasm.expire(now)
        keep = self.opt["dedup_ms"]
        for k in [k for k, t in self.seen.items() if ticks_diff(now, t[0]) >= keep]:
            del self.seen[k]
        ttl = self.opt["message_ttl_ms"]
        for mid in [m for m, o in self.own.items() if ticks_diff(now, o[1]) >= ttl]:
            del self.own[mid]
            self.queue.drop_message(mid)
            self.counters["messages_failed"] += 1
            self.events.append(MessageFailed(mid, "expired"))
        flying = [o[0] for st in self.lstate for o in st.outstanding.values()]
        for item in [i for i in self.queue.items if i.mid is None and i not in flying
                     and ticks_diff(now, i.born) >= ttl]:
            self.queue.remove(item)           # relayed, and no way on for an hour
            self.counters["dropped_expired"] += 1
        for w in [w for w, p in self.pings.items() if ticks_diff(now, p[1]) >= 600000]:
            del self.pings[w]
        for gw in [g for g in self.unreachable if g in self.routes.selected]:
            del self.unreachable[gw]
        gone = self.opt["route_ttl_ms"]
        for nb in [n for n, nr in self.neigh.items() if ticks_diff(now, nr.last_heard) > gone]:
            if not any(nb in st.outstanding for st in self.lstate):
                del self.neigh[nb]

    def _news(self, now):
        """A new gateway seq to pass on (``RouteTable.news``): advertise
        within ``seq_hasten_ms`` (a full trickle reset is for route changes)."""
        if self.routes.news:
            self.routes.news = False
            self.trickle.hasten(now, self.opt["seq_hasten_ms"])

    def stats(self, now_ms):
        return node_stats(self, now_ms)
