"""The HES ingest benchmark script still runs (a small district, one repeat):
its own checks — every reading and cycle result stored — pass and it prints
its JSON. Not a timed test: the figures are not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_hes_ingest_bench_runs_small(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "hes_ingest.py"), "--concentrators", "6",
         "--repeat", "2", "--export-rows", "200", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["readings_per_burst"] == 6 * 64 * 27
    assert doc["repeats"] == 2 and len(doc["delta_burst"]["readings_per_s_each"]) == 2
    assert doc["delta_burst"]["batch_bytes_mean"] < doc["keyframe_burst"]["batch_bytes_mean"]
    assert set(doc["export_rows_per_s"]) >= {"json", "jsonl", "csv", "xlsx", "xml", "txt"}
    assert list(tmp_path.iterdir()) == []  # the script cleans up after itself
