"""bench/command_verify.py still runs (a few repetitions) and measures all
four paths; the figures are not asserted (the machine is shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_command_verify_bench_runs_small():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "command_verify.py"), "--n", "3"],
                         capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["command_bytes"] == 118
    for path in ("cpython_openssl", "cpython_pure", "cpython_open_envelope"):
        assert doc[path]["median_s"] > 0
    mpy = doc["micropython_wasm_pure"]
    assert "error" not in mpy, mpy
    assert "skipped" in mpy or mpy["median_s"] > 0
