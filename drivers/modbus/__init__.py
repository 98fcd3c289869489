"""Modbus RTU meters: the portable framer (``rtu``), device profiles
(``profile``, data files in ``profiles/``) and the reading path over
pymodbus's serial client (``client``).

The entry points import lazily so the portable ``drivers.modbus.rtu`` loads on
MicroPython without pymodbus or pyserial.
"""

PROTOCOL = "modbus"


def open_client(url, address, baud=None, **options):
    """A connected ``drivers.modbus.client.ModbusClient`` for unit ``address``."""
    from drivers.modbus.client import open_client as _open

    return _open(url, address, baud, **options)


def scan(url, baud=None, addresses=None, timeout=0.3, **options):
    """``MeterIdentity`` of every unit that answers (default addresses 1..247)."""
    from drivers.modbus.client import scan as _scan

    return _scan(url, baud, addresses, timeout, **options)


def dissect(data, **keys):
    """Layered decode of Modbus RTU bytes for ``wum dissect``."""
    from drivers.modbus.dissect import dissect as _dissect

    return _dissect(data, **keys)


def hold_port(url, baud=None, **line):
    """Context manager keeping ``url`` open while clients come and go."""
    from drivers.modbus.transport import hold_port as _hold

    return _hold(url, baud, **line)
