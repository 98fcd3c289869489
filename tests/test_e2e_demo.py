"""The README's main job: `wum demo` runs HES-lite, a simulated bus and the
agent as one process tree and every reading the simulator produced arrives at
the HES exactly once and equal."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.agent_rig import WUM


def run_demo(*args: str, timeout: float = 300) -> dict:
    p = subprocess.run([WUM, "demo", "--json", *args], capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "RESULT: OK" in p.stdout
    assert "readings at the HES" in p.stdout        # the summary table
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_demo_modbus_every_reading_once_and_equal():
    s = run_demo("--meters", "4", "--hours", "3", "--speed", "900")
    assert s["meters"] == 4
    assert s["hes_values"] > 0 and s["hes_values"] == s["archived_values"]
    assert s["missing_at_hes"] == 0 and s["unequal"] == 0 and s["duplicates"] == 0
    assert s["profile_rows_equal_to_simulator"] > 0 and s["profile_rows_differing"] == 0
    assert s["batches_acked"] == s["batches"] and s["bytes_uploaded"] > 0


@pytest.mark.slow
def test_demo_mixed_protocols():
    s = run_demo("--protocol", "mix", "--meters", "3", "--hours", "2", "--speed", "300")
    assert s["meters"] == 3 and s["missing_at_hes"] == 0 and s["unequal"] == 0
    assert s["profile_rows_differing"] == 0 and s["profile_rows_equal_to_simulator"] > 0
