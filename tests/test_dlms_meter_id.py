"""Issue 9, failure 3: a DLMS meter that has a logical device name
(0.0.42.0.0.255) but no serial-number object (0.0.96.1.0.255) goes by its
logical device name — the same id in ``wum read``, ``wum scan`` and the
agent's cycle (docs/INTERFACES.md, "meter id": serial number, then the
logical device name, then the agent's ``<bus>:<protocol>:<address>``)."""

import contextlib
import json
import os
import subprocess
import sys

import pytest

from agent.archive import Archive
from agent.clock import ScaledClock
from agent.config import BusConfig, Config, MeterConfig
from agent.cycle import BusCycle
from hil.bus import Bus
from hil.dlms_meter import DlmsMeter
from hil.model import HOUR, ORIGIN, MeterModel
from hil.ports import open_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = ORIGIN + 40 * 86400 + 13 * HOUR
FROZEN = "%d,0,1e-12" % T0                    # ScaledClock spec: time stands still
BAUD = "115200"


def ldn(address, seed=1):
    """What the simulator's 0.0.42.0.0.255 holds for meter ``address``."""
    return "WUM" + MeterModel(address, seed).serial


@pytest.fixture(scope="module")
def no_serial_bus():
    """``wum-hil simulate`` in its own process: two DLMS meters without 0.0.96.1.0.255."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "simulate", "--port", "pty", "--meters", "2",
         "--protocol", "dlms", "--no-serial-number", "--baud", BAUD, "--clock", FROZEN],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/"), proc.stderr.read()
        json.loads(proc.stdout.readline())
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wum(*args):
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "WUM_CLOCK": FROZEN})


def test_wum_read_json_goes_by_the_logical_device_name(no_serial_bus):
    r = wum("read", "--port", no_serial_bus, "--baud", BAUD, "--protocol", "dlms",
            "--address", "2", "--registers", "1.0.1.8.0.255", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["meter"] == {"protocol": "dlms", "address": "2", "id": ldn(2)}
    assert [x["value"] for x in doc["registers"]] == [MeterModel(2, 1).registers(T0)[
        "1.0.1.8.0.255"]]


def test_wum_scan_json_goes_by_the_logical_device_name(no_serial_bus):
    r = wum("scan", "--port", no_serial_bus, "--baud", BAUD, "--protocol", "dlms",
            "--addresses", "1-3", "--timeout", "0.3", "--json")
    assert r.returncode == 0, r.stderr
    assert [(m["address"], m["id"]) for m in json.loads(r.stdout)] == [
        ("1", ldn(1)), ("2", ldn(2))]


@contextlib.contextmanager
def dlms_bus(meters):
    port = open_port("pty")
    bus = Bus(port, meters, baud=int(BAUD), pace=False).start()
    try:
        yield port
    finally:
        bus.stop()
        port.close()


def test_agent_cycle_archives_the_logical_device_name(tmp_path):
    clock = ScaledClock(T0, 1.0)
    with_serial, without = MeterModel(1, seed=1), MeterModel(2, seed=1)
    meters = [DlmsMeter(with_serial, 1, clock.now),
              DlmsMeter(without, 2, clock.now, serial_number=False)]
    with dlms_bus(meters) as port:
        cfg = Config(concentrator_id="DC", archive=str(tmp_path / "a.db"), retries=1,
                     transport="none", initial_backfill=3 * HOUR,
                     buses=(BusConfig("bus1", port.agent_path, int(BAUD), "dlms", False, 0.5,
                                      (MeterConfig("1", "dlms"), MeterConfig("2", "dlms"))),))
        arc = Archive(cfg.archive).open()
        try:
            res = BusCycle(cfg.buses[0], cfg, arc, clock).run(arc.begin_cycle(clock.now()))
            assert [r.status for r in res] == ["read", "read"], [r.error for r in res]
            assert [arc.serial(r.meter) for r in res] == [with_serial.serial, ldn(2)]
        finally:
            arc.close()
