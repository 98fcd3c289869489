"""The Linux launcher on its own, with small real slots whose "agent" is a
few lines of Python run as the launcher runs every agent (``python -P -m
agent.cli`` with the slot on PYTHONPATH): a new version that keeps crashing
is rolled back after its boots, a damaged slot is never booted, and a
version that commits in time stays."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

from agent.slots import Slots
from agent.update_linux import bundle_entries, install
from firmware.build import write_manifest
from firmware.launcher import Launcher

REPO = Path(__file__).resolve().parent.parent
AGENT = """import os, sys
with open(os.environ["WUM_TEST_LOG"], "a") as f:
    f.write("%s %s\\n" % (VERSION, os.environ["WUM_SLOT"]))
"""


def bundle(folder: Path, version: str, body: str) -> Path:
    folder.mkdir(parents=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for mod in ("agent/__init__.py", "agent/slots.py"):       # the real ones
            z.writestr(mod, (REPO / mod).read_text())
        z.writestr("agent/cli.py", "VERSION = %r\n" % version + AGENT + body)
    wheel = "wum-%s-py3-none-any.whl" % version
    (folder / wheel).write_bytes(buf.getvalue())
    write_manifest(folder, {"target": "linux", "board": "linux", "version": version,
                            "wheel": wheel})
    return folder


def put(slots: Slots, b: Path, trial: dict[str, object] | None = None) -> str:
    slot = install(slots, bundle_entries(b, json.loads((b / "manifest.json").read_text())))
    slots.switch(slot, trial)
    return slot


def booted(log: Path) -> list[str]:
    return log.read_text().split("\n")[:-1] if log.exists() else []


def test_a_crashing_new_version_is_rolled_back_after_its_boots(tmp_path: Path,
                                                              monkeypatch) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "boots"
    monkeypatch.setenv("WUM_TEST_LOG", str(log))
    slots = Slots(str(tmp_path / "slots"))
    old = put(slots, bundle(tmp_path / "b1", "1.0.0", "sys.exit(0)\n"))
    new = put(slots, bundle(tmp_path / "b2", "2.0.0", "sys.exit(1)\n"),
              {"counter": 4, "deadline": 0, "max_boots": 3})
    rc = Launcher(slots, sys.executable, []).loop()
    assert rc == 0                                   # the old version ran and exited 0
    assert booted(log) == ["2.0.0 " + new] * 3 + ["1.0.0 " + old]
    st = slots.state()
    assert st["active"] == old and st["trial"] is None
    assert st["last"]["outcome"] == "rolled_back" and st["last"]["counter"] == 4
    assert st["last"]["reason"] == "version 2.0.0 did not report healthy in 3 boots"


def test_a_damaged_slot_is_never_booted(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "boots"
    monkeypatch.setenv("WUM_TEST_LOG", str(log))
    slots = Slots(str(tmp_path / "slots"))
    old = put(slots, bundle(tmp_path / "b1", "1.0.0", "sys.exit(0)\n"))
    new = put(slots, bundle(tmp_path / "b2", "2.0.0", "sys.exit(0)\n"),
              {"counter": 5, "deadline": 0})
    cli = tmp_path / "slots" / new / "lib" / "agent" / "cli.py"
    cli.write_text(cli.read_text() + "# a flipped bit on the flash\n")
    assert Launcher(slots, sys.executable, []).loop() == 0
    assert booted(log) == ["1.0.0 " + old]
    last = slots.state()["last"]
    assert last["outcome"] == "rolled_back" and "lib/agent/cli.py is damaged" in last["reason"]


def test_a_version_that_commits_stays(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "boots"
    monkeypatch.setenv("WUM_TEST_LOG", str(log))
    slots = Slots(str(tmp_path / "slots"))
    put(slots, bundle(tmp_path / "b1", "1.0.0", "sys.exit(0)\n"))
    commit = "from agent.slots import Slots\nSlots(os.environ['WUM_SLOTS']).commit(1.0)\n"
    new = put(slots, bundle(tmp_path / "b2", "2.0.0", commit), {"counter": 6, "deadline": 0})
    assert Launcher(slots, sys.executable, []).loop() == 0
    assert booted(log) == ["2.0.0 " + new]
    st = slots.state()
    assert st["active"] == new and st["trial"] is None and st["last"]["outcome"] == "healthy"
