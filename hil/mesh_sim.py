"""``wum-hil mesh-sim``: a district of concentrators running the REAL mesh
core (``mesh.node.Node``, one per concentrator) over the discrete-event radio
medium (``hil.radio``), with virtual time, deterministic by seed; and the
managed-flooding baseline (``hil.flooding``) on the same scenario and the
same batches, in the same process.

Owns the IO loop a concentrator would run around its ``Node`` (frames from
the medium in, ``poll`` at ``next_deadline()``, ``Transmit`` onto the
medium), the gateway's uplink to the HES (an always-on pipe with an
acknowledgement, unless the scenario takes it down), the downlink of the
HES's acks to each origin, scenario events, and the run's JSON. Must not
re-implement routing or delivery: every frame is the mesh core's.

Hosts (``MeshHost``) carry a concentrator: its ``Node``, its store-and-
forward ``Origin`` (``hil.mesh_sim_origin``), the hourly read of its meters
(``hil.mesh_sim_data``), and on a gateway the acks waiting to go down.
"""

from __future__ import annotations

import hashlib
import logging
import random
import zlib
from collections import deque
from typing import Any

from hil.mesh_sim_data import BatchSource, Hes, RunBatches
from hil.mesh_sim_metrics import CONTRACT, Metrics
from hil.mesh_sim_origin import Busy, Origin
from hil.radio import AirParams, RadioMedium
from mesh import MeshBusy, MeshLocalError
from mesh.actions import Delivered, MessageAcked, MessageFailed, Transmit
from mesh.links import LinkSpec
from mesh.node import Node
from mesh.packet import ACK, ADVERT, BROADCAST
from mesh.secure import MemoryCounterStore

log = logging.getLogger(__name__)

NETWORK_KEY = hashlib.sha256(b"wum mesh-sim district network key").digest()
PIPE_MS = 300                     # gateway <-> HES, one way (LTE)
ACK_TAG = 0xA1                    # simulator's downlink ack: tag, then LEB128 seqs
SWEEP_MS = 300000                 # origins look for batches to resend this often


def encode_ack(seqs: list[int]) -> bytes:
    out = bytearray((ACK_TAG,))
    for s in seqs:
        while True:
            b = s & 0x7F
            s >>= 7
            out.append(b | (0x80 if s else 0))
            if not s:
                break
    return bytes(out)


def decode_ack(data: bytes) -> list[int] | None:
    if not data or data[0] != ACK_TAG:
        return None
    out, v, shift = [], 0, 0
    for b in data[1:]:
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            out.append(v)
            v, shift = 0, 0
        elif shift > 35:
            return None
    return out if shift == 0 else None


READ_WINDOW_S = 2700


def read_offset_ms(node: str) -> int:
    """When after each hour boundary a concentrator reads its meters and
    builds the hour's batches: a fixed minute per node, spread over the
    first 45 minutes (the meters capture the hour's profile row at the
    boundary; reading it later spreads the district's traffic instead of
    every node transmitting at once)."""
    return (30 + zlib.crc32(node.encode()) % (READ_WINDOW_S - 29)) * 1000


class RadioPlan:
    """The scenario's radio as the medium and the mesh core see it."""

    def __init__(self, sc: dict[str, Any]) -> None:
        r = sc["radio"]
        self.kind = r["kind"]
        if self.kind == "wifi":
            self.channel = None
            self.listen = AirParams("wifi", freq_hz=int(r["channel_mhz"] * 1000000),
                                    rate_kbps=r["rate_kbps"])
            self.link = {"kind": "udp"}
            self._air: dict[int, AirParams] = {}
            return
        self.channel = int(round(r["frequency_mhz"] * 1e6))
        self.bw = r["bandwidth_khz"] * 1000
        self.cr = int(r["coding_rate"][2]) - 4
        self.min_sf, self.max_sf = r["min_sf"], r["max_sf"]
        self.preamble = r["preamble"]
        adaptive = self.min_sf < self.max_sf
        self.link = {"kind": "lora", "sf": self.max_sf, "bandwidth": self.bw,
                     "coding_rate": self.cr, "channel": self.channel,
                     "preamble": self.preamble, "adaptive_sf": adaptive, "min_sf": self.min_sf}
        # SF chosen per link needs receivers that demodulate every SF of the
        # range at once (docs/mesh-sim.md, "SF per link").
        self.listen = self.air(self.max_sf, range(self.min_sf, self.max_sf + 1)
                               if adaptive else None)
        self._air = {}

    def air(self, sf: int, sfs: Any = None) -> AirParams:
        p = self._air.get(sf) if sfs is None else None
        if p is None:
            p = AirParams("lora", freq_hz=self.channel, sf=sf, bw_hz=self.bw, cr=self.cr,
                          preamble=self.preamble, sfs=sfs)
            if sfs is None:
                self._air[sf] = p
        return p

    def for_transmit(self, params: dict[str, Any]) -> AirParams:
        if self.kind == "wifi":
            return self.listen
        return self.air(params.get("sf", self.max_sf))


