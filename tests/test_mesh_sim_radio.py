"""The radio medium's multi-SF receiver (hil/radio.py, used by mesh-sim's
"SF chosen per link"): a receiver listening on SF7..SF9 takes frames of
each SF, two at once when their SFs differ, while a single-SF receiver
hears only its own SF and stays locked on the first frame."""

from __future__ import annotations

from hil.radio import AirParams, RadioMedium


class Ear:
    def __init__(self) -> None:
        self.frames: list = []

    def on_frame(self, rec) -> None:
        self.frames.append(rec)

    def on_tx_done(self, end_us: int) -> None:
        pass


def _air(names):
    m = RadioMedium(seed=1, path_loss={"shadowing_db": 0.0})
    ears = {}
    for i, n in enumerate(names):
        m.add_node(n, 100.0 * i, 0.0)
        ears[n] = Ear()
        m.attach(n, ears[n])
    return m, ears


def test_multi_sf_receiver_takes_two_sfs_at_once():
    m, ears = _air(["rx", "a", "b"])
    m.listen("rx", AirParams(sf=9, sfs=(7, 8, 9)))
    end_a = m.transmit("a", b"a" * 30, AirParams(sf=7))
    end_b = m.transmit("b", b"b" * 30, AirParams(sf=9))
    m.run_until(max(end_a, end_b))
    got = sorted((r.params.sf, r.ok) for r in ears["rx"].frames)
    assert got == [(7, True), (9, True)]


def test_single_sf_receiver_hears_its_sf_only_and_locks():
    m, ears = _air(["rx", "a", "b", "c"])
    m.listen("rx", AirParams(sf=9))
    m.transmit("a", b"a" * 30, AirParams(sf=7))            # another SF: not heard
    m.transmit("b", b"b" * 30, AirParams(sf=9))            # locked on this one
    end = m.transmit("c", b"c" * 10, AirParams(sf=9))      # same SF, later: interference only
    m.run_until(end + 10_000_000)
    assert [r.frame[:1] for r in ears["rx"].frames] == [b"b"]


def test_multi_sf_receiver_locks_per_sf():
    m, ears = _air(["rx", "a", "b"])
    m.listen("rx", AirParams(sf=9, sfs=(7, 9)))
    m.transmit("a", b"a" * 40, AirParams(sf=7))
    m.transmit("b", b"b" * 10, AirParams(sf=7))            # same SF while locked: not taken
    m.run_until(10_000_000)
    assert [r.frame[:1] for r in ears["rx"].frames] == [b"a"]
    assert AirParams(sf=9, sfs=(9, 7)) == AirParams(sf=9, sfs=(7, 9))
    assert AirParams(sf=9, sfs=(7, 9)) != AirParams(sf=9)
