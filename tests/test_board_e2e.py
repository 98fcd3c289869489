"""The issue's first "must show", on the simulated board with the real
mpremote: build -> flash -> hard reset -> the board's main.py runs the agent
loop, reads a simulated DLMS and a Modbus meter through its UART bridge,
seals an hourly batch, and `hes-lite ingest` accepts it with the meters'
exact values. The provisioned config is written by this test (standing in
for `wum provision`, which another branch builds).

Also: the bundle's size is printed and every .mpy imports in a plain
MicroPython interpreter except the modules listed as hardware-only; a
tampered, incomplete or altered bundle is refused before anything is
copied; the board's REPL speaks raw-paste; cryptolib (where a board has it)
seals the same bytes as the HES's `cryptography`.

One board, one meter simulator and one bundle are shared by the module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from hil.board import SimBoard, mpy_package
from hil.model import MeterModel

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
T0 = 1780272000 + 86400 * 3 + 1800      # the meters' frozen time
SEED = 4
KEY = "5a" * 32
DEVICE = "sim-board-1"

pytestmark = pytest.mark.mpy


def _need_board() -> None:
    if shutil.which("node") is None or not mpy_package().exists():
        msg = "simulated board unavailable: node or the MicroPython package is missing"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def _run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fw") / "bundle"
    r = _run(BIN / "wum", "firmware", "build", "--target", "micropython", "--board", "sim",
             "--out", str(out))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    print("bundle size: %d bytes in %d files" % (info["total_size"], info["files"]))
    assert info["total_size"] == json.loads((out / "manifest.json").read_text())["total_size"]
    return out


@pytest.fixture(scope="module")
def board() -> Iterator[SimBoard]:
    _need_board()
    with SimBoard(flash_kb=512) as b:
        yield b


@pytest.fixture(scope="module")
def meters(board: SimBoard) -> Iterator[dict[str, Any]]:
    """Address 1 DLMS, 2 IEC (not configured on the board), 3 Modbus, time frozen."""
    sim = subprocess.Popen(
        [str(BIN / "wum-hil"), "simulate", "--port", board.uart, "--meters", "3", "--protocol",
         "mix", "--baud", "38400", "--seed", str(SEED), "--clock",
         "%r,%r,%r" % (float(T0), time.time(), 1e-9)], stdout=subprocess.PIPE, text=True)
    assert sim.stdout is not None
    sim.stdout.readline()
    info = json.loads(sim.stdout.readline())
    yield info
    sim.terminate()
    sim.wait(10)


def _config(folder: Path) -> Path:
    """The device config `wum provision` will write (docs/firmware.md)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "device.json").write_text(json.dumps({
        "device_id": DEVICE, "root_key": KEY, "bus": {"uart": 1, "baud": 38400, "de": 4},
        "meters": [{"protocol": "dlms", "address": 1},
                   {"protocol": "modbus", "address": 3, "profile": "generic"}],
        "archive": {"kb": 64, "sector": 4096},
        "uplink": {"kind": "outbox", "dir": "data/outbox"}}))
    return folder


def test_every_mpy_imports_except_hardware_only(bundle: Path) -> None:
    """In a plain MicroPython interpreter (no `machine`): only the listed
    hardware-only modules may fail, and they must fail."""
    _need_board()
    manifest = json.loads((bundle / "manifest.json").read_text())
    script = """
const m = await import(process.env.WUM_MPY_MJS);
const fs = await import("node:fs");
const out = [];
const mp = await m.loadMicroPython({heapsize: 4 << 20, stdout: (l) => out.push(l),
                                    stderr: (l) => out.push(l)});
const walk = (d, rel) => { for (const e of fs.readdirSync(d, {withFileTypes: true})) {
  const p = d + "/" + e.name, r = rel + "/" + e.name;
  if (e.isDirectory()) { mp.FS.mkdirTree("/b" + r); walk(p, r); }
  else mp.FS.writeFile("/b" + r, fs.readFileSync(p)); } };
mp.FS.mkdirTree("/b"); walk(process.argv[1], "");
mp.runPython(`import sys
sys.path.insert(0, '/b')
for name in '${process.argv.slice(2).join(",")}'.split(','):
    try:
        __import__(name)
        print('OK', name)
    except Exception as e:
        print('FAIL', name, repr(e))`);
console.log(out.join("\\n"));
"""
    # The module comes by environment: micropython.mjs runs as a command line
    # (reading argv[2] as a script) when argv[1] names it.
    r = subprocess.run(["node", "--input-type=module", "-e", script,
                        str(bundle), *manifest["modules"]], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "WUM_MPY_MJS": str(mpy_package())})
    assert r.returncode == 0, r.stderr
    failed = sorted(line.split()[1] for line in r.stdout.splitlines() if line.startswith("FAIL"))
    ok = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("OK")]
    assert failed == sorted(manifest["hardware_only"]) == ["firmware.board"], r.stdout
    assert len(ok) == len(manifest["modules"]) - 1
    assert all(p.endswith((".mpy", ".json")) or p == "main.py" for p in manifest["files"])
    assert "drivers.dlms.io" not in manifest["modules"]          # CPython-only: never shipped


