"""Per-neighbour link estimate for routing: ETX from the delivery ratio of
acknowledged unicasts, consecutive losses (a link is dead after
``FAIL_LIMIT`` in a row until heard again), when it was last heard.

Owns the estimate and its cost scale only. Must not know routes, adverts or
packets (``mesh.routing`` chooses with it). Portable (MicroPython).
"""

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[no-untyped-def]
        return x

COST_SCALE = const(128)           # one perfect hop
MAX_LINK_COST = const(16 * 128)
FAIL_LIMIT = const(5)


class Link:
    """Estimate of one neighbour link: ETX from the EWMA (alpha 1/8) of the
    delivery ratio of acked transmissions, adverts heard, consecutive losses.
    ``prr`` is in 1/256 (256 = every frame acked)."""

    def __init__(self, now_ms, prr=192):
        self.prr = prr
        self.mark = self.cost()       # cost when routes were last chosen with it
        self.heard = 0
        self.last_heard = now_ms
        self.sent = 0
        self.acked = 0
        self.fails = 0

    def on_tx(self, acked, now_ms):
        self.sent += 1
        if acked:
            self.acked += 1
            self.fails = 0
            self.last_heard = now_ms
            self.prr += (256 - self.prr) >> 3
        else:
            self.fails += 1
            self.prr += (0 - self.prr) >> 3

    def on_heard(self, now_ms):
        # Heard alive again: a new chance (its ETX still carries the losses).
        self.heard += 1
        self.last_heard = now_ms
        self.fails = 0

    def dead(self):
        """Acks stopped: FAIL_LIMIT transmissions in a row went unacked."""
        return self.fails >= FAIL_LIMIT

    def cost(self):
        """ETX scaled by COST_SCALE, capped at MAX_LINK_COST."""
        if self.prr <= 0:
            return MAX_LINK_COST
        return min(MAX_LINK_COST, COST_SCALE * 256 // self.prr)
