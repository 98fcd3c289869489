"""``wum scan``, ``wum read`` and ``wum dissect`` as a technician runs them
(real processes, a real pty with the simulator)."""

import json
import os
import subprocess
import sys

import pytest

from agent import field
from drivers.modbus import rtu
from hil.model import MeterModel
from tests.test_modbus_e2e import simulator, wum

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_scan_json_finds_every_meter():
    with simulator() as (path, info):
        r = wum("scan", "--port", path, "--protocol", "modbus", "--addresses", "1-10",
                "--timeout", "0.15", "--json")
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    assert [(m["address"], m["id"]) for m in found] == [
        (str(i), MeterModel(i, 1).serial) for i in range(1, 9)]
    assert all(m["protocol"] == "modbus" for m in found)
    assert [m["serial"] for m in info["meters"]] == [m["id"] for m in found]


def test_scan_table_output():
    with simulator() as (path, _):
        r = wum("scan", "--port", path, "--protocol", "modbus", "--addresses", "2,3",
                "--timeout", "0.15")
    assert r.returncode == 0 and "2 meter(s) found" in r.stdout


def test_read_human_output():
    with simulator() as (path, _):
        r = wum("read", "--port", path, "--protocol", "modbus", "--address", "1",
                "--registers", "1.0.14.7.0.255")
    assert r.returncode == 0, r.stderr
    assert MeterModel(1, 1).serial in r.stdout and "Hz" in r.stdout


def test_dissect_modbus_frames():
    req = rtu.read_request(3, 4, 0, 53).to_bytes().hex()
    r = wum("dissect", "--json", req)
    doc = json.loads(r.stdout)
    assert doc["protocol"] == "modbus-rtu"
    (f,) = doc["frames"]
    assert (f["direction"], f["address"], f["function_name"], f["start"], f["count"]) == (
        "request", 3, "read_input_registers", 0, 53)
    exc = rtu.exception_response(7, 3, 2).to_bytes().hex()
    doc = json.loads(wum("dissect", "--protocol", "modbus-rtu", "--json", exc).stdout)
    assert doc["frames"][0]["exception"] == {"code": 2, "name": "illegal_data_address"}
    resp = rtu.read_response(9, 3, [1, 2]).to_bytes().hex()
    doc = json.loads(wum("dissect", "--json", "ff00" + resp).stdout)
    assert doc["frames"][0]["registers"] == [1, 2] and doc["unparsed"] == 2


def test_dissect_bad_input():
    r = wum("dissect", "zz")
    assert r.returncode == 2 and "not hex" in r.stderr
    doc = json.loads(wum("dissect", "--protocol", "modbus-rtu", "--json", "0104000000").stdout)
    assert doc["frames"] == [] and "error" in doc


def test_read_unknown_profile_is_a_clear_error():
    with simulator() as (path, _):
        r = wum("read", "--port", path, "--protocol", "modbus", "--address", "1",
                "--profile", "acme-x1")
    assert r.returncode == 1 and "acme-x1" in r.stderr


def test_helpers():
    assert field.parse_addresses("1-3,7") == ["1", "2", "3", "7"]
    assert field.parse_addresses(None) is None
    assert field.parse_time("2026-06-01T00:00:00Z") == 1780272000
    assert field.parse_time("1780272000") == 1780272000
    assert field.rfc3339(1780272000) == "2026-06-01T00:00:00Z"
    with pytest.raises(field.TimeFormatError):
        field.parse_time("yesterday")
    assert field.guess_layer(bytes.fromhex("7ea00a")) == "hdlc"
    assert field.guess_layer(b"/?!\r\n") == "iec62056-21"
    assert field.guess_layer(rtu.read_request(1, 3, 0, 1).to_bytes()) == "modbus-rtu"


def test_wum_help_lists_field_commands():
    r = subprocess.run([sys.executable, "-m", "agent.cli", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert all(c in r.stdout for c in ("scan", "read", "dissect"))


def test_dissect_dispatches_to_other_protocols():
    dlms = pytest.importorskip("drivers.dlms")
    if not hasattr(dlms, "dissect"):
        pytest.skip("drivers.dlms has no dissect yet")
    r = wum("dissect", "--protocol", "hdlc", "--json", "7ea0070303931e7e")
    assert r.returncode == 0, r.stderr
    assert isinstance(json.loads(r.stdout), dict)
    r = wum("dissect", "--json", "7ea0070303931e7e")          # auto: HDLC flag
    assert r.returncode == 0, r.stderr
