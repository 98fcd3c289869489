"""The physics of a simulated electricity meter, independent of protocol.

Owns: deterministic, seedable state of one meter as a function of true UTC
time — cumulative energy per tariff (monotonic), instantaneous values, the
hourly load profile going back as far as asked, an event log, a drifting
clock and a disconnect relay. Every protocol simulator (DLMS, IEC 62056-21,
Modbus) serves the same ``MeterModel``, and tests recompute what a meter held
from ``(seed, index)`` without talking to it.

Resolutions: energy in Wh (integers), V in 0.1 V, A in 0.001 A, W in 1 W,
PF in 0.001, Hz in 0.01 Hz.
"""

from __future__ import annotations

import math

HOUR = 3600
DAY = 86400
# Model time starts here (2026-06-01 UTC): the meter's registers hold their
# installation values before it and grow from it.
ORIGIN = 1780272000

# OBIS codes of the full register set (27 values), and their units.
ENERGY = [
    ("1.0.1.8.0.255", "Wh"), ("1.0.1.8.1.255", "Wh"), ("1.0.1.8.2.255", "Wh"),
    ("1.0.1.8.3.255", "Wh"), ("1.0.1.8.4.255", "Wh"),
    ("1.0.2.8.0.255", "Wh"), ("1.0.2.8.1.255", "Wh"), ("1.0.2.8.2.255", "Wh"),
    ("1.0.2.8.3.255", "Wh"), ("1.0.2.8.4.255", "Wh"),
    ("1.0.3.8.0.255", "varh"), ("1.0.4.8.0.255", "varh"),
]
INSTANT = [
    ("1.0.32.7.0.255", "V"), ("1.0.52.7.0.255", "V"), ("1.0.72.7.0.255", "V"),
    ("1.0.31.7.0.255", "A"), ("1.0.51.7.0.255", "A"), ("1.0.71.7.0.255", "A"),
    ("1.0.21.7.0.255", "W"), ("1.0.41.7.0.255", "W"), ("1.0.61.7.0.255", "W"),
    ("1.0.1.7.0.255", "W"), ("1.0.3.7.0.255", "var"),
    ("1.0.13.7.0.255", ""), ("1.0.14.7.0.255", "Hz"),
]
STATUS = [("0.0.96.3.10.255", ""), ("0.0.97.97.0.255", "")]
REGISTERS = ENERGY + INSTANT + STATUS
UNITS = dict(REGISTERS)
# The hourly load profile (1.0.99.1.0.255) captures these cumulative registers.
PROFILE = ["1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.3.8.0.255", "1.0.4.8.0.255"]

# Event codes (DLMS standard event log numbering, Blue Book "Standard event log").
EVENTS = {1: "power_down", 2: "power_up", 40: "cover_open", 41: "cover_closed",
          47: "magnetic_tamper", 59: "relay_disconnected", 60: "relay_connected"}


