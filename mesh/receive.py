"""The receiving half of ``mesh.node.Node``: frames in, checked and
dispatched (acks to ``mesh.transmit``, adverts to the route table, data to
local delivery or to the custody queue), acks queued for every data frame.

Owns what a node does with an authenticated frame. Must not know sockets,
clocks or payloads; a mixin of ``Node`` using its attributes (see
``mesh/node.py``). Portable (MicroPython).

Data frames: delivered here when we are the destination (an active gateway
for uplink DATA), through the reassembler; otherwise relayed: hop limit,
duplicate suppression by (type, destination, origin, message id, index: a
fragment re-addressed to another gateway is a new transfer), MTU, custody
room ("busy" ack when full: the sender keeps it) and a route ("refused" ack
when none: the sender tries another neighbour) are checked before the
fragment is taken into custody and acknowledged.
"""

from mesh import MeshBusy, MeshLocalError, MeshProtocolError
from mesh.actions import Delivered, PongReceived
from mesh.custody import Item
from mesh.duty import ticks_diff
from mesh.fragment import COMPLETE, CONFLICT, DUPLICATE, fingerprint
from mesh.packet import (
    ACK,
    ADVERT,
    BROADCAST,
    DATA,
    DOWN,
    PING,
    PONG,
    TAG_LEN,
    Header,
    parse_message,
)
from mesh.routing import unpack_adverts

FRAME_OVERHEAD = 12 + TAG_LEN         # data header (never long, mesh.packet) + tag


class Neighbour:
    __slots__ = ("link", "rssi", "snr", "snr_avg", "last_heard", "confirmed", "frames",
                 "misses", "asked")

    def __init__(self, link, now_ms):
        self.link = link
        self.rssi = None
        self.snr = None
        self.snr_avg = None           # EWMA (1/4) of the SNR its frames arrive with
        self.last_heard = now_ms
        self.confirmed = 0            # our epoch once it acked a frame of ours in it
        self.frames = 0
        self.misses = 0               # ack timeouts in a row
        self.asked = False            # a sync advert was asked for it since its last ack


