"""The sending half of ``mesh.node.Node``: per-link service (acks first,
then adverts, then custody items by priority), next-hop choice, ack
timeouts with retries and backoff, duty-cycle deferral.

Owns when and to whom a frame goes. Must not know sockets or clocks (ticks
in), nor payloads. A mixin of ``Node``: it uses the node's attributes
(``links``, ``sec``, ``duty``, ``routes``, ``down``, ``queue``, ``neigh``,
``counters`` ...) documented in ``mesh/node.py``. Portable (MicroPython).

Per link, one frame at a time on LoRa (half duplex: the link is busy for the
frame's time on air, and holds a single unacknowledged data frame); on UDP
one unacknowledged data frame per neighbour. A LoRa frame is sent only if
the sub-band's budget (``mesh.duty``) allows its time on air now; otherwise
the link waits until ``next_allowed`` (it defers, it never exceeds). Data
frames keep a tenth of the budget free for acks and adverts.
"""

from mesh import MeshLocalError
from mesh.actions import MessageAcked, MessageFailed, Transmit
from mesh.custody import Item
from mesh.duty import ticks_add, ticks_diff
from mesh.packet import (
    ACK,
    ADVERT,
    BROADCAST,
    COMMON_LEN,
    DATA,
    DATA_EXTRA,
    DOWN,
    HOP_LIMIT,
    TAG_LEN,
    Header,
)
from mesh.routing import pack_adverts

ACK_FRAME = 15          # long ACK header (11) + tag
DATA_HEADER = COMMON_LEN + DATA_EXTRA   # 12: data-like frames are never long
SYNC_MISSES = 2         # unanswered attempts before a sync advert is asked for
UNSYNC_MISSES = 8       # ... before a neighbour is no longer taken to have our epoch
ACK_RESERVE = 10        # data leaves a tenth of the duty budget to acks and adverts


class LinkState:
    __slots__ = ("free_at", "wait_until", "acks", "advert", "outstanding")

    def __init__(self, now_ms):
        self.free_at = now_ms         # busy on the air until this tick (LoRa)
        self.wait_until = None        # duty-cycle deferral of the frame in hand
        self.acks = []                # [(dest, counter, status)] to send first
        self.advert = None            # payload of an advert to broadcast
        self.outstanding = {}         # neighbour -> [item, counter, deadline]


