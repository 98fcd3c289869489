"""The mesh side of ``wum-hil mesh-sim``: every concentrator runs the REAL
mesh core (``mesh.node.Node``) behind the IO loop a concentrator would run
around it, on the discrete-event radio medium.

Owns that IO loop: frames from the medium into ``Node.receive``, ``poll``
whenever ``next_deadline()`` comes, each ``Transmit`` onto the medium (a
small queue in front of the radio, as ``drivers.lora.link``; on LoRa a
listen-before-talk check first, as a CAD would), ``Delivered`` batches onto
the gateway's uplink, the HES's acks down with ``send_down``; and the time a
gateway's loss takes to reroute. Must not re-implement routing, delivery or
the duty cycle: every frame on the air is the mesh core's.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from typing import Any

from hil.mesh_sim_data import BatchSource
from hil.mesh_sim_origin import Busy
from hil.mesh_sim_run import DistrictRun, Host, encode_ack
from hil.radio import AirParams
from mesh import MeshBusy, MeshLocalError
from mesh.actions import Delivered, MessageAcked, MessageFailed, Transmit
from mesh.links import LinkSpec
from mesh.node import Node
from mesh.packet import ACK, ADVERT, BROADCAST
from mesh.secure import MemoryCounterStore

NETWORK_KEY = hashlib.sha256(b"wum mesh-sim district network key").digest()
ACK_RETRY_MS = 60000              # a gateway with no way down to an origin tries again
REROUTE_SAMPLE_MS = 5000


class MeshTransport:
    """``Origin``'s view of a host's mesh node."""

    def __init__(self, host: MeshHost) -> None:
        self.host = host

    def offer(self, payload: bytes, priority: int, now_ms: int) -> int:
        node = self.host.node
        if node is None:
            raise Busy()
        try:
            mid = int(node.send_up(payload, priority, now_ms))
        except MeshBusy:
            raise Busy() from None
        self.host.kick(now_ms)
        return mid


class MeshHost(Host):
    """One concentrator and its ``Node`` (see the module docstring)."""

    run: MeshRun

    def __init__(self, run: DistrictRun, spec: dict[str, Any]) -> None:
        super().__init__(run, spec)
        self.node: Node | None = None
        self.store = MemoryCounterStore()           # the epoch survives restarts, as on flash
        self.rng = random.Random("%s|%s" % (run.seed, self.id))
        self.transport = MeshTransport(self)
        self.txing = False                          # on the air, or holding for the channel
        self.txq: deque[tuple[bytes, AirParams]] = deque()
        self.lbt_since = 0                          # first carrier sense of the head frame
        self.timer: list[Any] | None = None
        self.timer_at = 0
        self.down_mids: dict[int, tuple[str, list[int]]] = {}

    @property
    def alive(self) -> bool:
        return self.node is not None

    def _rand(self, lo: int, hi: int) -> int:
        return self.rng.randrange(lo, hi) if hi > lo else lo

    # -- life ----------------------------------------------------------------------
    def boot(self, now: int) -> None:
        r = self.run
        self.node = Node(self.id, "auto" if self.gateway else "node", NETWORK_KEY,
                         [r.plan.link], self.store, rand=self._rand, members=r.members,
                         now_ms=now, **r.sc["mesh_options"])
        if self.gateway:
            self.node.set_uplink(self.uplink, 255, 0, now)
        r.medium.listen(self.id, r.plan.listen)
        self.poll(now)

    def power(self, up: bool, now: int) -> None:
        if up:
            self.run.medium.set_up(self.id)
            self.boot(now)
            return
        self.run.medium.set_down(self.id)
        self.node = None                            # RAM gone; the archive (origin) stays
        self.txq.clear()
        self.txing = False
        self.acks_out.clear()
        self.down_mids.clear()
        self.origin.restart(now)

    def set_uplink(self, up: bool, now: int) -> None:
        self.uplink = up
        if self.node is not None:
            self.node.set_uplink(up, 255, 0, now)
            self.poll(now)

    def kick(self, now: int) -> None:
        """Something was handed to the node: let it act now."""
        if self.node is not None and self.node.next_deadline() <= now:
            self.poll(now)

    # -- radio ----------------------------------------------------------------------
    def accepts(self, frame: bytes) -> bool:
        """The medium asks: a frame whose receiver field (docs/mesh.md §2.1)
        names another node is dropped unread by ``Node.receive`` before any
        crypto; skip working out its reception."""
        node = self.node
        if node is None or len(frame) < 6:
            return True
        rx = ((frame[2] & 0x0F) << 8) | frame[3]
        return rx == node.address or rx == BROADCAST

    def on_frame(self, rec: Any) -> None:
        node = self.node
        if node is None or not rec.ok:
            return
        now = self.run.now()
        node.receive(0, rec.frame, rec.rssi, rec.snr, now)
        if node.next_deadline() <= now:
            self.poll(now)

    def on_tx_done(self, end_us: int) -> None:
        self.txing = False
        if self.txq:
            self._next_frame()
        else:
            self.kick(end_us // 1000)

    def _send(self, frame: bytes, params: AirParams) -> None:
        self.txq.append((frame, params))
        if not self.txing:
            self.lbt_since = self.run.medium.now_us
            self._next_frame()

    def _next_frame(self) -> None:
        """Put the head of the queue on the air; on LoRa first listen before
        talk as a CAD would (a frame it could demodulate on the air: back
        off a random part of an MTU frame's time, at most one such time in
        all, then send anyway, so the node's ack timer still holds)."""
        r = self.run
        m = r.medium
        if not self.txq or self.node is None:
            return
        now = m.now_us
        if r.lbt_max_us and now - self.lbt_since < r.lbt_max_us and \
                m.activity(self.id, r.plan.listen, now, now + r.cad_us):
            self.txing = True
            r.stats["lbt_deferrals"] += 1
            m.schedule(now + r.cad_us + self.rng.randrange(r.lbt_max_us // 4), self._after_cad)
            return
        frame, params = self.txq.popleft()
        self.lbt_since = now
        end = m.transmit(self.id, frame, params, relisten=True)
        if end is None:
            return
        self.txing = True
        r.metrics.tx(self.id, len(frame), frame[0] >> 5 in (ACK, ADVERT), now, end,
                     r.plan.channel)

    def _after_cad(self) -> None:
        self.txing = False
        if self.node is not None:
            self._next_frame()

    # -- the node ---------------------------------------------------------------------
    def poll(self, now: int) -> None:
        node = self.node
        if node is None:
            return
        plan = self.run.plan
        for a in node.poll(now):
            if isinstance(a, Transmit):
                self._send(a.frame, plan.listen if plan.kind == "wifi"
                           else plan.air(a.params.get("sf", plan.max_sf)))
            elif isinstance(a, Delivered):
                if a.kind == "up":
                    self.run.uplink(self, bytes(a.payload), now)
                else:
                    self.acked_down(bytes(a.payload), now)
            elif isinstance(a, MessageAcked):
                if self.down_mids.pop(a.message_id, None) is None:
                    self.origin.handed(a.message_id, now)
            elif isinstance(a, MessageFailed):
                back = self.down_mids.pop(a.message_id, None)
                if back is not None:
                    self.queue_acks(back[0], back[1], now)
                else:
                    self.origin.failed(a.message_id, now)
                    self.origin.pump(self.transport, now)
        self._arm(now)

    def pump(self, now: int) -> None:
        if self.node is not None:
            self.origin.pump(self.transport, now)

    def _arm(self, now: int) -> None:
        node = self.node
        if node is None:
            return
        d = node.next_deadline()
        if d <= now:
            d = now + 1
        if self.timer is not None:
            if self.timer_at <= d:
                return
            self.run.medium.cancel(self.timer)
        self.timer_at = d
        self.timer = self.run.medium.schedule(d * 1000, self._wake)

    def _wake(self) -> None:
        self.timer = None
        node = self.node
        if node is None:
            return
        now = self.run.now()
        if node.next_deadline() <= now:
            self.poll(now)
        else:
            self._arm(now)

    # -- acks down ----------------------------------------------------------------------
    def send_acks(self, acks: dict[str, list[int]], now: int) -> None:
        node = self.node
        assert node is not None
        keep = {}
        for origin, seqs in acks.items():
            try:
                mid = node.send_down(origin, encode_ack(sorted(set(seqs))), now, 0)
            except (MeshLocalError, MeshBusy):
                keep[origin] = seqs                 # no way down yet: try again later
                continue
            self.down_mids[mid] = (origin, seqs)
        if keep:
            self.run.stats["acks_waiting"] += 1
            for origin, seqs in keep.items():
                self.acks_out.setdefault(origin, []).extend(seqs)
            if not self.ack_timer:
                self.ack_timer = True
                self.run.medium.schedule((now + ACK_RETRY_MS) * 1000, self._flush_acks)
        self.poll(now)


class MeshRun(DistrictRun):
    """The mesh over a scenario: ``run()``, then ``result()``; ``reroute``
    holds what each gateway loss took to reroute."""

    host_class = MeshHost
    hosts: dict[str, MeshHost]

    def __init__(self, sc: dict[str, Any], seed: int, source: BatchSource) -> None:
        super().__init__(sc, seed, source)
        self.stats.update({"acks_waiting": 0, "lbt_deferrals": 0})
        self.lbt_max_us = self.cad_us = 0
        if self.plan.kind == "lora":
            mtu = LinkSpec.from_dict(self.plan.link).mtu
            self.lbt_max_us = self.plan.air(self.plan.max_sf).toa_us(mtu)
            self.cad_us = 2 * (1 << self.plan.max_sf) * 1000000 // self.plan.bw
        self.reroute: list[dict[str, Any]] = []

    def start(self) -> None:
        for host in self.hosts.values():
            host.boot(0)

    def housekeeping(self, host: Any, now: int) -> None:
        host.kick(now)

    # -- reroute time (a gateway lost) ----------------------------------------------------
    def before_down(self, gw: Any, now: int) -> None:
        """Note the nodes routing to ``gw`` and sample until each routes to
        another gateway: the reroute time."""
        if not gw.gateway or gw.node is None:
            return
        addr = gw.node.address
        affected = [h for h in self.hosts.values() if h is not gw and h.node is not None
                    and (h.node.routes.best() or (None,))[0] == addr]
        watch: dict[str, Any] = {"gateway": gw.id, "at_h": now / 3600000.0,
                                 "affected": len(affected), "rerouted_s": {},
                                 "not_rerouted": [h.id for h in affected]}
        self.reroute.append(watch)
        self.medium.schedule((now + REROUTE_SAMPLE_MS) * 1000, self._sample, watch, addr, now,
                             affected)

    def _sample(self, watch: dict[str, Any], addr: int, since: int,
                left: list[MeshHost]) -> None:
        now = self.now()
        still = []
        for h in left:
            best = h.node.routes.best() if h.node is not None else None
            if best is not None and best[0] != addr:
                watch["rerouted_s"][h.id] = (now - since) / 1000.0
            else:
                still.append(h)
        watch["not_rerouted"] = [h.id for h in still]
        if still and now - since < 4 * 3600000:
            self.medium.schedule((now + REROUTE_SAMPLE_MS) * 1000, self._sample, watch, addr,
                                 since, still)
