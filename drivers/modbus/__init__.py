"""Modbus RTU meters: the portable framer (``rtu``), device profiles
(``profile``, data files in ``profiles/``), the wire over pymodbus's serial
client (``transport``) and the meter client (``client``).

The entry points import lazily so the portable ``drivers.modbus.rtu`` loads on
MicroPython without pymodbus or pyserial.
"""

try:
    from typing import TYPE_CHECKING
except ImportError:          # MicroPython
    TYPE_CHECKING = False  # type: ignore[misc]

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from drivers.meter import MeterIdentity
    from drivers.modbus.client import ModbusClient
    from drivers.modbus.transport import SerialBus

PROTOCOL = "modbus"


def open_client(url: str, address: "str | int", baud: "int | None" = None,
                **options: object) -> "ModbusClient":
    """A connected ``drivers.modbus.client.ModbusClient`` for unit ``address``."""
    from drivers.modbus.client import open_client as _open

    return _open(url, address, baud, **options)


def scan(url: str, baud: "int | None" = None, addresses: object = None, timeout: float = 0.3,
         **options: object) -> "list[MeterIdentity]":
    """``MeterIdentity`` of every unit that answers (default addresses 1..247)."""
    from drivers.modbus.client import scan as _scan

    return _scan(url, baud, addresses, timeout, **options)


def dissect(data: bytes, **keys: object) -> "dict[str, object]":
    """Layered decode of Modbus RTU bytes for ``wum dissect``."""
    from drivers.modbus.dissector import dissect as _dissect

    return _dissect(data, **keys)


def hold_port(url: str, baud: "int | None" = None,
              **line: object) -> "AbstractContextManager[SerialBus]":
    """Context manager keeping ``url`` open while clients come and go."""
    from drivers.modbus.transport import hold_port as _hold

    return _hold(url, baud, **line)
