"""IEC 62056-21 (formerly IEC 61107): direct local data exchange with meters.

Layers: ``frames`` (message byte layouts, BCC), ``framer`` (hunting parser),
``dataset``/``profile`` (data sets → OBIS readings, VDEW load profile),
``quirks`` (device oddities as data), ``core`` (the sans-IO master state
machine) — all portable to MicroPython — and ``io`` (the blocking
``MeterClient`` over ``drivers.serialio.Link``, CPython only).

This module stays importable on MicroPython: the IO adapter is imported only
when ``open_client``/``scan`` are called. Must not know schedules, archives
or the HES.
"""

from drivers.iec62056_21.errors import (
    BccError,
    GarbledAnswer,
    IecProtocolError,
    IecRefused,
    IecUsageError,
)

PROTOCOL = "iec62056-21"

__all__ = ["BccError", "GarbledAnswer", "IecProtocolError", "IecRefused", "IecUsageError", "PROTOCOL",
           "dissect", "open_client", "scan"]


def open_client(url, address="", baud=None, password=None, timeout=2.0, retries=2, link=None,
                mode="C", **options):
    """A connected ``MeterClient`` for the meter at ``address`` on ``url``.

    ``baud`` caps the speed accepted from the meter's proposal (None: take it);
    ``password`` is the P1 password for programming mode (R1/W1/R5);
    ``timeout`` is the longest silence tolerated inside an answer (s);
    ``retries`` bounds re-sign-ons after a timeout or a garbled answer;
    ``link`` shares an open ``drivers.serialio.Link`` between meters of one bus;
    ``mode`` "C" (readout and programming) or "A"/"B" (readout only).
    """
    from drivers.iec62056_21.io import IecClient

    return IecClient(url, address=address, baud=baud, password=password, timeout=timeout,
                     retries=retries, link=link, mode=mode, **options).connect()


def scan(url, baud=None, addresses=None, timeout=1.5, link=None):
    """Identify meters: ``/?<address>!`` for each of ``addresses`` (default: the
    empty address, i.e. the one meter on a point-to-point line)."""
    from drivers.iec62056_21.scan import scan as _scan

    return _scan(url, baud=baud, addresses=addresses, timeout=timeout, link=link)


def dissect(data, **keys):
    """Layered decode of captured bytes for ``wum dissect``: every message found,
    its fields, data sets with OBIS codes, and what could not be framed."""
    from drivers.iec62056_21.dissector import dissect as _dissect

    return _dissect(data, **keys)
