"""mesh.duty: the EU868 sub-band budget — what it allows, when it defers
to, and tick wraparound."""

from mesh import MeshBusy, MeshLocalError
from mesh.duty import HOUR_MS, TICKS_PERIOD, DutyCycleBudget, ticks_add, ticks_diff

G1 = 868100000
G3 = 869525000


def test_bands_and_budgets():
    b = DutyCycleBudget()
    assert b.band(G1)[0] == "g1" and b.budget_ms(G1) == 36000
    assert b.band(G3)[0] == "g3" and b.budget_ms(G3) == 360000
    assert b.band(868900000)[0] == "g2" and b.budget_ms(868900000) == 3600
    try:
        b.band(867000000)
    except MeshLocalError as e:
        assert e.reason == "channel"
    else:
        raise AssertionError("867 MHz has no EU868 sub-band here")


def test_fills_then_defers_until_the_window_slides():
    b = DutyCycleBudget()
    t = 0
    for _ in range(36):
        assert b.can_send(G1, 1000, t)
        b.reserve(G1, 1000, t)
        t += 1000
    assert b.used_ms(G1, t) == 36000 and b.remaining(G1, t) == 0.0
    assert not b.can_send(G1, 1000, t)
    try:
        b.reserve(G1, 1000, t)
    except MeshBusy as e:
        assert e.reason == "duty_cycle"
        # the first record (0..1000) leaves the window ending at retry+1000 when
        # retry + 1000 - hour >= 1000
        assert e.retry_at == HOUR_MS
    else:
        raise AssertionError("over budget must raise MeshBusy")
    assert b.can_send(G1, 1000, HOUR_MS)
    assert not b.can_send(G1, 1000, HOUR_MS - 1)
    # the other sub-band is untouched
    assert b.can_send(G3, 100000, t)
    assert b.remaining_255(G3, t) == 255


def test_frame_longer_than_the_budget():
    b = DutyCycleBudget()
    try:
        b.next_allowed(868900000, 4000, 0)
    except MeshLocalError as e:
        assert e.reason == "toa"
    else:
        raise AssertionError("a 4 s frame never fits 0.1 %")


def test_ticks_wrap():
    near = TICKS_PERIOD - 500
    assert ticks_diff(ticks_add(near, 1000), near) == 1000
    assert ticks_diff(near, ticks_add(near, 1000)) == -1000
    b = DutyCycleBudget()
    b.record(G1, 30000, near)
    later = ticks_add(near, 2000)                  # wrapped past zero
    assert b.used_ms(G1, later) == 30000
    assert not b.can_send(G1, 7000, later)
    assert b.can_send(G1, 6000, later)
