"""``wum uplink simulate`` as a real process: the files it writes open with the
device key, decode in order against the acknowledged state chain, and give
back exactly the readings of the JSON-lines file; bad input exits 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agent.batch import CodecState, decode_batch
from agent.envelope import Keyring, ReplayWindow, open_envelope
from hil.district import district_readings, write_readings_jsonl

KEY = "5a" * 32


def wum(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)


def test_simulate_writes_one_acknowledged_batch_per_hour(tmp_path: Path) -> None:
    readings = tmp_path / "r.jsonl"
    write_readings_jsonl(str(readings), meters=6, days=2, seed=3)
    out = tmp_path / "out"
    r = wum("uplink", "simulate", "--readings", str(readings), "--device-id", "dc-42",
            "--key", KEY, "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    names = sorted(os.listdir(out))
    assert names == ["dc-42-%08d.wub" % i for i in range(1, 49)]
    assert summary["batches"] == 48
    assert summary["bytes"] == sum((out / n).stat().st_size for n in names)
    ks = Keyring()
    ks.add("dc-42", bytes.fromhex(KEY))
    window, state = ReplayWindow(), None
    got = []
    for n in names:
        opened = open_envelope((out / n).read_bytes(), ks, window)
        b = decode_batch(opened.payload, state)
        assert b.seq == int(n[6:14]) and opened.header.counter == b.seq - 1
        st = state if state is not None else CodecState("dc-42")
        st.advance(b)
        state = st
        got.extend(b.readings)
    want = sorted(district_readings(6, 2, 3), key=lambda x: (x[1], x[0]))
    assert sorted(got, key=lambda x: (x[1], x[0])) == want
    # Deltas after the first keyframe are far smaller than it.
    sizes = [(out / n).stat().st_size for n in names]
    assert max(sizes[1:24]) < sizes[0] / 2


def test_simulate_rejects_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"meter": "m", "ts": "2026-06-01T00:00:00Z", "values": {"x": "high"}}\n')
    out = str(tmp_path / "o")
    r = wum("uplink", "simulate", "--readings", str(bad), "--device-id", "d", "--key", KEY,
            "--out", out)
    assert r.returncode == 2 and "line 1" in r.stderr
    bad.write_text('{"meter": "m", "ts": "2026-06-01T00:00:00", "values": {}}\n')
    r = wum("uplink", "simulate", "--readings", str(bad), "--device-id", "d", "--key", KEY,
            "--out", out)
    assert r.returncode == 2 and "UTC" in r.stderr
    r = wum("uplink", "simulate", "--readings", str(bad), "--device-id", "d", "--key", "abcd",
            "--out", out)
    assert r.returncode == 2 and "64 hex" in r.stderr and "abcd" not in r.stderr
    r = wum("uplink", "simulate", "--readings", str(tmp_path / "none.jsonl"), "--device-id", "d",
            "--key", KEY, "--out", out)
    assert r.returncode == 2


def test_nulls_offsets_and_merged_lines(tmp_path: Path) -> None:
    lines = [
        {"meter": "a", "ts": "2026-06-01T02:00:00+02:00", "values": {"1.0.1.8.0.255": 5}},
        {"meter": "a", "ts": "2026-06-01T00:00:00Z", "values": {"1.0.32.7.0.255": None}},
        {"meter": "b", "ts": "2026-06-01T01:00:00Z", "values": {"1.0.1.8.0.255": 7.25}},
    ]
    p = tmp_path / "r.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    out = tmp_path / "o"
    assert wum("uplink", "simulate", "--readings", str(p), "--device-id", "d", "--key", KEY,
               "--out", str(out)).returncode == 0
    ks = Keyring()
    ks.add("d", bytes.fromhex(KEY))
    b1 = decode_batch(open_envelope((out / "d-00000001.wub").read_bytes(), ks).payload, None)
    assert b1.readings == [("a", 1780272000, {"1.0.1.8.0.255": 5, "1.0.32.7.0.255": None})]
    st = CodecState("d")
    st.advance(b1)
    b2 = decode_batch(open_envelope((out / "d-00000002.wub").read_bytes(), ks).payload, st)
    assert b2.readings == [("b", 1780275600, {"1.0.1.8.0.255": 7.25})]
