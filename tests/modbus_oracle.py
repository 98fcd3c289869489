"""Test oracle: pymodbus's own Modbus RTU server (``ModbusSerialServer`` with
``SimDevice``/``SimData``) serving the public Eastron register tables, on a
pseudo-terminal, for ``wum read`` and the agent to read.

The maps hold only what the public Eastron protocol documents list for the
3X (input) space: float32 parameters, high word first (SDM630 Modbus protocol
§1.2 / SDM120 Modbus protocol V2.4 §2 input registers), at their documented
start addresses. The documents number parameters every two registers and
leave some numbers out (e.g. SDM630 0x002C, 0x0032); inside the 0x0000–0x004F
range those words are zero registers, as a sequential datablock gives and as
our profiles' ``spaces`` declare the meter answers. There is no holding
0xFC00 (serial number) and no other holding register but the documented
demand period (0x0002) and system type (0x000A, SDM630 only).

Values come from ``hil.model.MeterModel``: energies in kWh truncated to
0.01 kWh, instantaneous values as the model gives them.

pymodbus's serial server opens its port by path, and so does our client, so
two pty pairs are bridged by a thread (``PtyBridge``): the server on one
slave, the client on the other.
"""

from __future__ import annotations

import asyncio
import os
import select
import termios
import threading
import tty

from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hil.model import MeterModel

# Public SDM630 input parameters (start address: OBIS served from the model, or
# None for a documented parameter the model has no value for, served as 0.0).
SDM630_INPUT = {
    0x00: "1.0.32.7.0.255", 0x02: "1.0.52.7.0.255", 0x04: "1.0.72.7.0.255",
    0x06: "1.0.31.7.0.255", 0x08: "1.0.51.7.0.255", 0x0A: "1.0.71.7.0.255",
    0x0C: "1.0.21.7.0.255", 0x0E: "1.0.41.7.0.255", 0x10: "1.0.61.7.0.255",
    0x12: None, 0x14: None, 0x16: None,           # phase VA
    0x18: None, 0x1A: None, 0x1C: None,           # phase var
    0x1E: None, 0x20: None, 0x22: None,           # phase power factor
    0x24: None, 0x26: None, 0x28: None,           # phase angle
    0x2A: None, 0x2E: None, 0x30: None,           # average V, average A, sum of A
    0x34: "1.0.1.7.0.255", 0x38: None, 0x3C: "1.0.3.7.0.255",
    0x3E: "1.0.13.7.0.255", 0x42: None, 0x46: "1.0.14.7.0.255",
    0x48: "1.0.1.8.0.255", 0x4A: "1.0.2.8.0.255", 0x4C: "1.0.3.8.0.255",
    0x4E: "1.0.4.8.0.255",
    0x156: "1.0.15.8.0.255", 0x158: None,         # total kWh, total kvarh
}
SDM120_INPUT = {
    0x00: "1.0.32.7.0.255", 0x06: "1.0.31.7.0.255", 0x0C: "1.0.21.7.0.255",
    0x12: None, 0x18: "1.0.3.7.0.255", 0x1E: "1.0.13.7.0.255", 0x24: None,
    0x46: "1.0.14.7.0.255", 0x48: "1.0.1.8.0.255", 0x4A: "1.0.2.8.0.255",
    0x4C: "1.0.3.8.0.255", 0x4E: "1.0.4.8.0.255",
    0x54: None, 0x56: None, 0x58: None, 0x5A: None, 0x5C: None, 0x5E: None,  # demands
    0x102: None, 0x108: None,                     # current demand, maximum
    0x156: "1.0.15.8.0.255", 0x158: None,
}
HOLDING = {"eastron-sdm630": {0x02: 60.0, 0x0A: 3.0}, "eastron-sdm120": {0x02: 60.0}}
MAPS = {"eastron-sdm630": SDM630_INPUT, "eastron-sdm120": SDM120_INPUT}


def served(model: MeterModel, ts: float) -> dict[str, float]:
    """What the oracle serves per OBIS: the model, energies in kWh at 0.01 kWh."""
    vals: dict[str, float] = dict(model.registers(ts))
    vals["1.0.15.8.0.255"] = vals["1.0.1.8.0.255"] + vals["1.0.2.8.0.255"]
    for obis, v in list(vals.items()):
        if obis.endswith(".8.0.255"):
            vals[obis] = (int(v) // 10) / 100       # Wh -> kWh, truncated to 0.01 kWh
    return vals


def expected(model: MeterModel, ts: float) -> dict[str, int | float]:
    """What our client must read back, in the profile's OBIS units."""
    vals: dict[str, int | float] = dict(model.registers(ts))
    vals["1.0.15.8.0.255"] = vals["1.0.1.8.0.255"] + vals["1.0.2.8.0.255"]
    for obis, v in list(vals.items()):
        if obis.endswith(".8.0.255"):
            vals[obis] = int(v) // 10 * 10
    return vals


def device(profile: str, unit: int, model: MeterModel, ts: float) -> SimDevice:
    vals = served(model, ts)
    table = MAPS[profile]
    inputs: list[SimData] = []
    for addr in sorted(table):
        obis = table[addr]
        inputs.append(SimData(address=addr, values=float(vals[obis]) if obis else 0.0,
                              datatype=DataType.FLOAT32))
    dense = {a + i for a in table if a < 0x50 for i in (0, 1)}
    for gap in sorted(set(range(0x50)) - dense):
        inputs.append(SimData(address=gap, values=0, datatype=DataType.REGISTERS))
    inputs.sort(key=lambda d: d.address)
    holding = [SimData(address=a, values=v, datatype=DataType.FLOAT32)
               for a, v in sorted(HOLDING[profile].items())]
    return SimDevice(id=unit, simdata=([], [], holding, inputs))


def _raw_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    return master, slave, os.ttyname(slave)


class PtyBridge:
    """Two pty pairs whose masters a thread joins: ``server_path`` <-> ``client_path``."""

    def __init__(self) -> None:
        self.a_master, self.a_slave, self.server_path = _raw_pty()
        self.b_master, self.b_slave, self.client_path = _raw_pty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PtyBridge:
        self._thread.start()
        return self

    def _run(self) -> None:
        peer = {self.a_master: self.b_master, self.b_master: self.a_master}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(peer), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue          # EIO while the slave side is closed
                if data:
                    os.write(peer[fd], data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self.a_master, self.a_slave, self.b_master, self.b_slave):
            os.close(fd)


class OracleServer:
    """pymodbus's ``ModbusSerialServer`` for ``devices`` on a bridged pty, in
    its own thread and event loop; ``path`` is what the client opens."""

    def __init__(self, devices: list[SimDevice], baud: int = 115200) -> None:
        self.bridge = PtyBridge().start()
        self.path = self.bridge.client_path
        self.devices = devices
        self.baud = baud
        self.loop = asyncio.new_event_loop()
        self.server: ModbusSerialServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> OracleServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("pymodbus server did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = ModbusSerialServer(self.devices, port=self.bridge.server_path,
                                         baudrate=self.baud, ignore_missing_devices=True)
        self.loop.run_until_complete(self.server.listen())
        self._ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        if self.server is not None:
            fut = asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop)
            fut.result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.bridge.close()