class Transmitter:
    # -- per link ----------------------------------------------------------
    def _service(self, i, now, out):
        link = self.links[i]
        st = self.lstate[i]
        while ticks_diff(now, st.free_at) >= 0:
            if st.acks:
                dest, ctr, status = st.acks.pop(0)
                sf = self._sf(i, dest)
                if not self._air(i, ACK_FRAME, now, False, sf):
                    self.counters["acks_skipped"] += 1    # no budget: the sender retries
                    continue
                h = Header(ACK, self.address, dest, acked=ctr, status=status)
                self._emit(i, self.sec.seal(h, b""), dest, now, out, sf)
                self.counters["acks_out"] += 1
                continue
            if st.advert is not None:
                payload = st.advert
                st.advert = None
                if not self._air(i, 8 + len(payload) + TAG_LEN, now):
                    self.counters["adverts_skipped"] += 1  # trickle says it again later
                    continue
                h = Header(ADVERT, self.address, BROADCAST)
                self._emit(i, self.sec.seal(h, payload), BROADCAST, now, out)
                self.counters["adverts_out"] += 1
                self._sync_due = None         # it carried our epoch to all who hear us
                self._told = self.sec.epoch
                continue
            if st.wait_until is not None:
                if ticks_diff(now, st.wait_until) < 0:
                    return
                st.wait_until = None
            pick = self._pick(i, now)
            if pick is None:
                return
            if self.sec.next_epoch() != self._told:
                # a new epoch (start, counter wrap) is told in an advert
                # before the first data frame sealed under it
                self._told = self.sec.next_epoch()
                self._queue_advert(now)
                continue
            item, nb = pick
            size = DATA_HEADER + len(item.payload) + TAG_LEN
            if size > link.mtu:
                self.queue.remove(item)
                self._give_up(item, "too_big")
                continue
            sf = self._sf(i, nb)
            if not self._air(i, size, now, True, sf):
                return
            h = Header(item.ptype, self.address, nb, hops=item.hops, origin=item.origin,
                       dest=item.dest, msgid=item.msgid, prio=item.prio, last=item.last,
                       down=item.down, index=item.index)
            frame = self.sec.seal(h, item.payload)
            item.attempts += 1
            if item.attempts > 1:
                self.counters["retries"] += 1
            wait = (link.toa_ms(len(frame), sf) if link.duty_cycled else 0) + link.ack_timeout_ms
            st.outstanding[nb] = [item, h.counter, ticks_add(now, wait)]
            self._emit(i, frame, nb, now, out, sf)
            self.counters["data_out"] += 1

    def _sf(self, i, nb):
        link = self.links[i]
        if not link.adaptive_sf:
            return None
        nr = self.neigh.get(nb)
        return link.sf_for(nr.snr_avg if nr is not None else None)

    def _air(self, i, size, now, data=False, sf=None):
        """True if link ``i`` may put ``size`` bytes on the air now; else
        (for data) set the link's duty deferral and return False. A data frame must leave
        1/ACK_RESERVE of the budget unused, so a busy relay can still
        acknowledge what it receives (and its senders do not take its
        silence for death)."""
        link = self.links[i]
        if not link.duty_cycled:
            return True
        toa = link.toa_ms(size, sf)
        if data:
            toa += self.duty.budget_ms(link.channel) // ACK_RESERVE
        if self.duty.can_send(link.channel, toa, now):
            return True
        if data:
            self.lstate[i].wait_until = self.duty.next_allowed(link.channel, toa, now)
            self.counters["duty_deferrals"] += 1
        return False

    def _emit(self, i, frame, dest, now, out, sf=None):
        link = self.links[i]
        toa = 0
        if link.duty_cycled:
            toa = link.toa_ms(len(frame), sf)
            self.duty.record(link.channel, toa, now)
            self.lstate[i].free_at = ticks_add(now, toa)
            self.airtime_ms += toa
        out.append(Transmit(i, frame, dest, link.params(toa, sf)))
        self.counters["frames_out"] += 1
        self.bytes_out += len(frame)

    def next_deadline(self):
        """When ``poll`` must run next at the latest: now if anything came
        in since the last poll, else what that poll computed."""
        if self._dirty or self.events:
            return self._now
        return self._deadline

    def _compute_deadline(self):
        now = self._now
        best = ticks_diff(self._house, now)
        d = ticks_diff(self.trickle.next_event_ms(), now)
        if d < best:
            best = d
        work = bool(self.queue.items)
        for st in self.lstate:
            for o in st.outstanding.values():
                d = ticks_diff(o[2], now)
                if d < best:
                    best = d
            if work or st.acks or st.advert is not None:
                d = ticks_diff(st.free_at, now)
                if st.wait_until is not None:
                    d = max(d, ticks_diff(st.wait_until, now))
                if 0 < d < best:
                    best = d
        for item in self.queue.items:
            d = ticks_diff(item.due, now)
            if 0 < d < best:
                best = d
        if self._sync_due is not None:
            d = ticks_diff(self._sync_due, now)
            if d < best:
                best = d
        return ticks_add(now, max(best, 0))

    # -- choice ------------------------------------------------------------
    def _pick(self, i, now):
        st = self.lstate[i]
        lora = self.links[i].duty_cycled
        if lora and st.outstanding:
            return None
        for item in self.queue.items:
            if ticks_diff(now, item.due) < 0:
                continue
            nb = self.next_hop(item, now)
            if nb is None:
                item.due = ticks_add(now, self.opt["backoff_ms"])
                continue
            nr = self.neigh.get(nb)
            if nr is None or nr.link != i or nb in st.outstanding:
                continue
            if self._sync_due is not None and nr.confirmed != self.sec.epoch:
                continue                      # it may lack our epoch: the sync advert first
            return item, nb
        return None

    def next_hop(self, item, now):
        """Neighbour to hand ``item`` to (may re-address an uplink item to
        another gateway when its own is no longer reachable); None if none."""
        avoid = item.avoid
        item.avoid = None
        if item.down or item.ptype == DOWN:
            if self._alive(item.dest) and item.dest != avoid:
                return item.dest
            try:
                nb = self.down.next_hop(item.dest, now)
            except MeshLocalError:
                return None
            # through a neighbour that stopped acking: wait until it is heard again
            # (a restart speaks up at once) or the origin's uplink teaches another way
            return nb if nb != avoid and self._alive(nb) else None
        if item.ptype != DATA and self._alive(item.dest):
            return item.dest                  # ping / pong to a neighbour
        r = self.routes
        if r.gateway:
            return None
        sel = r.selected.get(item.dest)
        if sel is not None and sel[0] != avoid:
            self.unreachable.pop(item.dest, None)
            return sel[0] if sel[0] in self.neigh else None
        alt = r.alternative(avoid, item.dest)
        if alt is not None and alt[1] == item.dest:
            return alt[0] if alt[0] in self.neigh else None
        if item.ptype != DATA:
            return None                       # pings keep their destination
        if item.dest:
            # Its gateway is out of reach. Often only for a moment (a route
            # starved by the feasibility condition until the gateway answers a
            # request): hold before sending the rest of a message elsewhere.
            since = self.unreachable.get(item.dest)
            if since is None:
                self.unreachable[item.dest] = now
                return None
            if ticks_diff(now, since) < self.reroute_hold_ms:
                return None
        if alt is None:
            return None
        nb, gw = alt
        if item.dest:
            self.counters["rerouted"] += 1
        self._readdress(item, gw, now)
        return nb if nb in self.neigh else None

    def _readdress(self, item, gw, now):
        """Send ``item``'s whole message to gateway ``gw``: its queued
        fragments, and (our own message, already partly handed over toward
        the old gateway) again the fragments that left, so the new gateway
        gets all of it."""
        old = item.dest
        flying = []                           # on the air toward the old gateway now
        for st in self.lstate:
            for o in st.outstanding.values():
                flying.append(o[0])
        queued = set()
        for other in self.queue.items:
            if other.ptype == DATA and other.origin == item.origin and \
                    other.msgid == item.msgid and other.dest == old:
                other.dest = gw
                if other not in flying:
                    queued.add(other.index)
        item.dest = gw
        o = self.own.get(item.mid) if item.mid is not None else None
        if o is None or not old:
            return
        chunks = o[2]
        for i in range(len(chunks)):
            if i not in queued:
                self.queue.push(Item(DATA, self.address, gw, item.msgid, i, i == len(chunks) - 1,
                                     item.prio, False, chunks[i], HOP_LIMIT, item.mid, now))
                o[0] += 1
                self.counters["resent"] += 1

    def _alive(self, nb):
        if nb not in self.neigh:
            return False
        link = self.routes.links.get(nb)
        return link is None or not link.dead()

    # -- outcomes ----------------------------------------------------------
    def _check_timeouts(self, now):
        for i in range(len(self.links)):
            st = self.lstate[i]
            if not st.outstanding:
                continue
            for nb in list(st.outstanding):
                item, _, deadline = st.outstanding[nb]
                if ticks_diff(now, deadline) < 0:
                    continue
                del st.outstanding[nb]
                self.counters["ack_timeouts"] += 1
                self._missed(self.neigh.get(nb), now)
                if self.routes.tx_result(nb, False, now):
                    self.trickle.hear_inconsistent(now)
                if item.attempts >= self.opt["max_retries"]:
                    if self.queue.remove(item):
                        self._give_up(item, "retries")
                else:
                    self.queue.retry_later(item, now, self.opt["backoff_ms"],
                                           self.opt["backoff_max_ms"], self.rand)

    def _on_ack(self, h, now):
        tx = h.tx
        for i in range(len(self.links)):
            o = self.lstate[i].outstanding.get(tx)
            if o is not None and o[1] == h.acked:
                break
        else:
            self.counters["acks_stray"] += 1
            return
        del self.lstate[i].outstanding[tx]
        item = o[0]
        nr = self.neigh[tx]
        nr.confirmed = self.sec.epoch
        nr.misses = 0
        nr.asked = False
        if self.routes.tx_result(tx, True, now):
            self.trickle.hear_inconsistent(now)
        if h.status == 0:
            if self.queue.remove(item):
                self._handed_over(item)
            return
        if h.status == 1:                     # busy: keep it, same way, later
            item.busy += 1
            self.counters["busy_in"] += 1
            self.queue.retry_later(item, now, self.opt["backoff_ms"],
                                   self.opt["backoff_max_ms"], self.rand, item.busy)
        else:                                 # refused: try another neighbour now
            item.avoid = tx
            self.counters["refused_in"] += 1
            if item.ptype == DATA and self.routes.refused_by(item.dest, tx):
                self.trickle.hear_inconsistent(now)
            item.due = now

    # -- epoch sync (docs/mesh.md §3.2) --------------------------------------
    def _missed(self, nr, now):
        """An ack timeout toward ``nr``. After SYNC_MISSES in a row from a
        neighbour not known to hold our epoch, ask once for a sync advert
        (once per neighbour until it acks: a dead one cannot make us chatter);
        after UNSYNC_MISSES no longer take it to hold our epoch."""
        if nr is None:
            return
        nr.misses += 1
        if nr.misses >= UNSYNC_MISSES:
            nr.confirmed = 0
        if nr.misses >= SYNC_MISSES and nr.confirmed != self.sec.epoch and not nr.asked:
            nr.asked = True
            self._want_sync(now)

    def _want_sync(self, now):
        """Advertise soon, unsuppressed, so neighbours learn our epoch: within
        ``sync_jitter_ms`` (random, spreading the neighbours of a restarted
        node), but never sooner than ``sync_gap_ms`` after the last sync
        advert. Any advert sent before then does the job."""
        if self._sync_due is not None:
            return
        due = ticks_add(now, self.rand(0, self.sync_jitter_ms + 1))
        if self._sync_last is not None:
            earliest = ticks_add(self._sync_last, self.opt["sync_gap_ms"] or 2 * self.trickle.imin)
            if ticks_diff(earliest, due) > 0:
                due = earliest
        self._sync_due = due
        self._dirty = True

    def _sync(self, now):
        if self._sync_due is not None and ticks_diff(now, self._sync_due) >= 0:
            self._sync_due = None
            self._sync_last = now
            self.counters["sync_adverts"] += 1
            self._queue_advert(now)

    def _handed_over(self, item):
        if item.mid is None:
            self.counters["forwarded"] += 1
            return
        o = self.own.get(item.mid)
        if o is None:
            return
        o[0] -= 1
        if o[0] == 0:
            del self.own[item.mid]
            self.events.append(MessageAcked(item.mid))

    def _give_up(self, item, reason):
        if item.mid is None:
            self.counters["dropped_" + reason] = self.counters.get("dropped_" + reason, 0) + 1
            return
        if item.mid in self.own:
            del self.own[item.mid]
            self.queue.drop_message(item.mid)
            self.events.append(MessageFailed(item.mid, reason))

    def _queue_advert(self, now):
        budget = 255
        for i in range(len(self.links)):
            if self.links[i].duty_cycled:
                budget = min(budget, self.duty.remaining_255(self.links[i].channel, now))
        advs = self.routes.adverts(budget) + self._retire
        self._retire = []
        ident = self.identity.encode()
        head = bytes((0, len(ident))) + ident
        for i in range(len(self.links)):
            room = (self.links[i].mtu - 8 - TAG_LEN - len(head)) // 13
            self.lstate[i].advert = head + pack_adverts(advs[:max(room, 0)])
