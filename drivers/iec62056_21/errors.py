"""Errors of the IEC 62056-21 driver. Portable (CPython and MicroPython).

Owns the exception types; every one is a ``drivers.DriverError`` so callers
catch one root. ``IecProtocolError`` is what the parsers raise on any byte
string they cannot frame (the peer broke the protocol); it carries the
offending bytes as ``raw`` (hex) so the flight recorder and logs show them.
Must not know any IO.
"""

from drivers import LocalProtocolError, MeterRefused, RemoteProtocolError


class IecProtocolError(RemoteProtocolError):
    """The meter (or the bus) sent bytes that are not IEC 62056-21."""


class BccError(IecProtocolError):
    """A block arrived whose block check character does not match (§6.3.14 / §6.3.13)."""


class GarbledAnswer(IecProtocolError):
    """Only line noise arrived where an answer was due (``raw``: the noise), the
    mark of a speed mismatch after the baud switch."""


class IecRefused(MeterRefused):
    """The meter answered with NAK, an error message ``(ERRxx)`` or a break."""


class IecUsageError(LocalProtocolError):
    """We tried to send something the state machine does not allow."""
