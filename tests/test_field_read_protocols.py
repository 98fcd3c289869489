"""The `wum read --json` contract against each protocol's simulator in its own
process over a pseudo-terminal: DLMS (no security, LLS, HLS-GMAC with suite-0
ciphering, a load profile spanning several HDLC segments and GET blocks) and
IEC 62056-21 — values exactly the simulator's (recomputed from the model)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from hil.model import HOUR, ORIGIN, MeterModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = ORIGIN + 40 * 86400 + 13 * HOUR          # an hour boundary: energy is exact
FROZEN = "%d,0,1e-12" % T0                    # ScaledClock spec: time stands still
EK = "000102030405060708090a0b0c0d0e0f"
AK = "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf"


@contextlib.contextmanager
def simulator(protocol: str, *extra: str):
    cmd = [sys.executable, "-m", "hil.cli", "simulate", "--port", "pty", "--meters", "3",
           "--protocol", protocol, "--clock", FROZEN, *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        path = proc.stdout.readline().strip()
        json.loads(proc.stdout.readline())
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def read(path: str, protocol: str, address: str, *extra: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "agent.cli", "read", "--port", path,
                        "--protocol", protocol, "--address", address, "--json", *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp())


def check(doc: dict, protocol: str, address: int, profile_hours: int = 0) -> None:
    model = MeterModel(address, 1)
    assert doc["meter"]["protocol"] == protocol
    assert str(doc["meter"]["address"]) == str(address)
    assert doc["meter"]["id"] == model.serial
    want = model.registers(T0)
    got = {r["obis"]: r["value"] for r in doc["registers"]}
    common = set(got) & set(want)
    assert len(common) >= 20, sorted(got)
    assert {o: got[o] for o in common} == {o: want[o] for o in common}
    for r in doc["registers"]:
        assert r["ts"].endswith("Z") and r["unit"] is not None
    if profile_hours:
        rows = {ts(p["ts"]): p["values"] for p in doc["profile"]}
        hours = range(T0 - profile_hours * HOUR, T0 + 1, HOUR)
        assert sorted(rows) == list(hours)
        for t in hours:
            want_row = model.profile_row(t)
            assert {o: rows[t][o] for o in want_row if o in rows[t]} == {
                o: v for o, v in want_row.items() if o in rows[t]}
            assert len(set(rows[t]) & set(want_row)) >= 2


def frm(hours: int) -> list[str]:
    start = datetime.fromtimestamp(T0 - hours * HOUR, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = datetime.fromtimestamp(T0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ["--load-profile", "--from", start, "--to", end]


@pytest.mark.parametrize("auth", ["none", "lls", "hls"])
def test_wum_read_dlms(auth: str) -> None:
    sim_extra: list[str] = ["--auth", auth]
    read_extra: list[str] = ["--auth", auth]
    if auth == "lls":
        sim_extra += ["--password", "12345678"]
        read_extra += ["--password", "12345678"]
    if auth == "hls":
        sim_extra += ["--ek", EK, "--ak", AK]
        read_extra += ["--ek", EK, "--ak", AK]
    with simulator("dlms", *sim_extra) as path:
        # 72 hourly rows: several HDLC segments and GET-with-data-block blocks.
        check(read(path, "dlms", "2", *read_extra, *frm(72)), "dlms", 2, profile_hours=72)


def test_wum_read_iec62056_21() -> None:
    with simulator("iec62056-21") as path:
        check(read(path, "iec62056-21", "3", *frm(6)), "iec62056-21", 3, profile_hours=6)
