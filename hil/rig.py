"""``wum-hil rig``: acceptance scenarios between two ports.

Owns: serving simulated meters on the simulator's port (a pty's far end, or
a USB-RS485 adapter wired to the agent's adapter), reading them through the
agent's port with the real drivers, comparing with ``hil.model.MeterModel``,
a pass/fail report and JUnit XML. Scenarios: ``modbus-read``,
``modbus-faults``, and ``dlms-read`` / ``iec-read`` when those simulators
and drivers exist (otherwise reported as skipped).
"""

from __future__ import annotations

import argparse
import importlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from drivers import DriverError, MeterTimeout
from hil import HilError
from hil.bus import Bus, FaultSpec
from hil.model import HOUR, ORIGIN, MeterModel
from hil.ports import PtyPort, open_port

T0 = ORIGIN + 30 * 86400 + 12 * HOUR     # an hour boundary: cumulative registers exact


class Skip(Exception):
    pass


class Rig:
    def __init__(self, sim_port: Any, agent_url: str, baud: int, seed: int) -> None:
        self.sim_port = sim_port
        self.agent_url = agent_url
        self.baud = baud
        self.seed = seed

    def clock(self) -> float:
        return float(T0)            # time stands still: values are comparable exactly

    def serve(self, meters: list[Any], faults: str = "") -> Bus:
        return Bus(self.sim_port, meters, baud=self.baud,
                   faults=FaultSpec.parse(faults, self.seed)).start()


def expected_modbus(model: MeterModel, profile: Any) -> dict[str, int | float]:
    vals = model.registers(T0)
    out = {}
    for reg in profile.registers:
        v = sum(vals[o] for o in reg.derived) if reg.derived else vals[reg.obis]
        if reg.exponent > 0:
            v = v // 10 ** reg.exponent * 10 ** reg.exponent
        out[reg.obis] = v
    return out


def _modbus_meters(rig: Rig, profiles: dict[int, str]) -> list[Any]:
    from hil.modbus_meter import ModbusMeter

    return [ModbusMeter(MeterModel(a, rig.seed), a, rig.clock, p) for a, p in profiles.items()]


def _read_modbus(rig: Rig, unit: int, profile: str, timeout: float = 0.5,
                 retries: int = 2) -> tuple[dict[str, Any], str, Any]:
    from drivers.modbus.client import open_client

    c = open_client(rig.agent_url, unit, rig.baud, profile=profile, timeout=timeout,
                    retries=retries)
    try:
        return {r.obis: r.value for r in c.read_registers()}, c.identify().id, c.profile
    finally:
        c.close()


def modbus_read(rig: Rig) -> str:
    from drivers.modbus.client import scan

    profiles = {a: "generic" for a in range(1, 7)}
    profiles.update({7: "eastron-sdm630", 8: "eastron-sdm120"})
    bus = rig.serve(_modbus_meters(rig, profiles))
    try:
        found = scan(rig.agent_url, rig.baud, range(1, 11), timeout=0.2)
        assert [int(m.address) for m in found] == list(profiles), "scan found %r" % found
        for unit, name in profiles.items():
            vals, ident, prof = _read_modbus(rig, unit, name)
            model = MeterModel(unit, rig.seed)
            assert ident == model.serial, "unit %d id %r" % (unit, ident)
            want = expected_modbus(model, prof)
            bad = {k: (v, want[k]) for k, v in vals.items() if want[k] != v}
            assert not bad, "unit %d (%s) differs: %r" % (unit, name, bad)
    finally:
        bus.stop()
    return "8 meters (6 generic, SDM630, SDM120) read exactly; scan found all"


def modbus_faults(rig: Rig) -> str:
    from drivers.modbus.profile import load

    timeout, retries = 0.3, 2
    bus = rig.serve(_modbus_meters(rig, {a: "generic" for a in range(1, 9)}),
                    "crc=0.05,dead@4")
    try:
        for unit in range(1, 9):
            t = time.monotonic()
            try:
                vals, _, _ = _read_modbus(rig, unit, "generic", timeout, retries)
            except MeterTimeout:
                spent = time.monotonic() - t
                assert unit == 4, "live unit %d timed out" % unit
                assert spent <= timeout * (retries + 1) + 0.5, "dead unit cost %.2fs" % spent
                continue
            assert unit != 4, "dead unit 4 answered"
            assert vals == expected_modbus(MeterModel(unit, rig.seed), load("generic"))
    finally:
        bus.stop()
    return "7 live meters read through crc=0.05; dead unit 4 a bounded MeterTimeout"


