"""Test oracle: pymodbus's own Modbus RTU server (``ModbusSerialServer`` with
``SimDevice``/``SimData``) serving the public Eastron register tables, on a
pseudo-terminal, for ``wum read`` and the agent to read. Imported only by
tests; shares nothing with ``drivers.modbus`` or ``hil`` but the meter model
the values come from.

The maps hold only parameters the public Eastron protocol documents list in
their 3X (input register) tables: float32, high word first, at the
documented start addresses (``SDM630_INPUT``, ``SDM120_INPUT``; the same
tables are reproduced by many open meter libraries). The documents number
parameters every two registers and leave some numbers out (e.g. SDM630
0x002C, 0x0032); inside 0x0000–0x004F those words read as zero, as the
meters answer reads of the whole parameter range (our profiles declare that
range a ``space``); everywhere else an undocumented address is refused
(exception 02), as pymodbus does for addresses a device does not define.
Holding registers: only the documented demand period (0x0002) and system
type (0x000A, SDM630). No serial number (holding 0xFC00): the firmware of
issue 9, failure 1. No coils or discrete inputs (function codes 1/2/5/15
are refused with exception 01).

Values come from ``hil.model.MeterModel``: energies in kWh truncated to
0.01 kWh, instantaneous values as the model gives them (``served``);
``expected`` is what a client must read back in the profiles' OBIS units.
``OracleServer.requests`` logs every request the server received.

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

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
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
    # pymodbus wants a non-empty coil and discrete-input block; the meters have
    # neither, so one placeholder bit each, refused by ``_no_bits``.
    bits = [SimData(address=0, values=False, datatype=DataType.BITS)]
    return SimDevice(id=unit, simdata=(bits, list(bits), holding, inputs), action=_no_bits)


async def _no_bits(fc: int, start: int, address: int, count: int, regs: list[int],
                   values: list[int] | list[bool] | None) -> ExcCodes | None:
    """Coils and discrete inputs (function codes 1, 2, 5, 15): not on these meters."""
    return ExcCodes.ILLEGAL_FUNCTION if fc in (1, 2, 5, 15) else None


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
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        for fd in (self.a_master, self.a_slave, self.b_master, self.b_slave):
            os.close(fd)


class OracleServer:
    """pymodbus's ``ModbusSerialServer`` for ``devices`` on a bridged pty, in
    its own thread and event loop; ``path`` is what the client opens. A
    context manager: the server, its thread and the ptys end on exit."""

    def __init__(self, devices: list[SimDevice], baud: int = 115200) -> None:
        self.devices = devices
        self.baud = baud
        self.bridge = PtyBridge()
        self.path = self.bridge.client_path
        self.loop = asyncio.new_event_loop()
        self.server: ModbusSerialServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # Every request the server received: (unit, function code, address, count).
        self.requests: list[tuple[int, int, int, int]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> OracleServer:
        self.bridge.start()
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            self.stop()
            raise RuntimeError("pymodbus server did not start: %r" % self._error)
        return self

    def __enter__(self) -> OracleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append((pdu.dev_id, pdu.function_code, pdu.address, pdu.count))
        return pdu

    async def _listen(self) -> None:
        # pymodbus binds its transport to the running loop: build it inside.
        self.server = ModbusSerialServer(self.devices, port=self.bridge.server_path,
                                         baudrate=self.baud, ignore_missing_devices=True,
                                         trace_pdu=self._trace)
        if not await self.server.listen():
            raise RuntimeError("cannot open %s" % self.bridge.server_path)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._listen())
        except Exception as e:  # noqa: BLE001  (handed to start())
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            if self.server is not None:
                fut = asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop)
                fut.result(timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        self.bridge.close()
