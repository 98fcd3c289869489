"""``wum-hil``: the rig over a pty pair (JUnit XML), simulate's stdout
contract and clean shutdown on SIGTERM, clear errors."""

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

from hil.model import MeterModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hil(*args, **kw):
    return subprocess.run([sys.executable, "-m", "hil.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, **kw)


def test_rig_pty_modbus_scenarios_and_junit(tmp_path):
    out = tmp_path / "rig.xml"
    r = hil("rig", "--pty", "--scenario", "modbus-read", "--scenario", "modbus-faults",
            "--junit", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS modbus-read" in r.stdout and "PASS modbus-faults" in r.stdout
    suite = ET.parse(out).getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == ["modbus-read", "modbus-faults"]


def test_rig_needs_ports_and_known_scenarios():
    r = hil("rig", "--scenario", "modbus-read")
    assert r.returncode == 2 and "--pty" in r.stderr
    r = hil("rig", "--pty", "--scenario", "nope")
    assert r.returncode == 2 and "unknown scenario" in r.stderr


def test_simulate_mix_prints_path_then_meters_and_stops_on_sigterm(tmp_path):
    link = tmp_path / "ttyWUM"
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "simulate", "--port", "pty",
                             "--meters", "6", "--protocol", "mix", "--seed", "9",
                             "--speed", "60", "--link", str(link)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        path = proc.stdout.readline().strip()
        info = json.loads(proc.stdout.readline())
        assert os.path.exists(path) and info["port"] == path
        assert os.path.realpath(link) == os.path.realpath(path)
        assert [m["protocol"] for m in info["meters"]] == ["dlms", "iec62056-21", "modbus"] * 2
        assert [m["serial"] for m in info["meters"]] == [MeterModel(i, 9).serial
                                                         for i in range(1, 7)]
        assert info["clock"].endswith(",60.0")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_missing_simulator_is_a_clear_error(monkeypatch):
    from hil import HilError, cli

    monkeypatch.setitem(cli.SIMULATORS, "dlms", ("hil.no_such_meter", "DlmsMeter"))
    try:
        cli.build_meters(2, "dlms", 1, cli.make_clock())
    except HilError as e:
        assert "no dlms simulator" in str(e)
    else:
        raise AssertionError("expected HilError")