@pytest.mark.parametrize("damage", ["tamper", "missing", "manifest"])
def test_flash_refuses_a_bundle_that_does_not_verify(
        bundle: Path, board: SimBoard, tmp_path: Path, damage: str) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    if damage == "tamper":
        p = bad / "agent" / "envelope.mpy"
        p.write_bytes(p.read_bytes()[:-1] + b"\x00")
        want = "agent/envelope.mpy does not match its manifest hash"
    elif damage == "missing":
        (bad / "firmware" / "loop.mpy").unlink()
        want = "firmware/loop.mpy is listed in the manifest but missing"
    else:
        m = json.loads((bad / "manifest.json").read_text())
        m["files"]["agent/batch.mpy"]["sha256"] = "0" * 64
        (bad / "manifest.json").write_text(json.dumps(m))
        want = "agent/batch.mpy does not match its manifest hash"
    r = _run(BIN / "wum", "flash", "--port", board.repl, "--bundle", str(bad), "--config",
             str(_config(tmp_path / "cfg")))
    assert r.returncode == 1 and "refused" in r.stderr and want in r.stderr, r.stderr


def test_the_repl_speaks_raw_paste(board: SimBoard) -> None:
    with serial.Serial(board.repl, 115200, timeout=2) as s:
        s.write(b"\r\x03\r\x01")
        got = b""
        deadline = time.monotonic() + 5
        while not got.endswith(b"raw REPL; CTRL-B to exit\r\n>") and time.monotonic() < deadline:
            got += s.read(1)
        s.write(b"\x05A\x01")
        head = s.read(4)
        assert head[:2] == b"R\x01"
        s.write(b"print(6*7)\x04")
        reply = s.read_until(b">")
        assert reply.startswith(b"\x04") and b"42" in reply and not reply.startswith(b"OK")
        s.write(b"\r\x02")


def test_board_reads_meters_and_the_hes_takes_the_exact_values(
        bundle: Path, board: SimBoard, meters: dict[str, Any], tmp_path: Path) -> None:
    r = _run(BIN / "wum", "flash", "--port", board.repl, "--bundle", str(bundle), "--config",
             str(_config(tmp_path / "cfg")))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] == json.loads(r.stdout)["files"]
    # a hard reset: main.py picks slot a and runs the loop (first cycle at once)
    r = _run(BIN / "mpremote", "connect", board.repl, "reset")
    assert r.returncode == 0, r.stderr
    console = b""
    with serial.Serial(board.repl, 115200, timeout=0.5) as s:
        deadline = time.monotonic() + 90
        while b"wum: cycle" not in console or not console.endswith(b"\n"):
            assert time.monotonic() < deadline, console.decode(errors="replace")
            console += s.read(256)
    line = console.split(b"wum: cycle ")[1].split(b"\r\n")[0]
    cycle = json.loads(line)
    assert cycle["meters"] == 2 and cycle["failed"] == 0 and cycle["stored"], cycle
    assert b"wum: retention" in console
    # mpremote interrupts the sleeping loop (Ctrl-C) and fetches the outbox
    got = tmp_path / "got"
    got.mkdir()
    name = "%s-%d.bin" % (DEVICE, cycle["seq"])
    r = _run(BIN / "mpremote", "connect", board.repl, "fs", "cp", ":data/outbox/" + name,
             str(got / name))
    assert r.returncode == 0, r.stderr + r.stdout
    db = "sqlite:///%s" % (tmp_path / "hes.db")
    assert _run(BIN / "hes-lite", "keys", "add", DEVICE, "--key", KEY, "--db", db).returncode == 0
    r = _run(BIN / "hes-lite", "ingest", str(got), "--db", db)
    assert r.returncode == 0 and json.loads(r.stdout)["accepted"] == 1, r.stdout + r.stderr
    out = tmp_path / "rows.jsonl"
    assert _run(BIN / "hes-lite", "export", "--db", db, "--format", "jsonl", "-o",
                str(out)).returncode == 0
    rows = {json.loads(x)["meter"]: json.loads(x)["values"] for x in out.read_text().split("\n")
            if x}
    for index in (1, 3):
        model = MeterModel(index, SEED)
        want = model.registers(T0)
        have = rows[model.serial]
        assert set(have) == set(want), model.serial
        for obis, v in want.items():
            assert have[obis] == pytest.approx(v, rel=0, abs=1e-9), (model.serial, obis)


def test_cryptolib_seals_the_same_bytes_as_the_hes(bundle: Path, tmp_path: Path) -> None:
    """A board with cryptolib (Node's OpenSSL behind MicroPython's interface)
    and CPython's `cryptography` produce the same sealed batch."""
    _need_board()
    from agent.crypto import ccm_seal
    key, nonce, aad, msg = bytes(range(16)), bytes(13), b"hdr", bytes(range(100))
    with SimBoard(flash_kb=512, cryptolib=True) as b:
        r = _run(BIN / "wum", "flash", "--port", b.repl, "--bundle", str(bundle), "--config",
                 str(_config(tmp_path / "cfg")))
        assert r.returncode == 0, r.stderr
        code = ("import sys\nsys.path.insert(0, 'wum/a')\nimport agent.crypto as c\nprint(repr(c.block_cipher(bytes(range(16)))))\n"
                "print(c.ccm_seal(bytes(range(16)), bytes(13), b'hdr', bytes(range(100))).hex())")
        r = _run(BIN / "mpremote", "connect", b.repl, "exec", code)
    assert r.returncode == 0, r.stderr
    backend, sealed = r.stdout.split()
    assert backend == "AESBlock(cryptolib)"
    assert bytes.fromhex(sealed) == ccm_seal(key, nonce, aad, msg, 8)
