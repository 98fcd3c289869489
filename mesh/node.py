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
    node.next_deadline() -> tick | None   when poll must run next at the
        latest (besides after every receive/send call)
    node.stats(now_ms) -> dict        neighbours, routes, parent, gateway,
        cost, queues, duty use, counters and refused frames by reason

``stats(now_ms)`` (JSON-ready; what ``wum status --json`` and ``wum mesh
neighbours|routes|stats`` show)::

    {"identity": "DC-0003", "address": 1234, "role": "node", "gateway_active": false,
     "gateway": "DC-0001" | null, "parent": "DC-0002" | null, "backup": ... | null,
     "cost": 412 | null,                      # COST_SCALE (128) = one perfect hop
     "neighbours": [{"id": "DC-0002", "address": 77, "link": 0, "kind": "lora",
                     "quality": 0.93,         # delivery ratio estimate 0..1
                     "etx": 1.07, "rssi": -97.0, "snr": 4.5, "last_heard_s": 12.3}],
     "routes": [{"gateway": "DC-0001", "via": "DC-0002", "cost": 412, "hops": 3,
                 "seq": 17}],                 # one per known gateway, best first
     "downward": 41,                          # learnt downward routes
     "queue": {"frames": 3, "bytes": 640, "own_messages": 1},
     "duty": [{"link": 0, "band": "g1", "used_ms": 1210, "budget_ms": 36000,
               "remaining": 0.97}],
     "counters": {"frames_in": .., "frames_out": .., "acks_out": .., "retries": ..,
                  "delivered": .., "forwarded": .., "duplicates": .., ...},
     "refused": {"bad_tag": 0, "replay": 0, "malformed": 0, ...}}

Neighbour ids are identity strings when known (roster or the identity a
neighbour puts in its adverts), else "#%03x" of the address.

An IO loop: after every ``receive``/``send_*`` and whenever ``now`` reaches
``next_deadline()``, call ``poll(now)`` and carry out its Transmits in order.
"""

from mesh import MeshLocalError

ROLES = ("node", "gateway", "auto")

DEFAULTS = {
    "max_retries": 8,                 # unacked attempts of one frame before it is given up
    "backoff_ms": 500,                # first retry delay; doubles, plus jitter in [0, delay)
    "backoff_max_ms": 60000,
    "queue_bytes": 32768,             # custody queue for relayed fragments
    "own_bytes": 131072,              # our own messages waiting for their first hop
    "reassembly_timeout_ms": 600000,  # a message's fragments must all arrive within
    "dedup_ms": 1800000,              # remembered fragments / completed messages
    "message_ttl_ms": 3600000,        # our message given up ("expired") after this
    "trickle_imin_ms": None,          # default 2 s on UDP-only nodes, 30 s with LoRa
    "trickle_doublings": 8,
    "trickle_k": 2,
    "route_ttl_ms": 3 * 3600000,
}


class Node:
    """See the module docstring. Early version: the API is final, the
    implementation lands in the following commits."""

    def __init__(self, identity, role, network_key, links, counter_store, rand=None,
                 members=None, now_ms=0, **options):
        if role not in ROLES:
            raise MeshLocalError("unknown role", reason="role", role=role)
        if len(network_key) != 32:
            raise MeshLocalError("network key must be 32 bytes", reason="key")
        self.identity = identity
        self.role = role
        self.options = dict(DEFAULTS)
        for k in options:
            if k not in DEFAULTS:
                raise MeshLocalError("unknown node option", reason="option", option=k)
            self.options[k] = options[k]

    def receive(self, link_no, frame, rssi=None, snr=None, now_ms=0):
        raise NotImplementedError

    def send_up(self, payload, priority, now_ms):
        raise NotImplementedError

    def send_down(self, dest, payload, now_ms, priority=0):
        raise NotImplementedError

    def ping(self, dest, now_ms):
        raise NotImplementedError

    def set_uplink(self, up, quality=255, load=0, now_ms=0):
        raise NotImplementedError

    def poll(self, now_ms):
        raise NotImplementedError

    def next_deadline(self):
        raise NotImplementedError

    def stats(self, now_ms):
        raise NotImplementedError
