"""EU868 duty-cycle budget: which transmissions a node may make, per sub-band,
over a sliding one-hour window, and when to defer to.

Owns the accounting only: no radio, no clock (``now_ms`` comes in as an
integer tick that may wrap, as MicroPython's ``ticks_ms``), no time-on-air
arithmetic (``mesh.airtime``). Must not know packets. Portable (MicroPython).

Sub-bands (ETSI EN 300 220-2 V3.2.1 table B.1 / ERC REC 70-03 annex 1 h1.4-h1.6,
as LoRaWAN RP002-1.0.3 §2.4 applies them)::

    band  frequency (MHz)      duty cycle   budget per hour
    g1    868.000 - 868.600    1 %          36 000 ms
    g2    868.700 - 869.200    0.1 %         3 600 ms
    g3    869.400 - 869.650    10 %        360 000 ms

A channel is its centre frequency in Hz. The rule (module ``can_send``): a
transmission of ``T`` ms at ``now`` is allowed when ``T`` plus the air time of
every earlier transmission that *ends* after ``now + T - window`` fits the
budget. Counting whole transmissions that overlap the last window ending at
the new frame's end means no window of one hour, wherever it starts, ever
holds more air time than the budget (tests/test_mesh_duty_props.py proves it
for any accepted sequence of non-overlapping transmissions).
"""

from mesh import MeshBusy, MeshLocalError

HOUR_MS = 3600000

# (name, low Hz inclusive, high Hz inclusive, duty in parts per 1000)
EU868_SUBBANDS = (
    ("g1", 868000000, 868600000, 10),
    ("g2", 868700000, 869200000, 1),
    ("g3", 869400000, 869650000, 100),
)

# Tick arithmetic as micropython's time.ticks_diff with a 2^30 period.
TICKS_PERIOD = 1 << 30
_HALF = TICKS_PERIOD >> 1
_MASK = TICKS_PERIOD - 1


def ticks_add(t, delta):
    return (t + delta) & _MASK


def ticks_diff(a, b):
    """a - b for ticks that wrap, valid while |a - b| < 2^29 ms (6.2 days)."""
    return ((a - b + _HALF) & _MASK) - _HALF


