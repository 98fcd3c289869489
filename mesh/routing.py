"""Routing toward gateways: per-neighbour link estimates, and the route
table choosing a parent (and a ready backup) from gateway adverts.

Owns route choice only: no radio, no clock (ticks in, may wrap), no packet
header, no timers (``mesh.trickle`` paces adverts). The advert codec is
``mesh.advert`` and the link estimate ``mesh.etx`` (both re-exported here);
downward routes are ``mesh.downward``.
Addresses are node addresses in 16-bit fields. Portable (MicroPython).

Cost via neighbour n to gateway g (integers, COST_SCALE = one perfect hop)::

    cost = etx(n) + advertised_cost(n, g) + HOP_PENALTY + budget_penalty(budget(n))
    gateway's own cost = (255 - uplink) + load

A node keeps its parent toward a gateway while that route stays feasible and
within SWITCH_HYSTERESIS (half a perfect hop) of the best one, so ETX noise
does not flap routes (RPL's MRHOF keeps a parent-switch threshold likewise,
RFC 6719 §3.3).

Loop freedom (a Babel-style feasibility condition, RFC 8966 §3.5.1, the role
RPL's rank plays in RFC 6550 §8.2): per gateway a node keeps its feasibility
distance FD = (seq, smallest cost it has had at that seq). A neighbour's
route is usable only if its seq is newer than FD's, or equal with an
advertised cost strictly below FD's cost (an unfeasible update from the
current parent is ignored and a new seq requested, RFC 8966 §3.5.4, so a
rising cost does not starve the route); never via a neighbour whose
advertised parent is this node; never at HOP_LIMIT hops or more. A node left
with no feasible route retracts (cost 0xFFFF) with REQ set; REQ travels up
(each node forwards it once per seq) and the gateway answers with a new seq.
Uplink packets name their gateway and each relay forwards by ``next_hop(gw)``.

Gateway liveness (a route whose gateway's seq stopped moving dies, a
tombstone keeps it dead): ``mesh.liveness``, a base of ``RouteTable``.
"""

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[no-untyped-def]
        return x

from mesh.advert import (  # noqa: F401  (re-exported: the advert codec)
    ADVERT_LEN,
    FLAG_REQ,
    HOP_LIMIT,
    INFINITE,
    NONE,
    VERSION,
    Advert,
    pack_adverts,
    seq_newer,
    unpack_adverts,
)
from mesh.duty import ticks_diff
from mesh.etx import COST_SCALE, FAIL_LIMIT, MAX_LINK_COST, Link  # noqa: F401  (re-exported)
from mesh.liveness import GatewayLiveness

HOP_PENALTY = const(32)
SWITCH_HYSTERESIS = const(64)
RESELECT_DELTA = const(8)


def _same(a, b):
    """Two adverts that route alike: flags aside, budgets alike above the
    penalty's threshold (a busy neighbour's budget byte moves all the time)."""
    return (a.seq == b.seq and a.cost == b.cost and a.hops == b.hops and a.parent == b.parent
            and min(a.budget, 64) == min(b.budget, 64))


def gateway_cost(uplink, load):
    return (255 - uplink) + load


def budget_penalty(budget):
    """Nothing above a quarter of the budget left, then up to 4 hops' worth."""
    return (64 - budget) * 8 if budget < 64 else 0


