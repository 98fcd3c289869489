"""Gateway liveness, a base of ``mesh.routing.RouteTable``: a gateway's
periodic seq bump, and the death of routes whose seq stopped moving.

A gateway that dies silently is otherwise noticed only by the nodes that
send to it (``FAIL_LIMIT`` unacked frames), and relays keep advertising its
last seq: ghost routes, which the feasibility condition lets siblings take
from each other. Only a gateway makes its seqs, so:

- a gateway bumps its seq every ``refresh_ms`` (``refresh``);
- a node taking a newer seq sets ``news`` (``RouteTable._select_all``), and
  its caller hastens its trickle timer (``Trickle.hasten``) to pass it on;
- a gateway none of whose seqs heard (from any neighbour, ``live``) has
  moved for ``live_ms`` is dead: its entries at that seq or older go and its
  FD becomes a
  tombstone (cost -1: that seq is never feasible again, so a neighbour still
  repeating it cannot revive the route) until a newer seq comes or
  ``route_ttl_ms`` passes (``_stale_gateways``, run by ``expire``).

A dead gateway thus leaves every route table within ``live_ms`` plus one
expiry sweep. (A node hearing a seq older than its tombstone asks for a
newer one, and a gateway hearing its own address with a newer seq jumps past
it: ``RouteTable.hear``.)

Owns those rules only; uses the table's ``fd``, ``entries``, ``seq``,
``gateway`` and tick attributes. No clock, no radio. Portable (MicroPython).
"""

from mesh.advert import seq_newer
from mesh.duty import ticks_diff


class GatewayLiveness:
    """Mixed into ``RouteTable`` (see the module docstring)."""

    def refresh(self, now_ms):
        """A gateway's periodic seq bump (its liveness signal), due every
        ``refresh_ms``; True if the seq moved (advertise it soon)."""
        if not self.gateway or not self.refresh_ms or \
                ticks_diff(now_ms, self._bumped) < self.refresh_ms:
            return False
        self._bump(self.seq, now_ms)
        self.news = True
        return True

    def _bump(self, past, now_ms):
        self.seq = (past + 1) & 0xFFFF
        self._bumped = now_ms

    def _stale_gateways(self, now_ms):
        """Tombstone every FD whose seq is older than ``live_ms`` (its
        entries at that seq or older go); forget tombstones after
        ``route_ttl_ms``. True if entries went."""
        gone = False
        for gw in list(self.fd):
            fd = self.fd[gw]
            if fd[1] < 0:
                if ticks_diff(now_ms, fd[2]) > self.route_ttl_ms:   # long gone: forget it
                    self._drop_up_to(gw, fd[0])
                    del self.fd[gw]
                    self.live.pop(gw, None)
                    gone = True
                continue
            # the newest seq heard from any neighbour, not only our parent's:
            # a quiet parent (trickle-suppressed) may hold it without saying
            seen = self.live.get(gw)
            if seen is None or seq_newer(fd[0], seen[0]):
                seen = self.live[gw] = [fd[0], fd[2]]
            if not self.live_ms or ticks_diff(now_ms, seen[1]) <= self.live_ms:
                continue
            fd[0] = seen[0]
            fd[1] = -1
            fd[2] = now_ms
            self._drop_up_to(gw, fd[0])
            gone = True
        return gone

    def _drop_up_to(self, gw, seq):
        per = self.entries.get(gw, {})
        for n in list(per):
            if not seq_newer(per[n][0].seq, seq):
                del per[n]
        if not per:
            self.entries.pop(gw, None)
