"""What every meter client gives the agent, whatever its protocol.

Owns the value objects a reading produces (identity, register values, load
profile rows, events) and the ``MeterClient`` interface that the DLMS, IEC
62056-21 and Modbus clients implement. Timestamps are integer seconds since
the Unix epoch, UTC (portable; no datetime needed on MicroPython).
Values are ``int`` or ``float`` with the scaler already applied; use
``scaled()`` so every protocol turns (mantissa, scaler) into the same number.

Must not know about schedules, archives or the HES.
"""


def scaled(mantissa, scaler):
    """Apply a decimal scaler (value = mantissa × 10^scaler) exactly.

    Returns an int when scaler >= 0, otherwise the float nearest to the decimal
    (``12345, -1`` → ``1234.5``), identical to ``float("1234.5")`` because both
    operands are exact in binary64 for |mantissa| < 2**53 and scaler >= -22.
    """
    if scaler >= 0:
        return mantissa * (10 ** scaler)
    return mantissa / (10 ** (-scaler))


def meter_id(serial: str, name: str = "", fallback: str = "") -> str:
    """The id a meter goes by — the one rule for ``wum read``, ``wum scan`` and
    the agent (docs/INTERFACES.md, "meter id"): its serial number (DLMS
    0.0.96.1.0.255, IEC identification, Modbus serial register); else its
    logical device name (DLMS 0.0.42.0.0.255); else ``fallback`` (the agent's
    ``<bus>:<protocol>:<address>``; ``""`` where there is none)."""
    return serial or name or fallback


class MeterIdentity:
    """Who a meter says it is. ``serial`` and ``name`` (the DLMS logical device
    name) are what the meter holds, ``""`` when it has no such object; ``id``
    is chosen from them by ``meter_id()``."""

    __slots__ = ("protocol", "address", "serial", "manufacturer", "model", "name")

    def __init__(self, protocol, address, serial, manufacturer="", model="", name=""):
        self.protocol = protocol
        self.address = str(address)
        self.serial = serial
        self.manufacturer = manufacturer
        self.model = model
        self.name = name

    @property
    def id(self):
        return meter_id(self.serial, self.name)

    def as_dict(self):
        return {"protocol": self.protocol, "address": self.address, "id": self.id,
                "manufacturer": self.manufacturer, "model": self.model}

    def __repr__(self):
        return "MeterIdentity(%r)" % (self.as_dict(),)


class RegisterValue:
    """One register read: OBIS (str, six dotted decimals), value, unit, ts."""

    __slots__ = ("obis", "value", "unit", "ts")

    def __init__(self, obis, value, unit, ts):
        self.obis = str(obis)
        self.value = value
        self.unit = unit
        self.ts = int(ts)

    def __eq__(self, other):
        return (isinstance(other, RegisterValue) and self.obis == other.obis
                and self.value == other.value and self.unit == other.unit
                and self.ts == other.ts)

    def __repr__(self):
        return "RegisterValue(%s=%r %s @%d)" % (self.obis, self.value, self.unit, self.ts)


class ProfileRow:
    """One load-profile row: end-of-interval ts and {obis: value}; ``status`` is
    the row's AMR profile status byte when the meter provides one."""

    __slots__ = ("ts", "values", "status")

    def __init__(self, ts, values, status=None):
        self.ts = int(ts)
        self.values = values
        self.status = status

    def __eq__(self, other):
        return (isinstance(other, ProfileRow) and self.ts == other.ts
                and self.values == other.values and self.status == other.status)

    def __repr__(self):
        return "ProfileRow(%d, %r)" % (self.ts, self.values)


class MeterEvent:
    """One entry of a meter's event log (power fail, cover open, tamper, relay)."""

    __slots__ = ("ts", "code", "name")

    def __init__(self, ts, code, name=""):
        self.ts = int(ts)
        self.code = int(code)
        self.name = name

    def __eq__(self, other):
        return isinstance(other, MeterEvent) and (self.ts, self.code) == (other.ts, other.code)

    def __repr__(self):
        return "MeterEvent(%d, %d %s)" % (self.ts, self.code, self.name)


class MeterClient:
    """A session with one meter on an open bus. The IO adapters implement it.

    Blocking: the agent runs each bus in its own worker thread, meters on one
    bus strictly one after another. Every method raises ``drivers.DriverError``
    subclasses only.
    """

    protocol = ""

    def identify(self):
        """-> MeterIdentity"""
        raise NotImplementedError

    def read_registers(self, obis=None):
        """-> list[RegisterValue]; ``obis`` None means the profile's full set."""
        raise NotImplementedError

    def read_load_profile(self, start, end):
        """-> list[ProfileRow] with start <= ts <= end (epoch seconds)."""
        raise NotImplementedError

    def read_events(self, start, end):
        """-> list[MeterEvent]; meters without an event log return []."""
        return []

    def read_clock(self):
        """-> epoch seconds (UTC) of the meter's clock."""
        raise NotImplementedError

    def set_clock(self, ts):
        raise NotImplementedError

    def disconnect(self):
        raise NotImplementedError

    def reconnect(self):
        raise NotImplementedError

    def close(self):
        pass
