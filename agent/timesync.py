"""Which clock the concentrator trusts, and the clock it lends its meters.

The HES is the time source for concentrators (every ack carries its time; the
uplink records ``hes_clock_offset`` = HES time − our time), NTP when present.
``source = "auto"`` trusts the system clock when it is NTP-synchronised
(systemd-timesyncd's flag file, or chrony/ntpd's kernel status), otherwise
corrects it by the offset the HES last reported. Meters are then compared
against this corrected time and set when they drift past the threshold.
Must not know protocols or transports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from agent.clock import SystemClock

log = logging.getLogger(__name__)

NTP_FLAGS = ("/run/systemd/timesync/synchronized",)


def ntp_synchronised(flags: tuple[str, ...] = NTP_FLAGS) -> bool:
    if any(os.path.exists(p) for p in flags):
        return True
    try:
        import ctypes

        class Timex(ctypes.Structure):
            _fields_ = [("modes", ctypes.c_uint), ("pad", ctypes.c_long * 25)]

        libc = ctypes.CDLL(None, use_errno=True)
        state = libc.adjtimex(ctypes.byref(Timex()))
        return int(state) == 0  # TIME_OK; 5 = TIME_ERROR (unsynchronised)
    except (OSError, AttributeError):
        return False


class CorrectedClock(SystemClock):
    """``base`` plus the HES offset, when the configured source says so."""

    def __init__(self, base: SystemClock, offset: Callable[[], float | None], source: str,
                 synchronised: Callable[[], bool] = ntp_synchronised) -> None:
        self.base = base
        self.offset = offset
        self.source = source
        self.synchronised = synchronised
        self.speed = base.speed

    def correction(self) -> float:
        if self.source == "system":
            return 0.0
        if self.source == "auto" and self.synchronised():
            return 0.0
        off = self.offset()
        return off if off is not None else 0.0

    def now(self) -> float:
        return self.base.now() + self.correction()

    def sleep_until(self, ts: float) -> None:
        self.base.sleep_until(ts - self.correction())

    def wall_seconds(self, sim_seconds: float) -> float:
        return self.base.wall_seconds(sim_seconds)

    def spec(self) -> str:
        return self.base.spec()
