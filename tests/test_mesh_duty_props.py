"""Property tests (Hypothesis) on mesh.duty: whatever a node asks, the
transmissions the budget accepts never put more air time in any window of
one hour than the sub-band allows, and ``next_allowed`` is the earliest
tick at which the frame fits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.duty import DutyCycleBudget

G1 = 868100000
WINDOW = 60000            # a one-minute window keeps examples small; the rule is the same


def _worst_window(log: list[tuple[int, int]], window: int) -> int:
    """Air time inside the worst window [s, s + window) over all s: the
    maximum is reached with s at a transmission's start."""
    worst = 0
    for s, _ in log:
        total = 0
        for t, d in log:
            lo, hi = max(t, s), min(t + d, s + window)
            if hi > lo:
                total += hi - lo
        worst = max(worst, total)
    return worst


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 400)), max_size=80))
def test_accepted_transmissions_never_exceed_any_window(requests: list[tuple[int, int]]) -> None:
    b = DutyCycleBudget(window_ms=WINDOW)
    budget = b.budget_ms(G1)
    now = 0
    log: list[tuple[int, int]] = []
    busy_until = 0
    for gap, toa in requests:
        now = max(now + gap, busy_until)              # one radio: no overlapping frames
        if b.can_send(G1, toa, now):
            b.record(G1, toa, now)
            log.append((now, toa))
            busy_until = now + toa
    assert _worst_window(log, WINDOW) <= budget


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 300)), min_size=1, max_size=30),
       st.integers(1, 600))
def test_next_allowed_is_the_earliest_fit(history: list[tuple[int, int]], toa: int) -> None:
    b = DutyCycleBudget(window_ms=WINDOW)
    now = 0
    for gap, d in history:
        now += gap
        b.record(G1, d, now)
        now += d
    at = b.next_allowed(G1, toa, now)
    assert at >= now and b.can_send(G1, toa, at)
    for earlier in (at - 1, (now + at) // 2):
        if now <= earlier < at:
            assert not b.can_send(G1, toa, earlier)
