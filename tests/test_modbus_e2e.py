"""End to end over a real pseudo-terminal: ``wum-hil simulate`` in its own
process, ``wum read`` in another (and the driver in-process), values compared
with hil.model.MeterModel recomputed here; faults give typed errors and cost
bounded time."""

import contextlib
import json
import os
import subprocess
import sys
import time

import pytest

from drivers import DriverError, MeterTimeout, RemoteProtocolError
from drivers.modbus import open_client
from hil.bus import Bus, FaultSpec
from hil.modbus_meter import ModbusMeter
from hil.model import HOUR, ORIGIN, MeterModel
from hil.ports import open_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = ORIGIN + 40 * 86400 + 13 * HOUR          # an hour boundary: energy is exact
FROZEN = "%d,0,1e-12" % T0                    # ScaledClock spec: time stands still


@contextlib.contextmanager
def simulator(*extra):
    cmd = [sys.executable, "-m", "hil.cli", "simulate", "--port", "pty", "--meters", "8",
           "--protocol", "modbus", "--clock", FROZEN, *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        path = proc.stdout.readline().strip()
        info = json.loads(proc.stdout.readline())
        assert path.startswith("/dev/") and info["port"] == path
        yield path, info
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wum(*args, env=None):
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)


def expected(address, profile):
    vals = MeterModel(address, 1).registers(T0)
    if profile == "generic":
        return vals
    vals["1.0.15.8.0.255"] = vals["1.0.1.8.0.255"] + vals["1.0.2.8.0.255"]
    out = {}
    for obis, v in vals.items():
        if obis.endswith(".8.0.255"):
            v = v // 10 * 10                      # float32 kWh read at 0.01 kWh
        out[obis] = v
    return out


@pytest.mark.parametrize("profile", ["generic", "eastron-sdm630", "eastron-sdm120"])
def test_wum_read_returns_the_model(profile):
    with simulator("--profile", profile) as (path, info):
        assert [m["address"] for m in info["meters"]] == [str(i) for i in range(1, 9)]
        r = wum("read", "--port", path, "--protocol", "modbus", "--address", "3",
                "--profile", profile, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) == {"meter", "registers", "profile", "skipped"}
    assert doc["skipped"] == []               # this simulator has every register
    assert doc["meter"] == {"protocol": "modbus", "address": "3",
                            "id": MeterModel(3, 1).serial}
    want = expected(3, profile)
    got = {x["obis"]: x["value"] for x in doc["registers"]}
    assert got == {k: want[k] for k in got}
    assert len(got) == {"generic": 27, "eastron-sdm630": 18, "eastron-sdm120": 11}[profile]
    units = dict((x["obis"], x["unit"]) for x in doc["registers"])
    assert units["1.0.1.8.0.255"] == "Wh" and units["1.0.32.7.0.255"] == "V"
    for x in doc["registers"]:
        assert set(x) == {"obis", "value", "unit", "ts"}
        assert x["ts"].endswith("Z") and len(x["ts"]) == 20
    assert doc["profile"] == []