def _mix(x: int) -> int:
    """splitmix64 finaliser: a stateless hash, so any hour can be recomputed."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _u(*keys: int) -> float:
    h = 0
    for k in keys:
        h = _mix(h ^ (k & 0xFFFFFFFFFFFFFFFF))
    return (h >> 11) / float(1 << 53)


def tariff(ts: int) -> int:
    """1 = day, 2 = night, 3 = weekend day, 4 = peak (17–20 h on weekdays)."""
    h = (ts // HOUR) % 24
    weekday = ((ts // DAY) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    if h < 7 or h >= 23:
        return 2
    if weekday >= 5:
        return 3
    if 17 <= h < 20:
        return 4
    return 1


class MeterModel:
    """One meter. ``index`` distinguishes meters of one district/seed."""

    def __init__(self, index: int, seed: int = 1, serial: str | None = None,
                 drift_ppm: float | None = None, has_pv: bool | None = None) -> None:
        self.index = index
        self.seed = seed
        self.key = (seed * 1000003 + index) & 0xFFFFFFFF
        self.serial = serial or "%08d" % (10000000 + (self.key % 89999999))
        self.base_w = 150 + int(_u(self.key, 1) * 600)      # standby load
        self.peak_w = 800 + int(_u(self.key, 2) * 3500)     # evening peak
        self.has_pv = (_u(self.key, 3) < 0.2) if has_pv is None else has_pv
        self.drift_ppm = ((_u(self.key, 4) - 0.5) * 40.0) if drift_ppm is None else drift_ppm
        self.clock_offset = 0.0          # seconds added by clock set commands
        self.relay_connected = True
        self.relay_events: list[tuple[int, int]] = []
        self._cum_cache: dict[int, tuple[int, ...]] = {}
        # Register values at ORIGIN (a meter is not new when we meet it).
        imp0 = 1_000_000 + int(_u(self.key, 5) * 40_000_000)
        split = [int(imp0 * f) for f in (0.55, 0.25, 0.12)]
        self.initial = (imp0, split[0], split[1], split[2], imp0 - sum(split),
                        0, 0, 0, 0, 0, imp0 // 5, imp0 // 200)

    # -- energy -----------------------------------------------------------
    def hour_energy(self, hour: int) -> tuple[int, int, int, int]:
        """(import Wh, export Wh, R+ varh, R- varh) consumed during hour ``hour``
        (hours since the epoch, the hour starting at hour*3600)."""
        if not self.relay_connected_at(hour * HOUR):
            return (0, 0, 0, 0)
        h = hour % 24
        shape = 0.35 + 0.65 * max(0.0, math.sin(math.pi * (h - 6) / 16.0)) if 6 <= h < 22 else 0.3
        noise = _u(self.key, hour, 7)
        imp = int(self.base_w * 0.6 + (self.peak_w - self.base_w) * shape * (0.5 + noise))
        exp = 0
        if self.has_pv and 9 <= h < 16:
            exp = int(1200 * math.sin(math.pi * (h - 9) / 7.0) * _u(self.key, hour, 8))
            imp = max(0, imp - exp // 2)
        rp = imp // 5 + int(_u(self.key, hour, 9) * 40)
        rn = int(_u(self.key, hour, 10) * 15)
        return (imp, exp, rp, rn)

    def cumulative(self, hour: int) -> tuple[int, ...]:
        """Registers at the start of hour ``hour``: (A+ total, A+ T1..T4,
        A- total, A- T1..T4, R+, R-) in Wh/varh. Monotonic in ``hour``."""
        first = ORIGIN // HOUR
        zero = self.initial
        if hour <= first:
            return zero
        # Walk from the nearest cached day boundary.
        day = hour - hour % 24
        if day not in self._cum_cache:
            start = day - 24
            while start > first and start not in self._cum_cache:
                start -= 24
            acc = list(self._cum_cache.get(start, zero)) if start > first else list(zero)
            cur = max(start, first)
            while cur < day:
                self._add(acc, cur)
                cur += 1
                if cur % 24 == 0:
                    self._cum_cache[cur] = tuple(acc)
        acc = list(self._cum_cache.get(day, zero)) if day > first else list(zero)
        for hr in range(max(day, first), hour):
            self._add(acc, hr)
        return tuple(acc)

    def _add(self, acc: list[int], hour: int) -> None:
        imp, exp, rp, rn = self.hour_energy(hour)
        t = tariff(hour * HOUR)
        acc[0] += imp
        acc[t] += imp
        acc[5] += exp
        acc[5 + t] += exp
        acc[10] += rp
        acc[11] += rn

    def energy_at(self, ts: float) -> tuple[int, ...]:
        """Cumulative registers at any instant: linear within the hour, so a
        register read mid-hour is between the two profile rows around it."""
        hour = int(ts // HOUR)
        base = self.cumulative(hour)
        frac = (ts - hour * HOUR) / HOUR
        imp, exp, rp, rn = self.hour_energy(hour)
        t = tariff(hour * HOUR)
        out = list(base)
        out[0] += int(imp * frac)
        out[t] += int(imp * frac)
        out[5] += int(exp * frac)
        out[5 + t] += int(exp * frac)
        out[10] += int(rp * frac)
        out[11] += int(rn * frac)
        return tuple(out)

    # -- instantaneous ------------------------------------------------------
    def instantaneous(self, ts: float) -> dict[str, int | float]:
        minute = int(ts // 60)
        hour = int(ts // HOUR)
        imp, exp, rp, _ = self.hour_energy(hour)
        v = {}
        p_total = 0
        for i, ph in enumerate((32, 52, 72)):
            volts = 2300 + int((_u(self.key, minute, 20 + i) - 0.5) * 160)  # 0.1 V
            v["1.0.%d.7.0.255" % ph] = volts / 10
            share = (imp - exp) / 3.0 * (0.8 + 0.4 * _u(self.key, minute, 30 + i))
            watts = int(share)
            p_total += watts
            v["1.0.%d.7.0.255" % (21 + 20 * i)] = watts
            amps = int(abs(watts) / (volts / 10) * 1000)  # mA
            v["1.0.%d.7.0.255" % (31 + 20 * i)] = amps / 1000
        v["1.0.1.7.0.255"] = max(0, p_total)
        v["1.0.3.7.0.255"] = rp
        v["1.0.13.7.0.255"] = (900 + int(_u(self.key, minute, 40) * 95)) / 1000
        v["1.0.14.7.0.255"] = (4995 + int(_u(self.key, minute, 41) * 10)) / 100
        return v

    def registers(self, ts: float) -> dict[str, int | float]:
        """The full register set (27 values) as the meter would serve at ``ts``."""
        e = self.energy_at(ts)
        out: dict[str, int | float] = {}
        for (obis, _), val in zip(ENERGY, e, strict=True):
            out[obis] = val
        out.update(self.instantaneous(ts))
        out["0.0.96.3.10.255"] = 1 if self.relay_connected else 0
        out["0.0.97.97.0.255"] = self.status_word(ts)
        return out

    def status_word(self, ts: float) -> int:
        bits = 0
        if not self.relay_connected:
            bits |= 0x01
        for _t, code in self.events(int(ts) - DAY, int(ts)):
            if code in (40, 47):
                bits |= 0x10 if code == 40 else 0x20
        return bits

    # -- load profile -------------------------------------------------------
    def profile_row(self, ts: int) -> dict[str, int]:
        """The hourly row captured at ``ts`` (an hour boundary)."""
        c = self.cumulative(ts // HOUR)
        return {PROFILE[0]: c[0], PROFILE[1]: c[5], PROFILE[2]: c[10], PROFILE[3]: c[11]}

    def profile(self, start: int, end: int) -> list[tuple[int, dict[str, int]]]:
        """Rows with start <= ts <= end at hour boundaries."""
        first = -(-int(start) // HOUR) * HOUR
        return [(t, self.profile_row(t)) for t in range(first, int(end) + 1, HOUR)]

    # -- events -------------------------------------------------------------
    def events(self, start: int, end: int) -> list[tuple[int, int]]:
        """Deterministic rare events (about one a week per meter) plus relay ops."""
        out = []
        for hour in range(int(start) // HOUR, int(end) // HOUR + 1):
            r = _u(self.key, hour, 50)
            if r < 0.006:
                ts = hour * HOUR + int(_u(self.key, hour, 51) * HOUR)
                code = (1, 40, 47)[int(_u(self.key, hour, 52) * 3)]
                if start <= ts <= end:
                    out.append((ts, code))
                    if code == 1 and start <= ts + 90 <= end:
                        out.append((ts + 90, 2))
        out.extend(e for e in self.relay_events if start <= e[0] <= end)
        out.sort()
        return out

    # -- relay and clock ---------------------------------------------------
    def relay_connected_at(self, ts: int) -> bool:
        state = True
        for t, code in self.relay_events:
            if t <= ts:
                state = code == 60
        return state

    def set_relay(self, connected: bool, ts: float) -> None:
        if connected != self.relay_connected:
            self.relay_connected = connected
            self.relay_events.append((int(ts), 60 if connected else 59))
            self._cum_cache.clear()

    def clock(self, true_ts: float) -> float:
        """The meter's own clock: drifts by ``drift_ppm`` from ORIGIN."""
        return true_ts + (true_ts - ORIGIN) * self.drift_ppm * 1e-6 + self.clock_offset

    def set_clock(self, meter_ts: float, true_ts: float) -> None:
        self.clock_offset += meter_ts - self.clock(true_ts)