class RouteTable(GatewayLiveness):
    """One node's routes to every gateway it hears of.

    ``gateway`` True makes this node a gateway (it routes to itself at
    ``gateway_cost(uplink, load)``). Expiry: a neighbour unheard (no advert,
    no ack) for ``neighbour_ttl_ms`` is forgotten with its entries; an entry
    not refreshed for ``route_ttl_ms`` goes only if its neighbour is also
    unheard that long (keep both above a few trickle Imax).
    """

    def __init__(self, address, now_ms, gateway=False, uplink=255, load=0,
                 route_ttl_ms=3 * 3600000, neighbour_ttl_ms=3 * 3600000,
                 live_ms=0, refresh_ms=0):
        self.address = address
        self.gateway = gateway
        self.uplink = uplink
        self.load = load
        self.seq = 0                  # our advert seq, when a gateway
        self.route_ttl_ms = route_ttl_ms
        self.neighbour_ttl_ms = neighbour_ttl_ms
        self.links = {}               # neighbour -> Link
        self.entries = {}             # gw -> {neighbour: [Advert, heard tick]}
        self.live_ms = live_ms        # a route's seq unmoved this long: gateway dead (0: off)
        self.refresh_ms = refresh_ms  # a gateway bumps its seq this often (0: never)
        self._bumped = now_ms         # tick of our last seq bump (a gateway)
        self._now = now_ms            # tick of the latest input
        self.live = {}                # gw -> [newest seq heard of it, tick it came]
        self.fd = {}                  # gw -> [seq, cost, tick seq came]: feasibility
                                      # distance; cost -1: a tombstone (seq stale)
        self.selected = {}            # gw -> (neighbour, cost, Advert)
        self.requests = {}            # gw -> seq of a REQ to send (or forward)
        self.retract = {}             # gw -> seq of a retraction to send once
        self.refused = 0              # adverts refused as infeasible or looping
        self.stale = False            # an input of the choice moved since _select_all
        self.news = False             # a route took a newer seq (the caller clears it)
        self._cands = {}              # gw -> _candidates(gw) while no input moves

    # -- input -------------------------------------------------------------
    def hear_frame(self, neighbour, adverts, now_ms):
        """Every advert of one frame from ``neighbour``, routes chosen once
        (and only if something they depend on moved since they were last
        chosen: most adverts repeat what was heard); True if inconsistent
        (as ``hear``)."""
        changed = False
        for a in adverts:
            if self.hear(neighbour, a, now_ms, False):
                changed = True
        if self.stale and self._select_all():
            changed = True
        return changed

    def hear(self, neighbour, advert, now_ms, select=True):
        """An advert heard from ``neighbour``; True if it is inconsistent
        (a route changed, or a REQ must be answered): reset the trickle.
        ``select`` False leaves choosing routes to the caller."""
        if neighbour == self.address:
            return False
        self._now = now_ms
        self._revive(neighbour, now_ms)
        gw = advert.gateway
        if gw == self.address and self.gateway:
            if advert.flags & FLAG_REQ or advert.cost == INFINITE:
                # a neighbour without our route (a retraction, a request): our
                # advert is due soon, with a new seq unless ours is already
                # newer than the one it knows (a request with a stale seq
                # taken as consistent left the gateway silent for good)
                if not seq_newer(self.seq, advert.seq):
                    self._bump(advert.seq, now_ms)
                return True
            if seq_newer(advert.seq, self.seq):        # our seq from before a restart
                self._bump(advert.seq, now_ms)
                return True
            return seq_newer(self.seq, advert.seq)    # it holds an older seq: speak up
        changed = False
        if advert.flags & FLAG_REQ:
            mine = self.selected.get(gw)
            if mine is not None and seq_newer(mine[2].seq, advert.seq):
                changed = True                         # we hold the answer: say it soon
            elif gw not in self.requests and (advert.parent == self.address or
                                              advert.cost == INFINITE):
                # forward it up, once per seq: a request travels from child to
                # parent toward the gateway (or from a neighbour left without
                # a route); siblings do not flood it through the district
                self.requests[gw] = advert.seq
                changed = True
        mine = self.selected.get(gw)
        if mine is not None and mine[0] != neighbour and advert.cost != INFINITE and \
                seq_newer(mine[2].seq, advert.seq):
            # it is behind on the gateway's seq (and can take ours: we do not
            # route through it): not consistent, pass the seq on (RFC 6206
            # §4.2: older news heard is an inconsistency; counted consistent,
            # it suppressed the very adverts that carry the liveness seq)
            self.news = True
        if self._hold(gw, neighbour, advert, now_ms):
            if gw not in self.requests:
                self.requests[gw] = advert.seq         # ask the gateway for a new seq
                changed = True
            return changed
        if advert.cost != INFINITE:
            seen = self.live.get(gw)
            if seen is None or seq_newer(advert.seq, seen[0]):
                self.live[gw] = [advert.seq, now_ms]   # its gateway lived lately
        per = self.entries.setdefault(gw, {})
        old = per.get(neighbour)
        if old is None or not _same(old[0], advert):
            self.stale = True
            self._cands = {}
        per[neighbour] = [advert, now_ms]
        if not self.feasible(gw, neighbour, advert):
            self.refused += 1
            fd = self.fd.get(gw)
            if fd is not None and fd[1] < 0 and seq_newer(fd[0], advert.seq) and \
                    advert.cost != INFINITE and gw not in self.requests:
                # a seq older than our tombstone's: its gateway restarted and
                # counts from 0 again; ask it for one newer than ours
                self.requests[gw] = fd[0]
                changed = True
        if not select:
            return changed
        return self._select_all() or changed

    def _revive(self, neighbour, now_ms):
        link = self.links.get(neighbour)
        if link is None or link.dead():                # new, or heard again: usable again
            if link is None:
                link = self.links[neighbour] = Link(now_ms)
            self.stale = True
            self._cands = {}
        link.on_heard(now_ms)

    def refused_by(self, gw, neighbour):
        """``neighbour`` answered it cannot route toward ``gw``: forget its
        entry for ``gw`` until it advertises one again; True if routes changed."""
        per = self.entries.get(gw)
        if per is None or neighbour not in per:
            return False
        del per[neighbour]
        if not per:
            del self.entries[gw]
        return self._select_all()

    def _hold(self, gw, neighbour, advert, now_ms):
        """RFC 8966 §3.5.4: an unfeasible update from the selected neighbour,
        same seq, higher cost, MAY be ignored. We keep its previous advert
        (refreshed) so the route does not starve on ETX noise, and request a
        new seq (§3.8.2.2); loop freedom is untouched (the update is not used)."""
        cur = self.selected.get(gw)
        if cur is None or cur[0] != neighbour or advert.cost == INFINITE:
            return False
        if advert.parent == self.address or advert.hops + 1 >= HOP_LIMIT:
            return False
        fd = self.fd.get(gw)
        if fd is None or advert.seq != fd[0] or advert.cost < fd[1]:
            return False
        entry = self.entries.get(gw, {}).get(neighbour)
        if entry is None:
            return False
        entry[1] = now_ms
        return True

    def heard(self, neighbour, now_ms):
        """An authenticated advert from ``neighbour``, whatever it holds."""
        if neighbour == self.address:
            return
        self._revive(neighbour, now_ms)

    def tx_result(self, neighbour, acked, now_ms):
        """A unicast to ``neighbour`` was acked or not; True if the parent
        changed (acks stopped: the backup takes over at once)."""
        self._now = now_ms
        link = self.links.get(neighbour)
        if link is None:
            return False
        was = link.dead()
        link.on_tx(acked, now_ms)
        c = link.cost()
        if link.dead() == was and -RESELECT_DELTA < c - link.mark < RESELECT_DELTA:
            return False                  # costs barely moved: the choice stands
        link.mark = c
        return self._select_all()

    def expire(self, now_ms):
        """Forget stale neighbours and entries, and routes whose gateway's
        seq stopped moving (see the module docstring); True if a route
        changed."""
        self._now = now_ms
        gone = self._stale_gateways(now_ms)
        for n in list(self.links):
            if ticks_diff(now_ms, self.links[n].last_heard) > self.neighbour_ttl_ms:
                del self.links[n]
                gone = True
        for gw in list(self.entries):
            per = self.entries[gw]
            for n in list(per):
                # an entry lives while its neighbour is heard (adverts or acks):
                # trickle may keep a consistent neighbour quiet for hours
                link = self.links.get(n)
                if link is None or (ticks_diff(now_ms, per[n][1]) > self.route_ttl_ms and
                                    ticks_diff(now_ms, link.last_heard) > self.route_ttl_ms):
                    del per[n]
                    gone = True
            if not per:
                del self.entries[gw]
        return self._select_all() if gone else False

    # -- choice ------------------------------------------------------------
    def feasible(self, gw, neighbour, advert):
        link = self.links.get(neighbour)
        if link is None or link.dead() or advert.cost == INFINITE:
            return False
        if advert.parent == self.address or advert.hops + 1 >= HOP_LIMIT:
            return False
        fd = self.fd.get(gw)
        if fd is None or seq_newer(advert.seq, fd[0]):
            return True
        return advert.seq == fd[0] and advert.cost < fd[1]

    def _candidates(self, gw):
        """Feasible (cost via it, neighbour, advert) toward ``gw``, cheapest
        first: ``feasible``, ``Link.cost`` and ``budget_penalty`` inlined
        (the node's hottest loop), kept until an input moves."""
        out = self._cands.get(gw)
        if out is not None:
            return out
        out = []
        links = self.links
        me = self.address
        fd = self.fd.get(gw)
        for n, (adv, _) in self.entries.get(gw, {}).items():
            link = links.get(n)
            cost = adv.cost
            if link is None or link.fails >= FAIL_LIMIT or cost == INFINITE or \
                    adv.parent == me or adv.hops + 1 >= HOP_LIMIT:
                continue
            if fd is not None and not seq_newer(adv.seq, fd[0]) and \
                    not (adv.seq == fd[0] and cost < fd[1]):
                continue
            prr = link.prr
            c = (MAX_LINK_COST if prr <= 0 else min(MAX_LINK_COST, COST_SCALE * 256 // prr)) \
                + cost + HOP_PENALTY
            b = adv.budget
            if b < 64:
                c += (64 - b) * 8
            out.append((min(c, INFINITE - 1), n, adv))
        out.sort()
        self._cands[gw] = out
        return out

    def _select_all(self):
        self.stale = False
        self._cands = {}
        before = self._summary()
        for gw in list(self.fd):
            if gw not in self.entries:                 # nobody left to ask
                if gw in self.selected:
                    del self.selected[gw]
                    self.retract[gw] = self.fd[gw][0]
                if self.fd[gw][1] >= 0:                # a tombstone stays (expire)
                    del self.fd[gw]
                    self.live.pop(gw, None)
                self.requests.pop(gw, None)
        for gw in self.entries:
            cands = self._candidates(gw)
            if not cands:
                if gw in self.selected:
                    self._lose(gw)
                continue
            cost, n, adv = cands[0]
            cur = self.selected.get(gw)
            if cur is not None and cur[0] != n:
                for c in cands:               # hysteresis: no flapping on ETX noise
                    if c[1] == cur[0]:
                        if c[0] <= cost + SWITCH_HYSTERESIS:
                            cost, n, adv = c
                        break
            self.selected[gw] = (n, cost, adv)
            self.retract.pop(gw, None)
            fd = self.fd.get(gw)
            if fd is None or seq_newer(adv.seq, fd[0]):
                self.fd[gw] = [adv.seq, cost, self._now]
                self.news = True                       # a new seq: pass it on soon
                if gw in self.requests and seq_newer(adv.seq, self.requests[gw]):
                    del self.requests[gw]              # answered
            elif cost < fd[1]:
                fd[1] = cost
        self._cands = {}
        return self._summary() != before

    def _lose(self, gw):
        # No feasible route left: retract once, ask for a new seq until one comes.
        del self.selected[gw]
        seq = self.fd[gw][0]
        self.retract[gw] = seq
        self.requests[gw] = seq

    def _summary(self):
        return [(gw, s[0], s[2].hops) for gw, s in sorted(self.selected.items())]

    # -- output ------------------------------------------------------------
    def best(self):
        """(gateway, parent, cost) of the cheapest route, or None. A gateway
        node answers (itself, None, its own cost)."""
        if self.gateway:
            return (self.address, None, gateway_cost(self.uplink, self.load))
        best = None
        for gw, (n, cost, _) in self.selected.items():
            if best is None or (cost, gw) < (best[2], best[0]):
                best = (gw, n, cost)
        return best

    def parent(self):
        b = self.best()
        return None if b is None else b[1]

    def backup(self):
        """The cheapest feasible neighbour other than the parent, any gateway."""
        p = self.parent()
        best = None
        for gw in self.entries:
            for cost, n, _ in self._candidates(gw):
                if n != p and (best is None or cost < best[0]):
                    best = (cost, n)
        return None if best is None else best[1]

    def alternative(self, avoid=None, prefer=None):
        """(neighbour, gateway) of the cheapest feasible route through any
        neighbour but ``avoid``: toward gateway ``prefer`` if it has one
        (so a message's fragments stay together), else any; None if none."""
        if prefer is not None:
            for _cost, n, _ in self._candidates(prefer):
                if n != avoid:
                    return (n, prefer)
        best = None
        for gw in self.entries:
            for cost, n, _ in self._candidates(gw):
                if n != avoid:
                    if best is None or (cost, gw) < (best[0], best[2]):
                        best = (cost, n, gw)
                    break
        return None if best is None else (best[1], best[2])

    def next_hop(self, gw):
        """Neighbour to forward an uplink packet addressed to ``gw`` to: the
        parent for that gateway, else the best parent; None if none."""
        if self.gateway and gw == self.address:
            return None
        s = self.selected.get(gw)
        return s[0] if s is not None else self.parent()

    def adverts(self, budget=255):
        """What to announce now (one trickle transmission): a gateway's own
        advert, each selected route, pending retractions and requests."""
        out = []
        if self.gateway:
            out.append(Advert(self.address, self.seq, self.uplink, self.load,
                              gateway_cost(self.uplink, self.load), 0, budget))
        for gw, (n, cost, adv) in self.selected.items():
            flags = FLAG_REQ if gw in self.requests else 0
            out.append(Advert(gw, adv.seq, adv.uplink, adv.load, cost, adv.hops + 1,
                              budget, n, flags))
        for gw, seq in self.retract.items():
            out.append(Advert(gw, seq, 0, 255, INFINITE, HOP_LIMIT, budget, NONE, FLAG_REQ))
        for gw, seq in self.requests.items():
            if gw not in self.selected and gw not in self.retract:
                out.append(Advert(gw, seq, 0, 255, INFINITE, HOP_LIMIT, budget, NONE, FLAG_REQ))
        self.retract = {}
        return out
