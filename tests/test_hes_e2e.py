"""The contract end to end, as users run it: ``wum uplink simulate`` →
``hes-lite ingest`` → ``hes-lite export --format jsonl`` gives back the input
file exactly (ints stay ints, floats round-trip by repr, nulls stay null)."""

import json
import os
import subprocess
import sys

from hes_lite import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY_HEX = "7e" * 32
T0 = 1780272000


def run(*argv, ok=True):
    p = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=ROOT,
                       timeout=180)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def readings():
    lines = []
    for m in range(5):
        for h in range(30):
            vals = {"0.0.97.97.0.255": (m + h) % 3,
                    "1.0.1.7.0.255": None if (m, h) == (2, 7) else 100 * m + h,
                    "1.0.1.8.0.255": 12_345_678 + 911 * h + m,
                    "1.0.13.7.0.255": 0.1 + 0.2 if h == 3 else round(0.9 + (h % 10) / 100, 3),
                    "1.0.14.7.0.255": 49.98 + h / 100,
                    "1.0.32.7.0.255": 231.0 if h % 2 else 229.7}
            lines.append({"meter": f"9{m:07d}", "ts": export.rfc3339(T0 + 3600 * h),
                          "values": vals})
    return lines


def test_simulate_ingest_export_reproduces_input(tmp_path, db_url):
    src = tmp_path / "in.jsonl"
    text = "".join(json.dumps(x) + "\n" for x in readings())
    src.write_text(text)
    out = tmp_path / "batches"
    sim = run("agent.cli", "uplink", "simulate", "--readings", str(src), "--device-id", "e2e-1",
              "--key", KEY_HEX, "--out", str(out))
    assert json.loads(sim.stdout)["batches"] == 30
    db = db_url
    run("hes_lite.cli", "keys", "add", "e2e-1", "--key", KEY_HEX, "--db", db)
    got = run("hes_lite.cli", "ingest", str(out), "--db", db, "--workers", "2")
    assert json.loads(got.stdout) == {"accepted": 30, "duplicates": 0, "rejected": {}}
    dst = tmp_path / "out.jsonl"
    run("hes_lite.cli", "export", "--db", db, "--format", "jsonl", "-o", str(dst))
    assert dst.read_text() == text
    # again: every batch a duplicate, nothing changes
    again = run("hes_lite.cli", "ingest", str(out), "--db", db)
    assert json.loads(again.stdout) == {"accepted": 0, "duplicates": 30, "rejected": {}}
    run("hes_lite.cli", "export", "--db", db, "--format", "jsonl", "-o", str(dst))
    assert dst.read_text() == text


def test_ingest_out_of_order_and_tampered_files(tmp_path, db_url):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in readings()[:60]))
    out = tmp_path / "b"
    run("agent.cli", "uplink", "simulate", "--readings", str(src), "--device-id", "e2e-2",
        "--key", KEY_HEX, "--out", str(out))
    files = sorted(os.listdir(out))
    db = db_url
    run("hes_lite.cli", "keys", "add", "e2e-2", "--key", KEY_HEX, "--db", db)
    # the later half first (deltas without their base: kept raw), then the rest
    late = [str(out / f) for f in files[len(files) // 2:]]
    p = run("hes_lite.cli", "ingest", *late, "--db", db)
    assert json.loads(p.stdout)["accepted"] == len(late)
    bad = tmp_path / "bad.wub"
    data = bytearray((out / files[0]).read_bytes())
    data[-2] ^= 0x40
    bad.write_bytes(bytes(data))
    p = run("hes_lite.cli", "ingest", str(bad), str(out), "--db", db, ok=False)
    assert p.returncode == 1
    assert json.loads(p.stdout) == {"accepted": len(files) - len(late),
                                    "duplicates": len(late), "rejected": {"bad_tag": 1}}
    assert KEY_HEX not in p.stderr
    dst = tmp_path / "out.jsonl"
    run("hes_lite.cli", "export", "--db", db, "--format", "jsonl", "-o", str(dst))
    assert dst.read_text() == src.read_text()
