"""The managed-flooding baseline of ``wum-hil mesh-sim``: Meshtastic's
FloodingRouter as its firmware behaves, carrying the very same sealed
batches over the same medium, for comparison with the mesh.

Owns the baseline's packets and rules. Must not know the mesh core (it is
what the mesh is compared with); it shares the origins' store-and-forward
rule (``hil.mesh_sim_origin``), the HES and the measurements with the mesh run.

The rules (Meshtastic firmware: FloodingRouter, RadioInterface, ReliableRouter):

* every packet is broadcast with a 16-byte header (to, from, id: 4 bytes
  each; flags with hop limit, want-ack and hop start; channel hash; next
  hop; relay node); uplink batches go to "any gateway" as broadcasts and
  every node, gateways too, rebroadcasts them, as Meshtastic's MQTT
  gateways do; a gateway also passes them to the HES;
* a node rebroadcasts a packet it has not seen, with the hop limit minus
  one, after an SNR-weighted contention delay (client role, the default:
  ``2 * CWmax * slot + random(0, 2^CW) * slot``, CW mapped from SNR -20..15 dB
  onto 3..8, so distant receivers speak first); hearing the packet again
  before its turn cancels its own rebroadcast (duplicate cancel);
* hop limit 7 (Meshtastic's maximum: its default 3 cannot reach a 6-hop
  district); packets already seen are dropped;
* the origin asks for an acknowledgement: hearing any node rebroadcast its
  packet is the implicit ack; without one it retransmits up to 3 times
  (``2 * airtime + (2^CW + 2 * CWmax + 2^((CWmin + CWmax) / 2)) * slot + 4.5 s``);
* before sending, listen before talk: a node hearing a preamble backs off
  ``random(0, 2^CW) * slot`` (CW by the channel utilisation of the last
  minute); on LoRa it never exceeds its EU868 duty cycle (it defers);
* a 16-packet transmit queue: a rebroadcast that finds it full is dropped;
* every node announces itself (NodeInfo, 40 bytes) every 3 hours: the
  baseline's control traffic;
* the slot: ``8.5 * 2^SF / BW(kHz) + 7.6`` ms on LoRa, 1 ms on Wi-Fi.

Batches are cut into fragments of the mesh's frame size (the same MTU, the
same SF: the broadcast SF of the scenario) behind a 6-byte application
header (kind, batch seq, index, count); the HES's acks come back to each
origin flooded from the gateway, gathered per origin like the mesh's.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections import deque
from typing import Any

from hil.mesh_sim_data import BatchSource
from hil.mesh_sim_origin import Busy
from hil.mesh_sim_run import DistrictRun, Host, encode_ack
from mesh.airtime import max_payload
from mesh.duty import DutyCycleBudget

HEADER = struct.Struct(">IIIBBBB")          # to, from, id, flags, channel, next hop, relay
HEADER_KEY = struct.Struct(">III")
APP_LEN = 6                                  # kind, batch id (3 bytes), index, count
BROADCAST = 0xFFFFFFFF
UP, DOWN, NODEINFO = 1, 2, 3
HOP_LIMIT = 7
CW_MIN, CW_MAX = 3, 8
SNR_MIN, SNR_MAX = -20.0, 15.0
RETRANSMISSIONS = 3
TX_QUEUE = 16
PROCESSING_MS = 4500
NODEINFO_MS = 3 * 3600000
NODEINFO_LEN = 40
SEEN_MS = 1800000
WIFI_MTU = 1200
UDP_SLOT_MS = 1.0


def number(node: str) -> int:
    return zlib.crc32(node.encode()) & 0x7FFFFFFF


def packet(to: int, frm: int, pid: int, hops: int, want_ack: bool, relay: int,
           body: bytes) -> bytes:
    flags = (hops & 7) | (8 if want_ack else 0) | (HOP_LIMIT << 5)
    return HEADER.pack(to, frm, pid, flags, 8, 0, relay & 0xFF) + body


def _map(v: float, lo: float, hi: float, out_lo: int, out_hi: int) -> int:
    """Arduino's map(), clamped."""
    v = min(max(v, lo), hi)
    return int(out_lo + (v - lo) * (out_hi - out_lo) / (hi - lo))


