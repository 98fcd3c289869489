"""`wum firmware build`: only the drivers a board definition names go in;
the Linux bundle has its wheel, config template, unit and manifest; an
unknown board is a clear error; a non-MicroPython bundle is not flashed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from firmware import FirmwareError
from firmware.build import build_micropython, load_board, modules
from firmware.flash import BundleRejected, verify_bundle

BIN = Path(sys.executable).parent


def test_a_modbus_only_board_gets_no_dlms_stack(tmp_path: Path) -> None:
    mods = modules(load_board("modbus-only"))
    assert "drivers.modbus.rtu" in mods and not any(m.startswith("drivers.dlms") for m in mods)
    m = build_micropython("modbus-only", tmp_path / "b")
    assert not (tmp_path / "b" / "drivers" / "dlms").exists()
    assert set(m["files"]) >= {"main.py", "firmware/loop.mpy",
                               "drivers/modbus/profiles/eastron-sdm120.json"}
    assert verify_bundle(tmp_path / "b")["board"] == "modbus-only"


def test_an_unknown_board_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FirmwareError, match="no board definition 'nope'"):
        build_micropython("nope", tmp_path / "b")
    r = subprocess.run([str(BIN / "wum"), "firmware", "build", "--target", "micropython",
                        "--out", str(tmp_path / "c")], capture_output=True, text=True)
    assert r.returncode == 2 and "--board NAME is needed" in r.stderr


def test_linux_bundle_and_its_manifest(tmp_path: Path) -> None:
    out = tmp_path / "linux"
    r = subprocess.run([str(BIN / "wum"), "firmware", "build", "--target", "linux", "--out",
                        str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    m = json.loads((out / "manifest.json").read_text())
    assert info["total_size"] == m["total_size"] and m["target"] == "linux"
    assert m["wheel"].startswith("wum-") and m["wheel"].endswith(".whl")
    assert {m["wheel"], "agent.toml.example", "wum.service"} == set(m["files"])
    with pytest.raises(BundleRejected, match="a linux bundle, not one for a MicroPython board"):
        verify_bundle(out)
