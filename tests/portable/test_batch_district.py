"""A realistic hour in the real interpreter: 64 meters x 27 registers (energy
with tariffs, three-phase instantaneous values, status), a keyframe, then a
day of deltas, sealed and opened; exact both ways and far smaller deltas.
Portable (no hil import: values come from a small deterministic generator)."""

from agent.batch import Batch, CodecState, decode_batch, encode_batch
from agent.envelope import Keyring, MemoryBootStore, ReplayWindow, Sealer, open_envelope

T0 = 1780272000 + 86400


def _u(*keys):
    h = 0
    for k in keys:
        h = (h * 6364136223846793005 + k * 1442695040888963407 + 1) & ((1 << 64) - 1)
        h ^= h >> 29
    return (h >> 11) / float(1 << 53)


def _meter(i, hour, cum):
    """One row; ``cum`` holds the meter's cumulative registers (mutated)."""
    imp = 200 + int(_u(i, hour, 1) * 2500)
    t = 1 + hour % 4
    cum[0] += imp
    cum[t] += imp
    cum[5] += int(_u(i, hour, 2) * 60)
    cum[6] += imp // 5 + int(_u(i, hour, 3) * 40)
    v = {"1.0.1.8.0.255": cum[0], "1.0.2.8.0.255": 0, "1.0.3.8.0.255": cum[6],
         "1.0.4.8.0.255": cum[5]}
    for e in range(1, 5):
        v["1.0.1.8.%d.255" % e] = cum[e]
        v["1.0.2.8.%d.255" % e] = 0
    total = 0
    for n, ph in enumerate((21, 41, 61)):
        volts = 2300 + int((_u(i, hour, 10 + n) - 0.5) * 160)
        watts = int(imp / 3 * (0.8 + 0.4 * _u(i, hour, 20 + n)))
        total += watts
        v["1.0.%d.7.0.255" % (ph + 11)] = volts / 10
        v["1.0.%d.7.0.255" % ph] = watts
        v["1.0.%d.7.0.255" % (ph + 10)] = int(watts / (volts / 10) * 1000) / 1000
    v["1.0.1.7.0.255"] = total
    v["1.0.3.7.0.255"] = imp // 5
    v["1.0.13.7.0.255"] = (900 + int(_u(i, hour, 30) * 95)) / 1000
    v["1.0.14.7.0.255"] = (4995 + int(_u(i, hour, 31) * 10)) / 100
    v["0.0.96.3.10.255"] = 1
    v["0.0.97.97.0.255"] = 0
    return v


def test_64_meters_keyframe_then_deltas_sealed():
    cums = [[1000000 * (i + 1), 500000, 300000, 150000, 50000, 0, 200000] for i in range(64)]
    sealer = Sealer("dc-64", bytes(32), MemoryBootStore())
    ks = Keyring()
    ks.add("dc-64", bytes(32))
    window = ReplayWindow()
    agent, hes = None, None
    sizes = []
    for hour in range(4):
        ts = T0 + 3600 * hour
        rows = [("%08d" % (10000000 + i), ts, _meter(i, hour, cums[i])) for i in range(64)]
        assert len(rows[0][2]) == 27
        b = Batch("dc-64", hour + 1, ts + 30, rows, [], [(r[0], "ok", None) for r in rows])
        sealed = sealer.seal(encode_batch(b, agent))
        d = decode_batch(open_envelope(sealed, ks, window).payload, hes)
        assert d == b
        agent = agent or CodecState("dc-64")
        hes = hes or CodecState("dc-64")
        agent.advance(b)
        hes.advance(d)
        assert agent.digest() == hes.digest()
        sizes.append(len(sealed))
    assert sizes[0] > 2 * max(sizes[1:])
    assert max(sizes[1:]) < 64 * 18