class MeshTransport:
    """``Origin``'s view of a host's mesh node."""

    def __init__(self, host: MeshHost) -> None:
        self.host = host

    def offer(self, payload: bytes, priority: int, now_ms: int) -> int:
        node = self.host.node
        if node is None:
            raise Busy()
        try:
            return int(node.send_up(payload, priority, now_ms))
        except MeshBusy:
            raise Busy() from None


class MeshHost:
    """One concentrator on the medium (see the module docstring)."""

    def __init__(self, run: MeshRun, spec: dict[str, Any]) -> None:
        self.run = run
        self.id = spec["id"]
        self.meters = spec["meters"]
        self.gateway = spec["gateway"]
        self.node: Node | None = None
        self.store = MemoryCounterStore()           # survives restarts, as on flash
        self.rng = random.Random("%s|%s" % (run.seed, self.id))
        self.origin = Origin(run.resend_ms, run.window_bytes)
        self.transport = MeshTransport(self)
        self.uplink = True
        self.txing = False                          # on the air, or holding for the channel
        self.txq: deque[tuple[bytes, AirParams]] = deque()
        self.lbt_since = 0                          # first carrier sense of the head frame
        self.timer: list[Any] | None = None
        self.timer_at = 0
        self.hours_read = 0
        self.acks_out: dict[str, list[int]] = {}     # gateway: origin -> seqs to send down
        self.ack_timer = False
        self.down_mids: dict[int, tuple[str, list[int]]] = {}
        self.offset_ms = read_offset_ms(self.id)

    def _rand(self, lo: int, hi: int) -> int:
        return self.rng.randrange(lo, hi) if hi > lo else lo

    # -- life ----------------------------------------------------------------
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
        r = self.run
        if not up:
            r.medium.set_down(self.id)
            self.node = None
            self.txq.clear()
            self.txing = False
            self.acks_out.clear()
            self.down_mids.clear()
            self.origin.restart(now)
            return
        r.medium.set_up(self.id)
        self.boot(now)
        self.catch_up(now)

    def set_uplink(self, up: bool, now: int) -> None:
        self.uplink = up
        if self.node is not None:
            self.node.set_uplink(up, 255, 0, now)
            self.poll(now)

    # -- the hourly read ---------------------------------------------------------
    def catch_up(self, now: int) -> None:
        """Read every hour whose boundary has passed (a concentrator that was
        down reads the hours it missed when it comes back)."""
        r = self.run
        while self.hours_read < r.sc["hours"] and \
                (self.hours_read + 1) * 3600000 + self.offset_ms <= now:
            h = self.hours_read
            batches = r.batches.batches(self.id, self.meters, h)
            r.metrics.hour_read(self.id, h, batches, now)
            self.origin.add(batches, now)
            self.hours_read += 1
        if self.node is not None:
            self.pump(now)

    def pump(self, now: int) -> None:
        if self.node is not None:
            self.origin.pump(self.transport, now)
            self.poll(now)

    # -- radio ---------------------------------------------------------------------
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
        now = self.run.medium.now_us // 1000
        node.receive(0, rec.frame, rec.rssi, rec.snr, now)
        if node.next_deadline() <= now:
            self.poll(now)

    def on_tx_done(self, end_us: int) -> None:
        self.txing = False
        if self.txq:
            self._next_frame()
        elif self.node is not None:
            now = end_us // 1000
            if self.node.next_deadline() <= now:
                self.poll(now)

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
        if r.plan.kind == "lora" and now - self.lbt_since < r.lbt_max_us and \
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
        ptype = frame[0] >> 5
        r.metrics.tx(self.id, len(frame), ptype in (ACK, ADVERT), now, end, r.plan.channel)

    def _after_cad(self) -> None:
        self.txing = False
        if self.node is not None:
            self._next_frame()

    # -- the node -------------------------------------------------------------------
    def poll(self, now: int) -> None:
        node = self.node
        if node is None:
            return
        for a in node.poll(now):
            if isinstance(a, Transmit):
                self._send(a.frame, self.run.plan.for_transmit(a.params))
            elif isinstance(a, Delivered):
                self._delivered(a, now)
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
        now = self.run.medium.now_us // 1000
        if node.next_deadline() <= now:
            self.poll(now)
        else:
            self._arm(now)

    # -- uplink and acks ---------------------------------------------------------------
    def _delivered(self, a: Delivered, now: int) -> None:
        r = self.run
        if a.kind == "up":
            r.medium.schedule((now + PIPE_MS) * 1000, r.to_hes, self, bytes(a.payload))
            return
        seqs = decode_ack(bytes(a.payload))
        if seqs is None:
            r.stats["bad_acks"] += 1
            return
        self.origin.acked(seqs)
        self.origin.pump(self.transport, now)

    def queue_acks(self, origin: str, seqs: list[int], now: int) -> None:
        """The HES acknowledged ``seqs`` of ``origin`` through this gateway:
        send them down, gathered per origin for ``ack_delay_ms``."""
        if self.node is None:
            return
        if origin == self.id:
            self.origin.acked(seqs)
            self.pump(now)
            return
        self.acks_out.setdefault(origin, []).extend(seqs)
        if not self.ack_timer:
            self.ack_timer = True
            self.run.medium.schedule((now + self.run.ack_delay_ms) * 1000, self._flush_acks)

    def _flush_acks(self) -> None:
        self.ack_timer = False
        node = self.node
        if node is None:
            return
        now = self.run.medium.now_us // 1000
        keep = {}
        for origin, seqs in self.acks_out.items():
            try:
                mid = node.send_down(origin, encode_ack(sorted(set(seqs))), now, 0)
            except (MeshLocalError, MeshBusy):
                keep[origin] = seqs                 # no way down yet: try again later
                continue
            self.down_mids[mid] = (origin, seqs)
        self.acks_out = {}
        if keep:
            self.run.stats["acks_waiting"] += 1
            self.acks_out = keep
            self.ack_timer = True
            self.run.medium.schedule((now + 60000) * 1000, self._flush_acks)
        self.poll(now)


