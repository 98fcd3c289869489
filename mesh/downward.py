"""Downward routes (storing mode, as RPL's, RFC 6550 §9): which neighbour
leads back to which origin, learnt from the uplink traffic a node forwards,
so a gateway routes acks and commands down to any node.

Owns the table only: no radio, no clock (ticks in, may wrap), no packets.
Must not know what travels down. Portable (MicroPython).

Table: origin address -> (neighbour it came through, tick last seen). An
entry expires ``ttl_ms`` after the last uplink from that origin; at
``capacity`` the least recently refreshed entry gives way (a scan, only when
full). A neighbour that
dies takes every route through it away (``forget_via``).
"""

from mesh import MeshLocalError
from mesh.duty import ticks_diff


class DownwardRoutes:
    def __init__(self, ttl_ms=6 * 3600000, capacity=512):
        self.ttl_ms = ttl_ms
        self.capacity = capacity
        self._routes = {}             # origin -> [via, tick], in refresh order
        self.evicted = 0

    def learn(self, origin, via, now_ms):
        """An uplink packet from ``origin`` arrived from neighbour ``via``."""
        r = self._routes.get(origin)
        if r is not None:
            r[0] = via
            r[1] = now_ms
            return
        if len(self._routes) >= self.capacity:
            # The stalest entry gives way. Found by its tick, not by dict order:
            # MicroPython's dict does not keep insertion order across deletions.
            oldest = None
            for o, e in self._routes.items():
                if oldest is None or ticks_diff(e[1], self._routes[oldest][1]) < 0:
                    oldest = o
            del self._routes[oldest]
            self.evicted += 1
        self._routes[origin] = [via, now_ms]

    def next_hop(self, dest, now_ms):
        """Neighbour toward ``dest``; MeshLocalError (reason "no_route")
        when unknown or expired."""
        r = self._routes.get(dest)
        if r is None or ticks_diff(now_ms, r[1]) > self.ttl_ms:
            if r is not None:
                del self._routes[dest]
            raise MeshLocalError("no downward route", reason="no_route", node=dest)
        return r[0]

    def forget_via(self, neighbour):
        """Drop every route through ``neighbour`` (it died); how many."""
        gone = [o for o, r in self._routes.items() if r[0] == neighbour]
        for o in gone:
            del self._routes[o]
        return len(gone)

    def expire(self, now_ms):
        for o in list(self._routes):
            if ticks_diff(now_ms, self._routes[o][1]) > self.ttl_ms:
                del self._routes[o]

    def __len__(self):
        return len(self._routes)

    def origins(self):
        return list(self._routes)
