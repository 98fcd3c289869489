"""The district round trip: 64 meters read hourly (hil.district), every hour
encoded against the acknowledged state, sealed, opened and decoded at the
other end; every reading comes back exactly and the wire stays under the
18-bytes-per-meter-hour budget. Two days here; the 45-day district goes through the real CLIs in
tests/test_e2e_district_roundtrip.py."""

from __future__ import annotations

from agent.batch import Batch, CodecState, decode_batch, encode_batch
from agent.envelope import Keyring, MemoryBootStore, ReplayWindow, Sealer, open_envelope
from hil.district import district_readings
from hil.model import ORIGIN

ROOT = bytes(range(32))


def run(meters: int, days: int) -> float:
    sealer = Sealer("dc-9", ROOT, MemoryBootStore())
    ks = Keyring()
    ks.add("dc-9", ROOT)
    window = ReplayWindow()
    agent: CodecState | None = None
    hes: CodecState | None = None
    wire = 0
    hour: list = []
    seq = 0
    for row in district_readings(meters, days, seed=5, start=ORIGIN + 86400):
        hour.append(row)
        if len(hour) < meters:
            continue
        seq += 1
        ts = row[1]
        b = Batch("dc-9", seq, ts + 15, hour, [], [(m, "ok", None) for m, _, _ in hour])
        sealed = sealer.seal(encode_batch(b, agent))
        wire += len(sealed)
        d = decode_batch(open_envelope(sealed, ks, window).payload, hes)
        assert d == b, seq
        agent = agent or CodecState("dc-9")
        hes = hes or CodecState("dc-9")
        agent.advance(b)
        hes.advance(d)
        assert agent.digest() == hes.digest()
        hour = []
    assert seq == days * 24
    return wire / (meters * days * 24)


def test_two_days_64_meters_exact_and_under_budget() -> None:
    assert run(64, 2) <= 18.0