class MeshRun:
    """One scenario run of the mesh: build, ``run()``, then ``result()``."""

    def __init__(self, sc: dict[str, Any], seed: int, source: BatchSource) -> None:
        self.sc = sc
        self.seed = seed
        self.plan = RadioPlan(sc)
        lora = self.plan.kind == "lora"
        self.resend_ms = 1800000 if lora else 300000
        self.window_bytes = 8192 if lora else 65536
        self.ack_delay_ms = 20000 if lora else 1000
        self.medium = RadioMedium.from_scenario(sc, seed, schedule_events=False)
        self.members = [n["id"] for n in sc["nodes"]]
        self.batches: RunBatches = source.run()
        self.hes = Hes(source.keyring(self.members))
        self.metrics = Metrics(sc)
        self.stats = {"bad_acks": 0, "acks_waiting": 0, "lbt_deferrals": 0}
        self.lbt_max_us = self.cad_us = 0
        if lora:
            mtu = LinkSpec.from_dict(self.plan.link).mtu
            self.lbt_max_us = self.plan.air(self.plan.max_sf).toa_us(mtu)
            self.cad_us = 2 * (1 << self.plan.max_sf) * 1000000 // self.plan.bw
        self.hosts = {n["id"]: MeshHost(self, n) for n in sc["nodes"]}
        self.reroute: dict[str, Any] = {}
        self.end_ms = int((sc["hours"] + sc["drain_h"]) * 3600000)

    def now(self) -> int:
        return self.medium.now_us // 1000

    def to_hes(self, gw: MeshHost, sealed: bytes) -> None:
        """A gateway's uplink carried a batch to the HES; the ack comes back
        the same way (unless the gateway or its uplink died meanwhile)."""
        now = self.now()
        key = self.hes.receive(sealed, now, gw.id)
        if key is not None:
            self.medium.schedule((now + PIPE_MS) * 1000, self._ack_at_gateway, gw, key)

    def _ack_at_gateway(self, gw: MeshHost, key: tuple[str, int]) -> None:
        if gw.node is not None and gw.uplink:
            gw.queue_acks(key[0], [key[1]], self.now())

    def _hour(self, host: MeshHost) -> None:
        now = self.now()
        if host.node is not None:
            host.catch_up(now)
        nxt = (host.hours_read + 1) * 3600000 + host.offset_ms
        if host.hours_read < self.sc["hours"]:
            self.medium.schedule(max(nxt, now + 1) * 1000, self._hour, host)

    def _sweep(self) -> None:
        now = self.now()
        for host in self.hosts.values():
            if host.node is not None and host.origin.sweep(now):
                host.pump(now)
        if now + SWEEP_MS < self.end_ms:
            self.medium.schedule((now + SWEEP_MS) * 1000, self._sweep)

    def _event(self, ev: dict[str, Any]) -> None:
        host = self.hosts[ev["node"]]
        now = self.now()
        action = ev["action"]
        if action == "down" and host.node is not None:
            self._watch_reroute(host, now)
            host.power(False, now)
        elif action == "up" and host.node is None:
            host.power(True, now)
        elif action in ("uplink_down", "uplink_up"):
            if action == "uplink_down":
                self._watch_reroute(host, now)
            host.set_uplink(action == "uplink_up", now)

    # -- reroute time (gateway loss) ----------------------------------------------------
    def _watch_reroute(self, gw: MeshHost, now: int) -> None:
        if not gw.gateway or gw.node is None:
            return
        addr = gw.node.address
        affected = [h for h in self.hosts.values() if h is not gw and h.node is not None
                    and (h.node.routes.best() or (None,))[0] == addr]
        watch = {"gateway": gw.id, "at_ms": now, "affected": len(affected), "times_s": {}}
        self.reroute.setdefault("events", []).append(watch)
        self.medium.schedule((now + 5000) * 1000, self._sample_reroute, watch, addr, affected)

    def _sample_reroute(self, watch: dict[str, Any], addr: int, left: list[MeshHost]) -> None:
        now = self.now()
        still = []
        for h in left:
            best = h.node.routes.best() if h.node is not None else None
            if best is not None and best[0] != addr:
                watch["times_s"][h.id] = (now - watch["at_ms"]) / 1000.0
            else:
                still.append(h)
        if still and now - watch["at_ms"] < 4 * 3600000:
            self.medium.schedule((now + 5000) * 1000, self._sample_reroute, watch, addr, still)
        watch["not_rerouted"] = [h.id for h in still]

    # -- running ---------------------------------------------------------------------------
    def run(self) -> None:
        m = self.medium
        for host in self.hosts.values():
            m.attach(host.id, host)
        for host in self.hosts.values():
            host.boot(0)
            m.schedule(3600000 * 1000 + host.offset_ms * 1000, self._hour, host)
        for ev in self.sc["events"]:
            m.schedule(int(ev["at_h"] * 3600e6), self._event, ev)
        m.schedule(SWEEP_MS * 1000, self._sweep)
        m.run_until(self.end_ms * 1000)

    def result(self) -> dict[str, Any]:
        return self.metrics.result(self.hes.first, self.end_ms)


def run_scenario(sc: dict[str, Any], seed: int, baseline: bool = True,
                 source: BatchSource | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the mesh (and the baseline) on a validated scenario; -> (the
    contract's JSON object, details for benchmarks and tests)."""
    from hil.flooding import FloodRun

    source = source or BatchSource(seed)
    mesh = MeshRun(sc, seed, source)
    mesh.run()
    out = mesh.result()
    details: dict[str, Any] = {"mesh": mesh}
    if baseline:
        flood = FloodRun(sc, seed, source)
        flood.run()
        out["baseline"] = flood.result()
        details["baseline"] = flood
    assert all(k in out for k in CONTRACT)
    return out, details
