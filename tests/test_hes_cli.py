"""The ``hes-lite`` command line as a user runs it (real subprocesses):
keys, ingest contract, export round trip in every format, --help."""

import csv
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile

import pytest

from hes_lite import export, wire

KEY_HEX = "c0ffee00112233445566778899aabbccddeeff0011223344556677889900aabb"
KEY = bytes.fromhex(KEY_HEX)
T0 = 1780272000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hes(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", "hes_lite.cli", *args], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def expected_lines(devices=("c1", "c2"), hours=3, meters=5):
    out = []
    for d in devices:
        for m in range(meters):
            for h in range(1, hours + 1):
                out.append({"meter": f"{d}-{m:02d}", "ts": export.rfc3339(T0 + 3600 * h),
                            "values": {"1.0.1.8.0.255": 1_000_000 * m + 777 * h,
                                       "1.0.32.7.0.255": 229.9 + m / 10,
                                       "1.0.13.7.0.255": 0.1 + 0.2 * h,
                                       "0.0.97.97.0.255": 0}})
    return out


def write_batches(folder, devices=("c1", "c2"), hours=3, meters=5):
    os.makedirs(folder, exist_ok=True)
    lines = expected_lines(devices, hours, meters)
    for d in devices:
        for h in range(1, hours + 1):
            rows = {ln["meter"]: [(T0 + 3600 * h, ln["values"])] for ln in lines
                    if ln["meter"].startswith(d + "-") and ln["ts"] == export.rfc3339(T0 + 3600 * h)}
            with open(os.path.join(folder, f"{d}-{h:04d}.bin"), "wb") as f:
                f.write(wire.seal_batch(KEY, d, 0, h, h, rows, units={"1.0.1.8.0.255": "Wh"}))
    return lines


@pytest.fixture
def db(db_url):
    url = db_url
    for d in ("c1", "c2"):
        hes("keys", "add", d, "--key", KEY_HEX, "--db", url)
    return url


def test_help_describes_every_command():
    top = hes("--help").stdout
    for cmd in ("serve", "keys", "ingest", "export"):
        assert cmd in top
    for sub in (["serve"], ["keys", "add"], ["keys", "list"], ["keys", "revoke"],
                ["keys", "rotate"], ["ingest"], ["export"]):
        assert "--db" in hes(*sub, "--help").stdout


def test_keys_never_printed(db):
    out = hes("keys", "list", "--db", db).stdout
    assert "c1\t0\t" in out and KEY_HEX not in out.lower() and KEY_HEX[:16] not in out
    rot = hes("keys", "rotate", "c1", "--key", "11" * 32, "--db", db).stdout
    assert rot.startswith("c1 epoch 1 ") and "11" * 16 not in rot
    assert "revoked" in hes("keys", "revoke", "c2", "--db", db).stdout
    out = hes("keys", "list", "--db", db).stdout.splitlines()
    assert [ln.split("\t")[1:4:2] for ln in out] == [["0", "active"], ["1", "active"],
                                                     ["0", "revoked"]]
    assert hes("keys", "add", "c3", "--key", "zz", "--db", db, ok=False).returncode == 2
    assert hes("keys", "add", "c3", "--key", "11" * 16, "--db", db, ok=False).returncode == 2
    assert hes("keys", "rotate", "c9", "--key", "11" * 32, "--db", db, ok=False).returncode == 1


def test_ingest_then_export_reproduces_input(db, tmp_path):
    lines = write_batches(tmp_path / "b")
    p = hes("ingest", str(tmp_path / "b"), "--db", db)
    assert json.loads(p.stdout) == {"accepted": 6, "duplicates": 0, "rejected": {}}
    p = hes("ingest", str(tmp_path / "b" / "c1-0001.bin"), "--db", db)
    assert json.loads(p.stdout) == {"accepted": 0, "duplicates": 1, "rejected": {}}
    out = tmp_path / "out.jsonl"
    hes("export", "--db", db, "--format", "jsonl", "-o", str(out))
    text = out.read_text()
    assert [json.loads(x) for x in text.splitlines()] == lines
    # the batch codec's canonical rows have OBIS keys in string order; so does the export
    assert text == "".join(json.dumps({**x, "values": dict(sorted(x["values"].items()))}) + "\n"
                           for x in lines)
    got = [json.loads(x) for x in text.splitlines()]
    assert all(type(g["values"]["1.0.1.8.0.255"]) is int for g in got)
    one = hes("export", "--db", db, "--format", "jsonl", "--meter", "c2-03", "--from",
              export.rfc3339(T0 + 7200), "--to", str(T0 + 7200), "-o", "-").stdout
    assert [json.loads(x) for x in one.splitlines()] == [
        x for x in lines if x["meter"] == "c2-03" and x["ts"] == export.rfc3339(T0 + 7200)]


def test_ingest_counts_rejects_and_exits_nonzero(db, tmp_path):
    write_batches(tmp_path / "b", devices=("c1",), hours=2)
    good = (tmp_path / "b" / "c1-0001.bin").read_bytes()
    (tmp_path / "b" / "x-bad.bin").write_bytes(good[:-1] + bytes([good[-1] ^ 4]))
    (tmp_path / "b" / "y-short.bin").write_bytes(good[:10])
    p = hes("ingest", str(tmp_path / "b"), "--db", db, ok=False)
    assert p.returncode == 1
    assert json.loads(p.stdout) == {"accepted": 2, "duplicates": 0,
                                    "rejected": {"bad_tag": 1, "truncated": 1}}
    assert KEY_HEX not in p.stderr.lower()


def test_every_export_format(db, tmp_path):
    lines = write_batches(tmp_path / "b", devices=("c1",), hours=2, meters=3)
    hes("ingest", str(tmp_path / "b"), "--db", db)
    outs = {}
    for fmt in export.FORMATS:
        path = tmp_path / f"out.{fmt}"
        hes("export", "--db", db, "--format", fmt, "-o", str(path))
        outs[fmt] = path
    assert json.loads(outs["json"].read_text())["readings"] == lines
    rows = list(csv.reader(io.StringIO(outs["csv"].read_text())))
    assert rows[0][:4] == ["meter", "ts", "0.0.97.97.0.255", "1.0.1.8.0.255 [Wh]"]
    assert len(rows) == 7 and rows[1][:4] == ["c1-00", export.rfc3339(T0 + 3600), "0", "777"]
    assert len(outs["txt"].read_text().splitlines()) == 7
    root = ET.parse(outs["xml"]).getroot()
    first = root.find("reading")
    assert first.get("meter") == "c1-00" and first.find("value").text == "0"
    assert first.findall("value")[1].get("unit") == "Wh"
    with zipfile.ZipFile(outs["xlsx"]) as z:
        assert "xl/worksheets/sheet1.xml" in z.namelist()


def test_xlsx_splits_sheets_at_the_row_limit(tmp_path):
    rows = [("m", T0 + 3600 * i, {"a": i}) for i in range(10)]
    path = tmp_path / "x.xlsx"
    assert export.write_xlsx(str(path), iter(rows), {"a": "Wh"}, max_rows=4) == 10
    with zipfile.ZipFile(path) as z:
        sheets = sorted(n for n in z.namelist() if n.startswith("xl/worksheets/sheet"))
        assert sheets == [f"xl/worksheets/sheet{i}.xml" for i in (1, 2, 3, 4)]
        assert z.read("xl/worksheets/sheet1.xml").count(b"<row ") == 4


def test_unreachable_postgres_is_a_clear_error_without_password(tmp_path):
    p = hes("ingest", str(tmp_path), "--db", "postgresql://u:pw@127.0.0.1:1/db", ok=False)
    assert p.returncode == 2 and "cannot connect to PostgreSQL" in p.stderr
    assert "u:pw@" not in p.stderr