class Receiver:
    # -- input -------------------------------------------------------------
    def receive(self, link_no, frame, rssi=None, snr=None, now_ms=0):
        if not 0 <= link_no < len(self.links):
            raise MeshLocalError("no such link", reason="link", link=link_no)
        self._now = now_ms
        self.counters["frames_in"] += 1
        try:
            h, hlen = Header.from_bytes(frame)
        except MeshProtocolError:
            self.refused["malformed"] += 1
            return None
        if h.rx != self.address and h.rx != BROADCAST:
            self.counters["overheard"] += 1
            return None
        tx = h.tx
        peer = self.sec.peers.get(tx)
        before = peer[0] if peer is not None else None
        try:
            h, payload = self.sec.open(frame, h, hlen)
        except MeshProtocolError as e:
            reason = e.fields.get("reason", "malformed")
            self._refuse(reason)
            if reason == "unsynced":  # we lost its epoch (we restarted): our advert
                self._want_sync(now_ms)   # shows ours is new, so it tells us its own
            return None
        self._dirty = True            # only a frame we accepted changes what is due
        nr = self.neigh.get(tx)
        if nr is None:
            nr = self.neigh[tx] = Neighbour(link_no, now_ms)
        if before is not None and self.sec.peers[tx][0] != before:
            nr.confirmed = 0          # it rebooted: it lost our epoch, which
            nr.asked = False          # only an ACK or ADVERT of ours carries
            self._want_sync(now_ms)
        nr.link = link_no
        nr.rssi = rssi
        nr.snr = snr
        if snr is not None:
            nr.snr_avg = snr if nr.snr_avg is None else nr.snr_avg + (snr - nr.snr_avg) / 4
        nr.last_heard = now_ms
        nr.frames += 1
        t = h.ptype
        if t == ACK:
            self._on_ack(h, now_ms)
        elif t == ADVERT:
            self._on_advert(h, payload, now_ms)
        else:
            self._on_data(h, payload, link_no, now_ms)
        return tx

    def _refuse(self, reason):
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def _on_advert(self, h, payload, now):
        try:
            n = payload[1] if len(payload) >= 2 and payload[0] == 0 else 0
            ident = bytes(payload[2:2 + n]).decode()
            if n < 1 or len(payload) < 2 + n:
                raise MeshProtocolError("advert identity", reason="malformed")
            rest = payload[2 + n:]
            advs = unpack_adverts(rest) if rest else []
        except (MeshProtocolError, UnicodeError):
            self._refuse("malformed")
            return
        if not self.addresses.learn(h.tx, ident):
            self._refuse("address_conflict")
            return
        r = self.routes
        r.heard(h.tx, now)
        changed = r.hear_frame(h.tx, advs, now) if advs else False
        if not advs and r.best() is not None:
            changed = True            # a neighbour without a route: tell it ours soon
        if changed:
            self.trickle.hear_inconsistent(now)
        elif r.news:                  # a new gateway seq, or a neighbour behind on one
            self._news(now)
        else:
            self.trickle.hear_consistent()

    def _ack(self, link_no, h, status):
        self.lstate[link_no].acks.append((h.tx, h.counter, status))
        if status == 1:
            self.counters["busy_out"] += 1
        elif status == 2:
            self.counters["refused_out"] += 1

    def _on_data(self, h, payload, link_no, now):
        t = h.ptype
        upward = not h.down
        if (t == DATA and self.routes.gateway) or (t != DATA and h.dest == self.address):
            if upward:
                self.down.learn(h.origin, h.tx, now)
            self._local(h, payload, link_no, now)
            return
        if h.hops == 0:
            self._ack(link_no, h, 0)
            self.counters["hop_limit"] += 1
            return
        key = (t << 44) | (h.dest << 32) | (h.origin << 20) | (h.msgid << 10) | h.index
        fp = fingerprint(payload)
        seen = self.seen.get(key)
        if seen is not None and seen[1] == fp:    # a copy (our ack was lost): ack, drop
            self._ack(link_no, h, 0)
            self.counters["duplicates"] += 1
            return
        if len(payload) + FRAME_OVERHEAD > self.mtu:
            self._ack(link_no, h, 2)
            return
        if not self.queue.fits_relay(len(payload)):
            self._ack(link_no, h, 1)
            return
        item = Item(t, h.origin, h.dest, h.msgid, h.index, h.last, h.prio, h.down, payload,
                    h.hops - 1, None, now)
        nb = self.next_hop(item, now)
        if nb is None or nb == h.tx:
            self.counters["no_route"] += 1
            self._ack(link_no, h, 2)
            return
        self.queue.push(item)
        self.seen[key] = (now, fp)    # same key, other bytes: the origin reused the id
        self._ack(link_no, h, 0)
        if upward:
            self.down.learn(h.origin, h.tx, now)

    def _local(self, h, payload, link_no, now):
        t = h.ptype
        key = (t << 20) | (h.origin << 8) | h.msgid
        try:
            status, msg = self.reasm.add(key, h.index, h.last, payload, now)
        except MeshBusy:
            self._ack(link_no, h, 1)
            return
        self._ack(link_no, h, 0)
        if status == DUPLICATE:
            self.counters["duplicates"] += 1
        elif status == CONFLICT:
            self.counters["reassembly_conflicts"] += 1
        if status != COMPLETE:
            return
        try:
            origin_id, dest_id, data = parse_message(msg)
        except MeshProtocolError:
            self.reasm.forget_done(key)
            self.counters["corrupt"] += 1
            return
        if not self.addresses.learn(h.origin, origin_id):
            self.counters["address_conflicts"] += 1
        if t != DATA and dest_id != self.identity:
            self.counters["misaddressed"] += 1
            return
        self._arrived(t, h, origin_id, data, now)

    def _arrived(self, t, h, origin_id, data, now):
        if t == DATA or t == DOWN:
            self.counters["delivered"] += 1
            self.events.append(Delivered(origin_id, data, h.msgid, "up" if t == DATA else "down"))
        elif t == PING:
            try:
                self._enqueue(PONG, h.origin, origin_id, bytes((h.msgid,)), 0, not h.down,
                              now, None)
            except MeshBusy:
                self.counters["busy_out"] += 1
        elif len(data) == 1:
            p = self.pings.pop(data[0], None)
            if p is not None:
                self.events.append(PongReceived(p[2], ticks_diff(now, p[1]), p[0]))

    def _absorb(self, now):
        """Became a gateway: uplink fragments in custody arrive here."""
        for item in [i for i in self.queue.items if i.ptype == DATA]:
            self.queue.remove(item)
            key = (DATA << 20) | (item.origin << 8) | item.msgid
            if item.mid is not None:
                self._handed_over(item)
            try:
                status, msg = self.reasm.add(key, item.index, item.last, item.payload, now)
            except MeshBusy:
                continue
            if status == COMPLETE:
                try:
                    origin_id, _, data = parse_message(msg)
                except MeshProtocolError:
                    self.counters["corrupt"] += 1
                    continue
                self.counters["delivered"] += 1
                self.events.append(Delivered(origin_id, data, item.msgid, "up"))

