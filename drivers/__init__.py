"""Wires and radios: meter protocols (DLMS/COSEM over HDLC, IEC 62056-21,
Modbus RTU), serial ports named by URL, and radio/UDP links.

Owns: protocol cores (sans-IO, portable), their thin IO adapters, device
profiles mapping vendor registers to OBIS. Must not know about schedules,
archives or the HES.
"""


class DriverError(Exception):
    """Root of every error raised by ``drivers``.

    Structured fields are keyword arguments kept as attributes, so a caller
    can log ``meter``/``obis``/``code`` without parsing the message.
    """

    def __init__(self, message: str = "", **fields: object) -> None:
        super().__init__(message)
        self.fields = fields
        for k, v in fields.items():
            setattr(self, k, v)


class LocalProtocolError(DriverError):
    """We broke the protocol (a bug or misuse on our side)."""


class RemoteProtocolError(DriverError):
    """The peer (meter, bus) broke the protocol: garbled frame, bad CRC, wrong state."""


class MeterTimeout(DriverError):
    """The meter did not answer within its deadline."""


class MeterRefused(DriverError):
    """The meter answered with an error (DLMS data-access-result, Modbus exception, IEC error)."""


class Unsupported(DriverError):
    """The meter (or its device profile) does not offer this function, e.g. a
    Modbus meter without a clock register. Not a fault of the meter."""
