"""Test helpers: a simulated district served in-process on pseudo-terminals,
and agent configs pointing at it. Used by the agent's integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent.clock import ScaledClock
from hil.bus import Bus, FaultSpec
from hil.model import MeterModel
from hil.ports import open_port

ROOT = Path(__file__).resolve().parent.parent
WUM = str(Path(sys.executable).parent / "wum")


def meter_for(protocol: str, model: MeterModel, address: int, clock):
    if protocol == "modbus":
        from hil.modbus_meter import ModbusMeter

        return ModbusMeter(model, address, clock, profile="generic")
    if protocol == "dlms":
        from hil.dlms_meter import DlmsMeter

        return DlmsMeter(model, address, clock)
    from hil.iec_meter import IecMeter

    return IecMeter(model, str(address), clock)


class District:
    """``buses`` = list of protocol lists, e.g. [["modbus"] * 8, ["dlms"] * 4]."""

    def __init__(self, buses: list[list[str]], t0: float, speed: float, seed: int = 3,
                 baud: int = 115200, faults: str = "") -> None:
        self.clock = ScaledClock(t0, speed)
        self.ports = []
        self.buses = []
        self.meters: list[tuple[int, str, int, MeterModel]] = []  # (bus, protocol, addr, model)
        idx = 0
        for b, protos in enumerate(buses):
            port = open_port("pty")
            devs = []
            for j, proto in enumerate(protos):
                idx += 1
                model = MeterModel(idx, seed=seed)
                addr = j + 1
                devs.append(meter_for(proto, model, addr, self.clock.now))
                self.meters.append((b, proto, addr, model))
            self.ports.append(port)
            self.buses.append(Bus(port, devs, baud=baud, pace=False,
                                  faults=FaultSpec.parse(faults, seed=b)))
        self.baud = baud

    def start(self) -> District:
        for b in self.buses:
            b.start()
        return self

    def stop(self) -> None:
        for b in self.buses:
            b.stop()
        for p in self.ports:
            p.close()

    def config(self, path: Path, archive: Path, uplink: str = "", key: str = "",
               transport: str = "none", extra: str = "") -> Path:
        lines = ['[concentrator]', 'id = "DC-TEST"', 'archive = "%s"' % archive,
                 '[schedule]', 'period = 3600', 'jitter = 0', 'meter_budget = 60',
                 'retries = 1', 'initial_backfill = 86400', extra,
                 '[uplink]', 'transport = "%s"' % transport]
        if uplink:
            lines += ['url = "%s"' % uplink, 'key = "%s"' % key]
        for b, port in enumerate(self.ports):
            lines += ['[[bus]]', 'name = "bus%d"' % (b + 1), 'port = "%s"' % port.agent_path,
                      'baud = %d' % self.baud, 'timeout = 0.5']
            for bb, proto, addr, _ in self.meters:
                if bb == b:
                    lines += ['[[bus.meter]]', 'address = "%d"' % addr,
                              'protocol = "%s"' % proto]
        path.write_text("\n".join(lines) + "\n")
        return path


def run_agent(cfg: Path, clock: ScaledClock, cycles: int = 0, timeout: float = 120,
              extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WUM, "run", "--config", str(cfg), "--clock", clock.spec(),
                           "--cycles", str(cycles), *(extra or [])],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def start_agent(cfg: Path, clock: ScaledClock, cycles: int = 1000) -> subprocess.Popen[str]:
    return subprocess.Popen([WUM, "run", "--config", str(cfg), "--clock", clock.spec(),
                             "--cycles", str(cycles)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