class _Queued:
    __slots__ = ("prio", "order", "key", "frame", "not_before", "own")

    def __init__(self, prio: int, order: int, key: tuple[int, int], frame: bytes,
                 not_before: int, own: bool) -> None:
        self.prio = prio
        self.order = order
        self.key = key
        self.frame = frame
        self.not_before = not_before
        self.own = own


class FloodTransport:
    def __init__(self, host: FloodHost) -> None:
        self.host = host

    def offer(self, payload: bytes, priority: int, now_ms: int) -> int:
        return self.host.send_batch(payload, priority, now_ms)


class FloodHost(Host):
    """One node of the baseline (see the module docstring)."""

    run: FloodRun

    def __init__(self, run: DistrictRun, spec: dict[str, Any]) -> None:
        super().__init__(run, spec)
        self.num = number(self.id)
        self.up = True
        self.rng = random.Random("flood|%s|%s" % (run.seed, self.id))
        self.transport = FloodTransport(self)
        self.duty = DutyCycleBudget()
        self.pid = self.rng.randrange(1 << 31)
        self.seen: dict[tuple[int, int], int] = {}
        self.queue: list[_Queued] = []
        self.relaying: dict[tuple[int, int], _Queued] = {}    # rebroadcasts waiting their turn
        self.order = 0
        self.txing = False
        self.timer: list[Any] | None = None
        self.timer_at = 0
        self.unacked: dict[tuple[int, int], list[Any]] = {}   # own key -> [frame, tries, token]
        self.batches: dict[int, int] = {}                     # token -> fragments outstanding
        self.token = 0
        self.parts: dict[tuple[int, int], list[Any]] = {}     # gateway reassembly
        self.heard: deque[tuple[int, int]] = deque()          # (end ms, toa ms): utilisation
        self.heard_ms = 0                                     # their sum

    @property
    def alive(self) -> bool:
        return self.up

    def power(self, up: bool, now: int) -> None:
        m = self.run.medium
        self.up = up
        if up:
            m.set_up(self.id)
            m.listen(self.id, self.run.plan.listen)
            return
        m.set_down(self.id)
        for store in (self.queue, self.relaying, self.unacked, self.batches, self.parts,
                      self.acks_out):
            store.clear()
        self.txing = False
        self.origin.restart(now)

    # -- sending --------------------------------------------------------------
    def _next_pid(self) -> int:
        self.pid = (self.pid + 1) & 0xFFFFFFFF
        return self.pid

    def send_batch(self, payload: bytes, prio: int, now: int) -> int:
        if not self.up:
            raise Busy()
        if len(self.queue) >= TX_QUEUE:
            raise Busy()
        chunk = self.run.mtu - HEADER.size - APP_LEN
        count = -(-len(payload) // chunk)
        if count > 255:
            raise Busy()
        self.token += 1
        tag = (self.token & 0xFFFFFF).to_bytes(3, "big")
        for i in range(count):
            body = bytes((UP,)) + tag + bytes((i, count)) + payload[i * chunk:(i + 1) * chunk]
            pid = self._next_pid()
            frame = packet(BROADCAST, self.num, pid, HOP_LIMIT, True, self.num, body)
            self.unacked[(self.num, pid)] = [frame, 0, self.token, prio]
            self._enqueue(prio, (self.num, pid), frame, now, True)
        self.batches[self.token] = count
        self._service(now)
        return self.token

    def _enqueue(self, prio: int, key: tuple[int, int], frame: bytes, not_before: int,
                 own: bool) -> bool:
        if not own and len(self.queue) >= TX_QUEUE:
            self.run.stats["queue_drops"] += 1
            return False
        self.order += 1
        q = _Queued(prio, self.order, key, frame, not_before, own)
        self.queue.append(q)
        if not own:
            self.relaying[key] = q
        return True

    def slot_ms(self) -> float:
        return self.run.slot_ms

    def _util(self, now: int) -> float:
        h = self.heard
        while h and h[0][0] < now - 60000:
            self.heard_ms -= h.popleft()[1]
        return min(1.0, self.heard_ms / 60000.0)

    def _service(self, now: int) -> None:
        if not self.up or self.txing:
            return
        best = None
        soonest = None
        for q in self.queue:
            if q.not_before <= now:
                if best is None or (q.prio, q.order) < (best.prio, best.order):
                    best = q
            elif soonest is None or q.not_before < soonest:
                soonest = q.not_before
        if best is None:
            if soonest is not None:
                self._arm(soonest)
            return
        r = self.run
        slot = self.slot_ms()
        if r.medium.receiving(self.id):            # listen before talk
            cw = _map(self._util(now), 0.0, 1.0, CW_MIN, CW_MAX)
            best.not_before = now + 1 + int(self.rng.randrange(0, 1 << cw) * slot)
            self._arm(best.not_before)
            return
        toa_us = r.plan.listen.toa_us(len(best.frame))
        if r.plan.kind == "lora":
            toa_ms = -(-toa_us // 1000)
            if not self.duty.can_send(r.plan.channel, toa_ms, now):
                best.not_before = self.duty.next_allowed(r.plan.channel, toa_ms, now)
                r.stats["duty_deferrals"] += 1
                self._arm(best.not_before)
                return
            self.duty.record(r.plan.channel, toa_ms, now)
        self.queue.remove(best)
        if not best.own:
            self.relaying.pop(best.key, None)
        start = r.medium.now_us
        end = r.medium.transmit(self.id, best.frame, r.plan.listen, toa_us=toa_us, relisten=True)
        if end is None:
            return
        self.txing = True
        kind = best.frame[HEADER.size]
        r.metrics.tx(self.id, len(best.frame), kind == NODEINFO, start, end, r.plan.channel)
        u = self.unacked.get(best.key) if best.own else None
        if u is not None:
            u[1] += 1
            wait = 2 * toa_us // 1000 + int(
                ((1 << CW_MAX) + 2 * CW_MAX + (1 << ((CW_MIN + CW_MAX) // 2))) * slot) \
                + PROCESSING_MS
            r.medium.schedule(end + wait * 1000, self._retransmit, best.key)

    def _arm(self, at: int) -> None:
        if self.timer is not None:
            if self.timer_at <= at:
                return
            self.run.medium.cancel(self.timer)
        self.timer_at = at
        self.timer = self.run.medium.schedule(max(at, self.run.now() + 1) * 1000, self._wake)

    def _wake(self) -> None:
        self.timer = None
        self._service(self.run.now())

    def on_tx_done(self, end_us: int) -> None:
        self.txing = False
        self._service(end_us // 1000)

    def _retransmit(self, key: tuple[int, int]) -> None:
        u = self.unacked.get(key)
        if u is None or not self.up:
            return
        now = self.run.now()
        if u[1] > RETRANSMISSIONS:
            self._own_done(key)
            return
        self.run.stats["retransmissions"] += 1
        self._enqueue(u[3], key, u[0], now, True)
        self._service(now)

    def _own_done(self, key: tuple[int, int]) -> None:
        u = self.unacked.pop(key)
        token = u[2]
        left = self.batches.get(token)
        if left is None:
            return
        if left <= 1:
            del self.batches[token]
            self.origin.handed(token, self.run.now())
            self.origin.pump(self.transport, self.run.now())
        else:
            self.batches[token] = left - 1

    # -- receiving ---------------------------------------------------------------
    def accepts(self, frame: bytes) -> bool:
        """The medium asks: a packet already seen, with no rebroadcast of
        ours waiting and not ours, changes nothing here; skip working out
        its reception (it still held the receiver)."""
        if not self.up or len(frame) < HEADER.size:
            return True
        _, frm, pid = HEADER_KEY.unpack_from(frame)
        key = (frm, pid)
        return key not in self.seen or key in self.relaying or frm == self.num

    def on_frame(self, rec: Any) -> None:
        if not self.up:
            return
        now = self.run.now()
        toa = (rec.end_us - rec.start_us) // 1000
        self.heard.append((now, toa))
        self.heard_ms += toa
        if not rec.ok or len(rec.frame) < HEADER.size + 1:
            return
        to, frm, pid, flags, _, _, _ = HEADER.unpack_from(rec.frame)
        key = (frm, pid)
        if frm == self.num:
            if key in self.unacked:                   # our packet relayed: implicit ack
                self._own_done(key)
            return
        if key in self.seen:
            q = self.relaying.pop(key, None)          # duplicate cancel
            if q is not None:
                self.queue.remove(q)
                self.run.stats["cancelled"] += 1
            return
        self.seen[key] = now
        body = rec.frame[HEADER.size:]
        kind = body[0]
        if kind == UP and len(body) <= APP_LEN:
            return                                    # not one of ours: nothing to relay
        if kind == UP and self.gateway and self.uplink:
            self._reassemble(frm, body, now)
        elif kind == DOWN and to == self.num:
            self.acked_down(bytes(body[1:]), now)
            return
        hops = flags & 7
        if hops == 0 or to == self.num:
            return
        cw = _map(rec.snr, SNR_MIN, SNR_MAX, CW_MIN, CW_MAX)
        slot = self.slot_ms()
        delay = int(2 * CW_MAX * slot + self.rng.randrange(0, 1 << cw) * slot)
        frame = bytes(rec.frame[:12]) + bytes(((flags & 0xF8) | (hops - 1),)) + \
            bytes(rec.frame[13:15]) + bytes((self.num & 0xFF,)) + bytes(body)
        if self._enqueue(1, key, frame, now + delay, False):      # relays: first come, first served
            self._service(now)

    def _reassemble(self, frm: int, body: bytes, now: int) -> None:
        tag = int.from_bytes(body[1:4], "big")
        idx, count = body[4], body[5]
        k = (frm, tag)
        p = self.parts.get(k)
        if p is None:
            p = self.parts[k] = [count, {}, now]
        p[1][idx] = bytes(body[APP_LEN:])
        p[2] = now
        if len(p[1]) == p[0]:
            del self.parts[k]
            self.run.uplink(self, b"".join(p[1][i] for i in range(p[0])), now)

    # -- acks down -------------------------------------------------------------------
    def send_acks(self, acks: dict[str, list[int]], now: int) -> None:
        chunk = self.run.mtu - HEADER.size - 1
        for origin, seqs in acks.items():
            body = bytes((DOWN,)) + encode_ack(sorted(set(seqs)))
            if len(body) > chunk:
                body = body[:chunk]               # what fits; the rest is acked again later
            pid = self._next_pid()
            frame = packet(number(origin), self.num, pid, HOP_LIMIT, False, self.num, body)
            self._enqueue(0, (self.num, pid), frame, now, True)
        self._service(now)

    def nodeinfo(self) -> None:
        now = self.run.now()
        if self.up:
            pid = self._next_pid()
            frame = packet(BROADCAST, self.num, pid, HOP_LIMIT, False, self.num,
                           bytes((NODEINFO,)) + bytes(NODEINFO_LEN - 1))
            self._enqueue(3, (self.num, pid), frame, now, True)
            self._service(now)
        if now + NODEINFO_MS < self.run.end_ms:
            self.run.medium.schedule((now + NODEINFO_MS) * 1000, self.nodeinfo)

    def housekeeping(self, now: int) -> None:
        for k in [k for k, t in self.seen.items() if now - t > SEEN_MS]:
            del self.seen[k]
        for k in [k for k, p in self.parts.items() if now - p[2] > 3600000]:
            del self.parts[k]


class FloodRun(DistrictRun):
    """The baseline over a scenario, measured like ``hil.mesh_sim_host.MeshRun``."""

    host_class = FloodHost
    hosts: dict[str, FloodHost]

    def __init__(self, sc: dict[str, Any], seed: int, source: BatchSource) -> None:
        super().__init__(sc, seed, source)
        plan = self.plan
        if plan.kind == "lora":
            self.mtu = max_payload(plan.max_sf)
            self.slot_ms = 8.5 * (1 << plan.max_sf) / (plan.bw / 1000) + 7.6
            plan.listen = plan.air(plan.max_sf)      # one SF: every packet is a broadcast
        else:
            self.mtu = WIFI_MTU
            self.slot_ms = UDP_SLOT_MS
        self.stats.update({"queue_drops": 0, "cancelled": 0, "retransmissions": 0,
                           "duty_deferrals": 0})

    def start(self) -> None:
        for host in self.hosts.values():
            self.medium.listen(host.id, self.plan.listen)
            self.medium.schedule(host.rng.randrange(0, NODEINFO_MS) * 1000, host.nodeinfo)

    def housekeeping(self, host: Any, now: int) -> None:
        host.housekeeping(now)