def _generic_read(protocol: str, sim: tuple[str, str], pkg: str) -> Callable[[Rig], str]:
    def scenario(rig: Rig) -> str:
        try:
            cls = getattr(importlib.import_module(sim[0]), sim[1])
            drv = importlib.import_module(pkg)
            open_client = drv.open_client
        except (ImportError, AttributeError) as e:
            raise Skip("%s simulator or driver not available: %s" % (protocol, e)) from e
        opts: dict[str, Any] = {}
        if protocol == "iec62056-21" and not isinstance(rig.sim_port, PtyPort):
            opts["wire_parity"] = True       # 7E1 over the bus's 8N1: parity in bit 7
        meters = [cls(MeterModel(a, rig.seed), str(a), rig.clock, **opts) for a in range(1, 5)]
        bus = rig.serve(meters)
        try:
            for a in range(1, 5):
                c = open_client(rig.agent_url, str(a), rig.baud, timeout=2.0, retries=2)
                try:
                    got = {r.obis: r.value for r in c.read_registers()}
                finally:
                    c.close()
                want = MeterModel(a, rig.seed).registers(T0)
                bad = {k: (v, want[k]) for k, v in got.items() if k in want and want[k] != v}
                assert got and not bad, "%s meter %d differs: %r" % (protocol, a, bad)
        finally:
            bus.stop()
        return "4 %s meters read exactly" % protocol
    return scenario


SCENARIOS = {
    "modbus-read": modbus_read,
    "modbus-faults": modbus_faults,
    "dlms-read": _generic_read("dlms", ("hil.dlms_meter", "DlmsMeter"), "drivers.dlms"),
    "iec-read": _generic_read("iec62056-21", ("hil.iec_meter", "IecMeter"),
                              "drivers.iec62056_21"),
}


def run(rig: Rig, names: list[str]) -> list[dict[str, Any]]:
    results = []
    for name in names:
        t = time.monotonic()
        try:
            detail, status = SCENARIOS[name](rig), "pass"
        except Skip as e:
            detail, status = str(e), "skip"
        except (AssertionError, DriverError, HilError, OSError) as e:
            detail, status = "%s: %s" % (type(e).__name__, e), "fail"
        results.append({"name": name, "status": status, "detail": detail,
                        "time": round(time.monotonic() - t, 3)})
    return results


def junit(results: list[dict[str, Any]], path: str) -> None:
    suite = ET.Element("testsuite", name="wum-hil rig", tests=str(len(results)),
                       failures=str(sum(r["status"] == "fail" for r in results)),
                       skipped=str(sum(r["status"] == "skip" for r in results)),
                       time="%.3f" % sum(r["time"] for r in results))
    for r in results:
        case = ET.SubElement(suite, "testcase", classname="rig." + r["name"].split("-")[0],
                             name=r["name"], time="%.3f" % r["time"])
        if r["status"] == "fail":
            ET.SubElement(case, "failure", message=r["detail"][:200]).text = r["detail"]
        elif r["status"] == "skip":
            ET.SubElement(case, "skipped", message=r["detail"][:200])
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def main(args: argparse.Namespace) -> int:
    names = args.scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise HilError("unknown scenario %s (known: %s)" % (unknown, ", ".join(SCENARIOS)))
    if args.pty:
        port = PtyPort().open()
        agent_url = port.agent_path
    else:
        if not (args.agent_port and args.sim_port):
            raise HilError("give --pty, or both --agent-port and --sim-port")
        port = open_port(args.sim_port, args.baud)
        agent_url = args.agent_port
    try:
        results = run(Rig(port, agent_url, args.baud, args.seed), names)
    finally:
        port.close()
    for r in results:
        print("%-4s %-14s %6.2fs  %s" % (r["status"].upper(), r["name"], r["time"], r["detail"]))
    failed = sum(r["status"] == "fail" for r in results)
    print("%d passed, %d failed, %d skipped" % (
        sum(r["status"] == "pass" for r in results), failed,
        sum(r["status"] == "skip" for r in results)))
    if args.junit:
        junit(results, args.junit)
    return 1 if failed else 0
