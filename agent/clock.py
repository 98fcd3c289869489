"""Clocks the agent, simulators and demos share.

``SystemClock`` is the wall clock (UTC epoch seconds). ``ScaledClock`` runs
simulated time: ``now = t0 + (wall - w0) * speed``, so several processes given
the same (t0, w0, speed) agree on simulated time without talking to each
other. Its spec string ``"t0,w0,speed"`` travels on command lines and in the
``WUM_CLOCK`` environment variable.
"""

from __future__ import annotations

import os
import time


class SystemClock:
    speed = 1.0

    def now(self) -> float:
        return time.time()

    def sleep_until(self, ts: float) -> None:
        d = ts - self.now()
        if d > 0:
            time.sleep(d)

    def wall_seconds(self, sim_seconds: float) -> float:
        return sim_seconds

    def spec(self) -> str:
        return ""


class ScaledClock(SystemClock):
    def __init__(self, t0: float, speed: float, w0: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.t0 = float(t0)
        self.w0 = time.time() if w0 is None else float(w0)
        self.speed = float(speed)

    def now(self) -> float:
        return self.t0 + (time.time() - self.w0) * self.speed

    def sleep_until(self, ts: float) -> None:
        d = (ts - self.now()) / self.speed
        if d > 0:
            time.sleep(d)

    def wall_seconds(self, sim_seconds: float) -> float:
        return sim_seconds / self.speed

    def spec(self) -> str:
        return "%r,%r,%r" % (self.t0, self.w0, self.speed)

    @classmethod
    def from_spec(cls, spec: str) -> ScaledClock:
        t0, w0, speed = (float(x) for x in spec.split(","))
        return cls(t0, speed, w0)


def clock_from_env() -> SystemClock:
    spec = os.environ.get("WUM_CLOCK", "")
    return ScaledClock.from_spec(spec) if spec else SystemClock()
