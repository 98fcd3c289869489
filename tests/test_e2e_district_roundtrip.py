"""The contract round trip at district scale: a 45-day, 64-meter synthetic
district (hil.district) through `wum uplink simulate` → `hes-lite ingest` →
`hes-lite export --format jsonl` comes back equal as data, line for line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hil.district import write_readings_jsonl
from hil.model import ORIGIN

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_45_days_64_meters_simulate_ingest_export(tmp_path):
    readings = tmp_path / "district.jsonl"
    n = write_readings_jsonl(str(readings), meters=64, days=45, seed=9, start=ORIGIN + 86400)
    assert n == 64 * 45 * 24
    key = os.urandom(32).hex()
    out = tmp_path / "batches"
    subprocess.run([BIN / "wum", "uplink", "simulate", "--readings", str(readings),
                    "--device-id", "DC-45", "--key", key, "--out", str(out)], check=True)
    files = sorted(out.iterdir())
    assert len(files) == 45 * 24
    # The wire budget: <= 18 bytes per meter-hour, envelope included.
    assert sum(f.stat().st_size for f in files) / (64 * 45 * 24) <= 18.0
    db = "sqlite:///%s" % (tmp_path / "hes.db")
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
