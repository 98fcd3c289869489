"""The concentrator's time source: system clock under NTP, else the HES's."""

from agent.clock import ScaledClock
from agent.timesync import CorrectedClock, ntp_synchronised


def test_sources():
    base = ScaledClock(1_000_000.0, 1.0)
    hes = CorrectedClock(base, lambda: 42.5, "hes")
    assert abs(hes.now() - base.now() - 42.5) < 0.05
    assert CorrectedClock(base, lambda: 42.5, "system").correction() == 0.0
    assert CorrectedClock(base, lambda: 42.5, "auto", lambda: True).correction() == 0.0
    assert CorrectedClock(base, lambda: 42.5, "auto", lambda: False).correction() == 42.5
    assert CorrectedClock(base, lambda: None, "hes").correction() == 0.0


def test_ntp_flag_file(tmp_path):
    flag = tmp_path / "synchronized"
    flag.touch()
    assert ntp_synchronised((str(flag),)) is True
    assert isinstance(ntp_synchronised(()), bool)
