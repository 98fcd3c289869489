"""The contract round trip at district scale: a 45-day, 64-meter synthetic
district (hil.district) through `wum uplink simulate` → `hes-lite ingest` →
`hes-lite export --format jsonl` comes back equal as data, line for line —
into SQLite and into PostgreSQL (the district and its batches are made once
for both). Ingesting again gives all duplicates, and the same spoiled
files are refused for the same reasons by both stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hes_lite import wire
from hil.district import write_readings_jsonl
from hil.model import ORIGIN

BIN = Path(sys.executable).parent
REJECTS = {"bad_tag": 1, "device_mismatch": 1, "truncated": 1, "unknown_key": 1}


@pytest.fixture(scope="module")
def district(tmp_path_factory):
    """(readings.jsonl, batch folder, spoiled folder, key hex), made once."""
    tmp = tmp_path_factory.mktemp("district")
    readings = tmp / "district.jsonl"
    n = write_readings_jsonl(str(readings), meters=64, days=45, seed=9, start=ORIGIN + 86400)
    assert n == 64 * 45 * 24
    key = os.urandom(32).hex()
    out = tmp / "batches"
    subprocess.run([BIN / "wum", "uplink", "simulate", "--readings", str(readings),
                    "--device-id", "DC-45", "--key", key, "--out", str(out)], check=True)
    files = sorted(out.iterdir())
    assert len(files) == 45 * 24
    # The wire budget: <= 18 bytes per meter-hour, envelope included.
    assert sum(f.stat().st_size for f in files) / (64 * 45 * 24) <= 18.0
    spoiled = tmp / "spoiled"
    spoiled.mkdir()
    good = files[-1].read_bytes()
    (spoiled / "flipped.bin").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))   # bad_tag
    (spoiled / "short.bin").write_bytes(good[:9])                             # truncated
    stranger = good.replace(b"DC-45", b"DC-77", 1)                            # unknown_key
    (spoiled / "stranger.bin").write_bytes(stranger)
    # a keyframe naming DC-45, sealed by DC-99 with its own (registered) key
    keyframe = wire.open_envelope(files[0].read_bytes(), bytes.fromhex(key))
    (spoiled / "mismatch.bin").write_bytes(wire.seal(bytes.fromhex(key), "DC-99", 0, 1,
                                                     keyframe))
    return readings, out, spoiled, key


@pytest.mark.slow
@pytest.mark.timeout(900)   # the first one also makes the district (minutes on a busy machine)
def test_45_days_64_meters_simulate_ingest_export(district, db_url, tmp_path):
    readings, out, spoiled, key = district
    files = sorted(out.iterdir())
    db = db_url
    subprocess.run([BIN / "hes-lite", "keys", "add", "DC-45", "--key", key, "--db", db],
                   check=True, capture_output=True)
    ing = subprocess.run([BIN / "hes-lite", "ingest", str(out), "--db", db],
                         capture_output=True, text=True)
    assert ing.returncode == 0, ing.stderr[-2000:]
    summary = json.loads(ing.stdout)
    assert summary == {"accepted": len(files), "duplicates": 0, "rejected": {}}
    exported = tmp_path / "export.jsonl"
    subprocess.run([BIN / "hes-lite", "export", "--db", db, "--format", "jsonl",
                    "-o", str(exported)], check=True)
    want = [json.loads(line) for line in readings.read_text().splitlines()]
    got = [json.loads(line) for line in exported.read_text().splitlines()]
    key_of = lambda r: (r["meter"], r["ts"])  # noqa: E731
    assert sorted(got, key=key_of) == sorted(want, key=key_of)
    # Ints stay ints and floats stay floats, value by value.
    types = {(r["meter"], r["ts"], k): type(v) for r in want for k, v in r["values"].items()}
    assert all(types[(r["meter"], r["ts"], k)] is type(v)
               for r in got for k, v in r["values"].items())
    # Ingesting the same files again changes nothing: all duplicates.
    again = subprocess.run([BIN / "hes-lite", "ingest", str(out), "--db", db],
                           capture_output=True, text=True)
    assert json.loads(again.stdout)["duplicates"] == len(files)
    # Spoiled files: refused for the same reasons in both stores, nothing lost.
    subprocess.run([BIN / "hes-lite", "keys", "add", "DC-99", "--key", key, "--db", db],
                   check=True, capture_output=True)
    bad = subprocess.run([BIN / "hes-lite", "ingest", str(spoiled), "--db", db],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert json.loads(bad.stdout) == {"accepted": 0, "duplicates": 0, "rejected": REJECTS}
    subprocess.run([BIN / "hes-lite", "export", "--db", db, "--format", "jsonl",
                    "-o", str(exported)], check=True)
    again = [json.loads(line) for line in exported.read_text().splitlines()]
    assert sorted(again, key=key_of) == sorted(want, key=key_of)
