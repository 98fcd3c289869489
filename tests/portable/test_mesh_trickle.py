"""mesh.trickle: RFC 6206 — intervals double to Imax, k consistent messages
suppress a transmission, an inconsistency resets to Imin."""

from mesh.trickle import Trickle, XorShift


def _run(t, start, end, step=10):
    sends = []
    now = start
    while now < end:
        if t.on_tick(now):
            sends.append(now)
        now += step
    return sends


def test_intervals_double_to_imax():
    t = Trickle(1000, 3, 1, 0, XorShift(7))
    t.reset(0)
    assert t.interval == 1000
    sends = _run(t, 0, 40000)
    # intervals 1, 2, 4, 8, 8, 8 ... s: one send per interval, in its second half
    assert t.interval == 8000
    assert 500 <= sends[0] < 1000
    assert 1000 + 1000 <= sends[1] < 3000
    gaps = [sends[i + 1] - sends[i] for i in range(len(sends) - 1)]
    assert max(gaps) < 16000
    assert len(sends) >= 6


def test_consistent_messages_suppress():
    t = Trickle(1000, 0, 2, 0, XorShift(3))
    for interval in range(5):
        assert not t.on_tick(interval * 1000)        # the interval starts (c = 0)
        t.hear_consistent()
        t.hear_consistent()
        assert not any(t.on_tick(interval * 1000 + ms) for ms in range(10, 1000, 10))
    assert t.transmissions == 0 and t.suppressed == 5
    # one consistent message is below k = 2: the next interval transmits
    t.on_tick(5000)
    t.hear_consistent()
    assert any(t.on_tick(5000 + ms) for ms in range(10, 1000, 10))


def test_inconsistency_resets_to_imin():
    t = Trickle(1000, 6, 1, 0, XorShift(5))
    _run(t, 0, 200000)
    assert t.interval == 64000
    t.hear_inconsistent(200000)
    assert t.interval == 1000 and t.start == 200000
    assert t.next_event_ms() < 201000


def test_xorshift_is_reproducible():
    a, b = XorShift(42), XorShift(42)
    xs = [a(0, 100) for _ in range(20)]
    assert xs == [b(0, 100) for _ in range(20)]
    assert all(0 <= x < 100 for x in xs) and len(set(xs)) > 5
    assert a(5, 5) == 5


def test_hasten_gives_one_short_interval_then_resumes():
    t = Trickle(1000, 4, 1, 0, XorShift(3))
    _run(t, 0, 100000)
    assert t.interval == 16000
    t.hasten(100000, 2000)                     # news: one 2 s interval now
    assert t.interval == 2000
    sends = _run(t, 100000, 102000)
    assert len(sends) == 1 and 101000 <= sends[0] < 102000
    _run(t, 102000, 102020)
    assert t.interval == 16000                 # back to the interval it had
    t.hasten(102020, 32000)                    # a cap above the interval: no change
    assert t.interval == 16000 and t.start == 102000