def test_wum_read_load_profile_and_subset():
    with simulator() as (path, _):
        r = wum("read", "--port", path, "--protocol", "modbus", "--address", "5",
                "--registers", "1.0.1.8.0.255,1.0.14.7.0.255", "--load-profile",
                "--from", str(T0 - 8 * HOUR), "--to", str(T0 + HOUR), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    model = MeterModel(5, 1)
    assert [(x["obis"], x["value"]) for x in doc["registers"]] == [
        ("1.0.1.8.0.255", model.registers(T0)["1.0.1.8.0.255"]),
        ("1.0.14.7.0.255", model.registers(T0)["1.0.14.7.0.255"])]
    # Rows up to the meter's own clock: T0 itself is there only if its clock is
    # not behind; T0 + 1 h is never there yet. 8 rows span two cursor windows.
    have = T0 if model.clock(T0) >= T0 else T0 - HOUR
    rows = [(ts, vals) for ts, vals in model.profile(T0 - 8 * HOUR, have)]
    assert len(doc["profile"]) == len(rows) >= 8
    for row, (ts, vals) in zip(doc["profile"], rows, strict=True):
        assert row["ts"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
        assert row["values"] == vals


def test_silent_meter_is_typed_error_exit_1():
    with simulator() as (path, _):
        r = wum("read", "--port", path, "--protocol", "modbus", "--address", "12",
                "--timeout", "0.2", "--retries", "1", "--json")
    assert r.returncode == 1
    assert "MeterTimeout" in r.stderr and r.stdout == ""


@contextlib.contextmanager
def bus(faults, n=8, seed=3):
    port = open_port("pty")
    meters = [ModbusMeter(MeterModel(i, 1), i, lambda: T0) for i in range(1, n + 1)]
    b = Bus(port, meters, baud=9600, faults=FaultSpec.parse(faults, seed)).start()
    try:
        yield port.agent_path
    finally:
        b.stop()
        port.close()


def read_all(path, n=8, timeout=0.3, retries=2):
    results = {}
    for unit in range(1, n + 1):
        c = open_client(path, unit, timeout=timeout, retries=retries)
        t = time.monotonic()
        try:
            vals = {r.obis: r.value for r in c.read_registers()}
            results[unit] = (vals, c.serial, time.monotonic() - t)
        except DriverError as e:
            results[unit] = (e, None, time.monotonic() - t)
        finally:
            c.close()
    return results


def test_crc_faults_and_a_dead_meter(caplog):
    timeout, retries = 0.3, 2
    with bus("crc=0.05,dead@4") as path:
        results = read_all(path, timeout=timeout, retries=retries)
    for unit, (vals, serial, _) in results.items():
        if unit == 4:
            continue
        assert vals == MeterModel(unit, 1).registers(T0), unit
        assert serial == MeterModel(unit, 1).serial
    err, _, spent = results[4]
    assert isinstance(err, MeterTimeout) and err.meter == "4"
    assert spent <= timeout * (retries + 1) + 0.3
    assert any("unit 4" in rec.getMessage() for rec in caplog.records)


def test_garbled_replies_are_remote_protocol_errors_and_the_bus_goes_on():
    with bus("crc@2=1.0,garbage@6=0.3,wrongaddr@7=0.3") as path:
        results = read_all(path, timeout=0.25, retries=3)
    err = results[2][0]
    assert isinstance(err, RemoteProtocolError) and err.meter == "2"
    assert err.flight and any(f["dir"] == "rx" for f in err.flight)
    for unit in (1, 3, 4, 5, 6, 7, 8):
        assert results[unit][0] == MeterModel(unit, 1).registers(T0), unit


def test_clients_share_one_port_and_control_the_relay():
    with bus("") as path:
        a = open_client(path, 1, timeout=0.5)
        b = open_client(path, 2, timeout=0.5)
        assert a.bus is b.bus and a.bus.users == 2
        b.disconnect()
        assert [r.value for r in b.read_registers(["0.0.96.3.10.255"])] == [0]
        b.reconnect()
        assert a.read_clock() == int(MeterModel(1, 1).clock(T0))
        a.set_clock(T0 + 100)
        assert abs(a.read_clock() - (T0 + 100)) <= 1
        a.close()
        assert b.bus.users == 1 and b.bus.pm.connected
        assert b.identify().id == MeterModel(2, 1).serial
        b.close()
        assert not b.bus.pm.connected


def test_link_option_runs_over_the_agents_port():
    from drivers.serialio import Link

    with bus("") as path:
        link = Link(path).connect()
        try:
            c = open_client(path, 3, link=link, timeout=0.5)
            assert c.identify().id == MeterModel(3, 1).serial
            c.close()
            assert link.is_open
            assert any(d == "rx" for _, d, _ in link.recorder.entries())
        finally:
            link.close()


def test_adapter_echo_is_discarded_when_asked():
    with bus("echo") as path:
        c = open_client(path, 2, timeout=0.5, retries=1, echo=True)
        try:
            assert {r.obis: r.value for r in c.read_registers()} == MeterModel(2, 1).registers(T0)
        finally:
            c.close()


def test_hold_port_keeps_one_port_across_clients():
    from drivers.modbus import hold_port

    with bus("") as path:
        with hold_port(path) as held:
            for unit in (1, 2, 3):
                c = open_client(path, unit, timeout=0.5)
                assert c.bus is held
                c.identify()
                c.close()
            assert held.pm.connected and held.users == 1
        assert not held.pm.connected


def test_garbled_and_misaddressed_replies_end_an_attempt_early():
    with bus("crc@2=1.0,wrongaddr@3=1.0") as path:
        for unit in (2, 3):
            c = open_client(path, unit, timeout=1.0, retries=1)
            t = time.monotonic()
            with pytest.raises(RemoteProtocolError) as ei:
                c.read_registers()
            c.close()
            assert time.monotonic() - t < 1.0, "a bad reply must not cost the timeout"
            assert ei.value.raw and ei.value.meter == str(unit)


def test_scan_with_faults_finds_every_live_meter():
    from drivers.modbus import scan

    with bus("crc=0.2,dead@4", seed=11) as path:
        found = scan(path, addresses=range(1, 10), timeout=0.2)
    assert [int(m.address) for m in found] == [1, 2, 3, 5, 6, 7, 8]
    assert all(m.id in ("", MeterModel(int(m.address), 1).serial) for m in found)