class DutyCycleBudget:
    """Per-sub-band sliding-window air-time budget (see module docstring).

    ``subbands`` is a tuple of (name, low_hz, high_hz, per_mille); ``window_ms``
    is one hour by the regulation and shorter only in tests. Every call
    prunes records older than the window, so ticks stay comparable as long as
    the budget is consulted at least once per 2^29 ms (6.2 days).
    """

    def __init__(self, subbands=EU868_SUBBANDS, window_ms=HOUR_MS):
        self.subbands = subbands
        self.window_ms = window_ms
        self._log = {}                     # band name -> [(start tick, toa ms)], time order
        self._sum = {}                     # band name -> total toa in the log
        self._bands = {}                   # channel -> band (cache)
        for band in subbands:
            self._log[band[0]] = []
            self._sum[band[0]] = 0

    def band(self, channel):
        """The sub-band tuple holding ``channel`` (Hz); MeshLocalError if none."""
        b = self._bands.get(channel)
        if b is not None:
            return b
        for band in self.subbands:
            if band[1] <= channel <= band[2]:
                self._bands[channel] = band
                return band
        raise MeshLocalError("channel outside every duty-cycle sub-band",
                             reason="channel", channel=channel)

    def budget_ms(self, channel):
        """Air time allowed per window on the channel's sub-band."""
        return self.window_ms * self.band(channel)[3] // 1000

    def used_ms(self, channel, now_ms):
        """Air time of transmissions overlapping the window ending at ``now``."""
        name = self.band(channel)[0]
        self._prune(name, now_ms)
        return self._counted_at(name, now_ms, 0, 0)

    def can_send(self, channel, toa_ms, now_ms):
        band = self.band(channel)
        limit = self.window_ms * band[3] // 1000
        self._prune(band[0], now_ms)
        return self._counted_at(band[0], now_ms, 0, toa_ms) + toa_ms <= limit

    def record(self, channel, toa_ms, now_ms):
        """Charge a transmission that starts at ``now_ms`` (whether or not
        ``can_send`` was asked: a node that records more is only deferred more).
        Calls come in time order (a radio's transmissions)."""
        if toa_ms < 0:
            raise MeshLocalError("negative air time", reason="toa", toa=toa_ms)
        name = self.band(channel)[0]
        self._prune(name, now_ms)
        self._log[name].append((now_ms & _MASK, toa_ms))
        self._sum[name] += toa_ms

    def reserve(self, channel, toa_ms, now_ms):
        """``record`` if allowed, else raise MeshBusy with ``retry_at`` (tick)."""
        if not self.can_send(channel, toa_ms, now_ms):
            at = self.next_allowed(channel, toa_ms, now_ms)
            raise MeshBusy("duty-cycle budget exhausted", reason="duty_cycle",
                           channel=channel, retry_at=at, toa=toa_ms)
        self.record(channel, toa_ms, now_ms)

    def next_allowed(self, channel, toa_ms, now_ms):
        """Earliest tick >= now at which ``can_send`` holds for ``toa_ms``.

        MeshLocalError (reason "toa") if the frame is longer than the budget.
        """
        band = self.band(channel)
        limit = self.window_ms * band[3] // 1000
        if toa_ms > limit:
            raise MeshLocalError("frame longer than the duty-cycle budget",
                                 reason="toa", toa=toa_ms, budget=limit)
        name = band[0]
        self._prune(name, now_ms)
        if self._counted_at(name, now_ms, 0, toa_ms) + toa_ms <= limit:
            return now_ms & _MASK
        # can_send at t excludes the longest prefix of the log (time order)
        # whose records all end by t + toa - window: find the first prefix
        # whose air time brings the rest within the budget.
        need = self._sum[name] - (limit - toa_ms)
        acc = 0
        last_end = None
        for (s, d) in self._log[name]:
            e = ticks_diff(s, now_ms) + d
            if last_end is None or e > last_end:
                last_end = e
            acc += d
            if acc >= need:
                break
        wait = last_end + self.window_ms - toa_ms
        return ticks_add(now_ms, max(wait, 0))

    def remaining(self, channel, now_ms):
        """Fraction (0.0..1.0) of the window's budget still unused now."""
        limit = self.budget_ms(channel)
        used = self.used_ms(channel, now_ms)
        return max(0, limit - used) / limit if limit else 0.0

    def remaining_255(self, channel, now_ms):
        """``remaining`` as one byte, 255 = the whole budget (for adverts)."""
        limit = self.budget_ms(channel)
        used = self.used_ms(channel, now_ms)
        return max(0, limit - used) * 255 // limit if limit else 0

    def _counted_at(self, name, now_ms, later_ms, toa_ms):
        """Air time of records ending after now + later + toa - window: the
        total, less the records at the front (time order) that ended by
        then. Records are in time order, so their ends are too when frames
        do not overlap; if they do, a record is counted longer, never less."""
        cut = later_ms + toa_ms - self.window_ms
        total = self._sum[name]
        for (s, d) in self._log[name]:
            if ((s - now_ms + _HALF) & _MASK) - _HALF + d > cut:
                break
            total -= d
        return total

    def _prune(self, name, now_ms):
        # A record ending before now - window can never count again (toa >= 0).
        log = self._log[name]
        lim = -self.window_ms
        k = 0
        n = len(log)
        while k < n:
            s, d = log[k]
            if ((s - now_ms + _HALF) & _MASK) - _HALF + d > lim:
                break
            k += 1
        if k:
            gone = 0
            for i in range(k):
                gone += log[i][1]
            del log[:k]
            self._sum[name] -= gone
