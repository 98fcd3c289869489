"""pymodbus as an independent oracle, both ways (issue 9, failure 1).

- pymodbus's own ``ModbusSerialServer`` serving only the public Eastron SDM630
  / SDM120 input maps (no serial number at holding 0xFC00), read by
  ``wum read`` in its own process and by ``wum run`` (a real archive): every
  profile register equal to what the oracle serves, the refused identity
  skipped and reported once, the fallback id of docs/INTERFACES.md.
- pymodbus's own sync serial client reading ``wum-hil simulate`` (its own
  process, a pty) at the public tables' addresses, decoding with pymodbus's
  converters: the values of ``hil.model.MeterModel``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from pymodbus.client import ModbusSerialClient

from drivers.modbus.profile import load
from hil.model import HOUR, ORIGIN, MeterModel
from tests.modbus_oracle import MAPS, OracleServer, device, expected

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = ORIGIN + 40 * 86400 + 13 * HOUR          # an hour boundary: energy is exact
FROZEN = "%d,0,1e-12" % T0                    # ScaledClock spec: time stands still
SERIAL = 64512                                # Eastron holding 0xFC00
PROFILES = ["eastron-sdm630", "eastron-sdm120"]


def wum(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("profile", PROFILES)
def test_wum_read_skips_the_refused_serial_of_the_public_map(profile):
    model = MeterModel(1, 1)
    with OracleServer([device(profile, 1, model, T0)], baud=9600) as oracle:
        r = wum("read", "--port", oracle.path, "--baud", "9600", "--protocol", "modbus",
                "--profile", profile, "--address", "1", "--json")
        asked = list(oracle.requests)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    # Contract keys unchanged, one key added.
    assert set(doc) == {"meter", "registers", "profile", "skipped"}
    assert doc["meter"] == {"protocol": "modbus", "address": "1",
                            "id": "%s:modbus:1" % oracle.path}      # docs/INTERFACES.md
    assert doc["skipped"] == [{"obis": "0.0.96.1.0.255", "reason": "illegal_data_address"}]
    got = {x["obis"]: x["value"] for x in doc["registers"]}
    want = expected(model, T0)
    prof = load(profile)
    assert got == {reg.obis: want[reg.obis] for reg in prof.registers}
    assert "0.0.96.1.0.255" not in got
    # The serial number was asked once, alone; nothing else was refused.
    assert [a for a in asked if a[1] == 3] == [(1, 3, SERIAL, 2)]
    assert all(a[1] == 4 and a[2] + a[3] <= 0x50 or a[2] >= 0x156 for a in asked if a[1] != 3)


def test_wum_read_human_output_names_the_skip():
    with OracleServer([device("eastron-sdm120", 5, MeterModel(5, 1), T0)]) as oracle:
        r = wum("read", "--port", oracle.path, "--baud", "115200", "--protocol", "modbus",
                "--profile", "eastron-sdm120", "--address", "5")
    assert r.returncode == 0, r.stderr
    assert "modbus meter %s:modbus:5 at 5" % oracle.path in r.stdout
    assert "0.0.96.1.0.255" in r.stdout and "illegal_data_address" in r.stdout


def _agent_config(tmp_path, port: str) -> str:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("\n".join([
        '[concentrator]', 'id = "DC-ORACLE"', 'archive = "%s"' % (tmp_path / "a.db"),
        '[schedule]', 'period = 3600', 'jitter = 0', 'meter_budget = 30', 'retries = 1',
        '[uplink]', 'transport = "none"',
        '[[bus]]', 'name = "bus1"', 'port = "%s"' % port, 'baud = 9600',
        'protocol = "modbus"', 'timeout = 0.5',
        '[[bus.meter]]', 'address = "1"', 'profile = "eastron-sdm630"',
        '[[bus.meter]]', 'address = "2"', 'profile = "eastron-sdm120"', '']))
    return str(cfg)


def test_agent_cycles_skip_the_refused_serial_once(tmp_path):
    """``wum run`` for three cycles against one bus with an SDM630 (unit 1) and
    an SDM120 (unit 2) served by pymodbus: both read every cycle, the serial
    asked and reported once per meter, readings under the fallback id."""
    models = {1: MeterModel(1, 1), 2: MeterModel(2, 1)}
    devices = [device("eastron-sdm630", 1, models[1], T0),
               device("eastron-sdm120", 2, models[2], T0)]
    with OracleServer(devices, baud=9600) as oracle:
        cfg = _agent_config(tmp_path, oracle.path)
        # 3600 simulated s per wall s: the next two cycles follow within ~2 s.
        clock = "%d,%r,3600" % (T0 + 60, time.time())
        r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", cfg,
                            "--cycles", "3", "--clock", clock], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        asked = list(oracle.requests)
    assert r.returncode == 0, r.stderr
    assert sorted(a for a in asked if a[1] == 3) == [(1, 3, SERIAL, 2), (2, 3, SERIAL, 2)]
    assert r.stderr.count("refused optional 0.0.96.1.0.255") == 2   # logged once per meter
    db = sqlite3.connect(str(tmp_path / "a.db"))
    rows = db.execute("SELECT r.cycle, m.address, r.status, r.error FROM cycle_result r "
                      "JOIN meter m ON m.id = r.meter ORDER BY r.cycle, m.address").fetchall()
    assert [(c, a, s) for c, a, s, _ in rows] == [
        (c, a, "read") for c in (1, 2, 3) for a in ("1", "2")], rows
    first = [e for c, _, _, e in rows if c == 1]
    assert all(e.count("0.0.96.1.0.255 (illegal_data_address)") == 1 for e in first), first
    assert [e for c, _, _, e in rows if c > 1] == [None] * 4          # not reported again
    db.close()
    # The fallback id everywhere the archive names the meter.
    show = wum("archive", "show", "--config", cfg)
    assert show.returncode == 0, show.stderr
    lines = [json.loads(line) for line in show.stdout.splitlines()]
    assert {x["meter"] for x in lines} == {"bus1:modbus:1", "bus1:modbus:2"}
    for x in lines:
        unit = int(x["meter"].rsplit(":", 1)[1])
        prof = load("eastron-sdm630" if unit == 1 else "eastron-sdm120")
        want = expected(models[unit], T0)
        assert x["values"] == {reg.obis: want[reg.obis] for reg in prof.registers}
    assert len(lines) == 6                                            # 3 cycles x 2 meters
    one = wum("archive", "show", "--config", cfg, "--meter", "bus1:modbus:2")
    assert one.returncode == 0, one.stderr
    assert [json.loads(line)["meter"] for line in one.stdout.splitlines()] == \
        ["bus1:modbus:2"] * 3
    st = wum("status", "--config", cfg, "--json")
    meters = json.loads(st.stdout)["meters"]
    assert [(m["address"], m["serial"], m["status"], m["error"]) for m in meters] == [
        ("1", "bus1:modbus:1", "read", None), ("2", "bus1:modbus:2", "read", None)]


@contextlib.contextmanager
def simulator(profile: str):
    cmd = [sys.executable, "-m", "hil.cli", "simulate", "--port", "pty", "--meters", "2",
           "--protocol", "modbus", "--profile", profile, "--baud", "9600", "--clock", FROZEN]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        path = proc.stdout.readline().strip()         # type: ignore[union-attr]
        json.loads(proc.stdout.readline())            # type: ignore[union-attr]
        assert path.startswith("/dev/"), proc.stderr.read()  # type: ignore[union-attr]
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _pymodbus(path: str) -> ModbusSerialClient:
    client = ModbusSerialClient(port=path, baudrate=9600, timeout=1, retries=1)
    assert client.connect()
    return client


def _float32(client: ModbusSerialClient, address: int, unit: int) -> float:
    rr = client.read_input_registers(address, count=2, device_id=unit)
    assert not rr.isError(), rr
    value = client.convert_from_registers(rr.registers, data_type=client.DATATYPE.FLOAT32)
    assert isinstance(value, float)
    return value


@pytest.mark.parametrize("profile", PROFILES)
def test_pymodbus_client_reads_our_eastron_simulator(profile):
    """At every address of the public table our profile maps, pymodbus reads
    the model's value; the serial number at 0xFC00 is the model's too."""
    table = {a: o for a, o in MAPS[profile].items() if o is not None}
    decimals = {r.obis: r.decimals for r in load(profile).registers}
    with simulator(profile) as path:
        client = _pymodbus(path)
        try:
            got = {unit: {obis: _float32(client, a, unit) for a, obis in table.items()}
                   for unit in (1, 2)}
            serial = client.read_holding_registers(SERIAL, count=2, device_id=2)
            block = client.read_input_registers(0, count=80, device_id=1)   # one request
        finally:
            client.close()
    assert not serial.isError() and not block.isError()
    assert client.convert_from_registers(serial.registers,
                                         data_type=client.DATATYPE.UINT32) == \
        int(MeterModel(2, 1).serial)
    for unit in (1, 2):
        want = expected(MeterModel(unit, 1), T0)
        for obis, value in got[unit].items():
            if obis.endswith(".8.0.255"):                 # kWh at 0.01 kWh
                assert round(value * 100) * 10 == want[obis], obis
            else:
                assert round(value, decimals[obis]) == want[obis], obis
    words = block.registers
    assert client.convert_from_registers(words[0x48:0x4A], data_type=client.DATATYPE.FLOAT32) \
        == pytest.approx(got[1]["1.0.1.8.0.255"])


def test_pymodbus_client_reads_our_generic_simulator():
    """The generic profile's integer map, decoded by pymodbus's converters."""
    prof = load("generic")
    kinds = {"u16": "UINT16", "u32": "UINT32", "u64": "UINT64", "s32": "INT32"}
    with simulator("generic") as path:
        client = _pymodbus(path)
        try:
            rr = client.read_input_registers(0, count=53, device_id=1)
        finally:
            client.close()
    assert not rr.isError()
    want = MeterModel(1, 1).registers(T0)
    for reg in prof.registers:
        raw = client.convert_from_registers(rr.registers[reg.address:reg.end],
                                            data_type=getattr(client.DATATYPE, kinds[reg.type]))
        assert raw * 10 ** reg.exponent == pytest.approx(want[reg.obis], abs=1e-9), reg.obis
    assert client.convert_from_registers(rr.registers[51:53], data_type=client.DATATYPE.UINT32) \
        == int(MeterModel(1, 1).serial)
