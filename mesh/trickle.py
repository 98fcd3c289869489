"""RFC 6206 trickle timer: when a node should (re)announce its routes, so
control traffic is fast after a change and rare when all agree.

Owns the timer state only; sans-IO: the caller asks ``next_event_ms()``,
calls ``on_tick(now)`` at (or after) that tick and transmits when it returns
True. Must not know what is announced. Ticks are integer milliseconds that
may wrap (``mesh.duty.ticks_diff``). Randomness is injected (``rand(lo, hi)``
-> int in [lo, hi)), seeded ``XorShift`` by default. Portable (MicroPython).

State (RFC 6206 §4.2)::

    I   current interval, Imin <= I <= Imax = Imin * 2^doublings
    t   transmission instant in [I/2, I) after the interval's start
    c   consistent messages heard in this interval; transmit at t iff c < k
"""

from mesh import MeshLocalError
from mesh.duty import ticks_add, ticks_diff


class XorShift:
    """A small seeded PRNG (xorshift32) so timers are reproducible."""

    def __init__(self, seed=1):
        self.state = (seed & 0xFFFFFFFF) or 0x9E3779B9

    def __call__(self, lo, hi):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return lo + x % (hi - lo) if hi > lo else lo


class Trickle:
    """One trickle timer. ``imin_ms`` >= 2, ``doublings`` >= 0, ``k`` >= 1
    (k = 0 means "always transmit", RFC 6206 §6.5: accepted)."""

    def __init__(self, imin_ms, doublings, k, now_ms, rand=None):
        if imin_ms < 2 or doublings < 0 or k < 0:
            raise MeshLocalError("bad trickle parameters", reason="trickle",
                                 imin=imin_ms, doublings=doublings, k=k)
        self.imin = imin_ms
        self.imax = imin_ms << doublings
        self.k = k
        self.rand = rand if rand is not None else XorShift(1)
        self.transmissions = 0            # how many times on_tick said "send"
        self.suppressed = 0               # how many times c >= k held it back
        self.resume = 0                   # interval to go back to after a hastened one
        # RFC 6206 §4.2 rule 1: start with I in [Imin, Imax].
        self.interval = self.imin << self.rand(0, doublings + 1)
        self._start(now_ms)

    def _start(self, now_ms):
        # §4.2 rule 2: new interval, c = 0, t random in [I/2, I).
        self.start = now_ms
        self.count = 0
        half = self.interval // 2
        self.t = self.rand(half, self.interval)
        self.fired = False

    def next_event_ms(self):
        """Tick of the next thing to do: the transmission instant, or the
        interval's end once t has passed."""
        if not self.fired:
            return ticks_add(self.start, self.t)
        return ticks_add(self.start, self.interval)

    def on_tick(self, now_ms):
        """Run every event due by ``now_ms``; True if the node should transmit
        now (at most once per call, even after a long pause)."""
        send = False
        while True:
            elapsed = ticks_diff(now_ms, self.start)
            if not self.fired:
                if elapsed < self.t:
                    return send
                self.fired = True
                # §4.2 rule 4: transmit iff c < k (k = 0: always).
                if self.k == 0 or self.count < self.k:
                    send = True
                    self.transmissions += 1
                else:
                    self.suppressed += 1
            if elapsed < self.interval:
                return send
            # §4.2 rule 5: double I up to Imax, start a new interval. A long
            # pause starts the new interval now, not in the past.
            begin = ticks_add(self.start, self.interval)
            if ticks_diff(now_ms, begin) >= self.interval:
                begin = now_ms
            if self.resume:               # a hastened interval is over
                self.interval = self.resume
                self.resume = 0
            else:
                self.interval = min(self.interval * 2, self.imax)
            self._start(begin)

    def hear_consistent(self):
        """§4.2 rule 3: a consistent transmission was heard."""
        self.count += 1

    def hear_inconsistent(self, now_ms):
        """§4.2 rule 6: inconsistency; reset to Imin unless already there."""
        if self.interval > self.imin:
            self.reset(now_ms)

    def hasten(self, now_ms, cap_ms):
        """News that must travel but changes no route (a gateway's new seq):
        if the current interval is longer than ``cap_ms``, run one interval
        of ``cap_ms`` (at least Imin) now, then go on with the interval we
        had (one more chance to transmit, suppressed as any: far cheaper
        than a reset to Imin, and it bounds the wait for our next advert)."""
        cap = max(self.imin, min(cap_ms, self.imax))
        if self.interval > cap:
            self.resume = self.resume or self.interval
            self.interval = cap
            self._start(now_ms)

    def reset(self, now_ms):
        """External event (§4.2 rule 6 / §5): I = Imin, new interval now."""
        self.interval = self.imin
        self.resume = 0
        self._start(now_ms)
