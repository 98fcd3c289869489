"""`wum-hil board`: the JSON line with both ptys, and a flash that is as
large as --flash-kb (a write beyond it fails with ENOSPC, as on a board)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hil.board import mpy_package

BIN = Path(sys.executable).parent


def test_board_prints_its_ptys_and_caps_its_flash() -> None:
    if shutil.which("node") is None or not mpy_package().exists():
        if os.environ.get("CI"):
            pytest.fail("simulated board unavailable")
        pytest.skip("simulated board unavailable")
    p = subprocess.Popen([str(BIN / "wum-hil"), "board", "--port", "pty", "--flash-kb", "16"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        info = json.loads(p.stdout.readline())
        assert os.path.exists(info["repl"]) and os.path.exists(info["uart"])
        assert info["flash_kb"] == 16
        code = ("import errno\nf = open('big.bin', 'wb')\ntry:\n for i in range(40):\n"
                "  f.write(bytes(1024))\nexcept OSError as e:\n print('full', e.args[0] == "
                "errno.ENOSPC if hasattr(errno, 'ENOSPC') else e.args[0] == 28, i)\n")
        r = subprocess.run([str(BIN / "mpremote"), "connect", info["repl"], "exec", code],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        words = r.stdout.split()
        assert words[:2] == ["full", "True"] and 10 <= int(words[2]) <= 16, r.stdout
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
