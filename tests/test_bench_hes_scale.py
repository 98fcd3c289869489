"""The scale-out benchmark script still runs (a small fleet, two
workers, on the session's PostgreSQL): its own checks — every reading and
cycle result stored, no backlog — pass and it prints its JSON. Not a timed
test: the figures are not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_hes_scale_bench_runs_small(tmp_path, pg_cluster):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "hes_scale.py"), "--concentrators", "6",
         "--workers", "2", "--group", "2", "--export-rows", "200", "--workdir", str(tmp_path),
         "--pg", pg_cluster.url()],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["readings_per_burst"] == 6 * 64 * 27
    pg = doc["postgresql"]
    for n in (2,):
        for burst in ("keyframe_burst", "delta_burst"):
            assert pg["workers_%d" % n][burst]["readings_per_s"] > 0
            assert pg["workers_%d" % n][burst]["worker_cpu_ms_per_batch"] > 0
    assert set(pg["export_rows_per_s"]) >= {"json", "jsonl", "csv", "xlsx", "xml", "txt"}
    assert doc["sqlite"]["delta_burst"]["readings_per_s"] > 0
    assert list(tmp_path.iterdir()) == []  # the script cleans up after itself
