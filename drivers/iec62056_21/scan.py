"""Finding IEC 62056-21 meters on a line: sign on to each address, note the
identification, break off. CPython only (uses the blocking client's line
handling). Must not know schedules or archives.
"""

from __future__ import annotations

import logging

from drivers import MeterTimeout
from drivers.iec62056_21 import PROTOCOL
from drivers.iec62056_21.core import Connection
from drivers.iec62056_21.errors import IecProtocolError
from drivers.iec62056_21.frames import INITIAL_BAUD, Request
from drivers.iec62056_21.io import IecClient
from drivers.meter import MeterIdentity
from drivers.serialio import Link

log = logging.getLogger(__name__)


def scan(url: str, baud: int | None = None, addresses=None, timeout: float = 1.5,
         link: Link | None = None) -> list[MeterIdentity]:
    """``/?<address>!`` for each of ``addresses`` (default: the empty address);
    → the identities of the meters that answered, in address order."""
    found = []
    client = IecClient(url, baud=baud, timeout=timeout, retries=0, link=link).connect()
    try:
        for addr in addresses if addresses is not None else [""]:
            client.address = str(addr)
            conn = Connection(client.quirks)
            assert client.link is not None
            client._line(INITIAL_BAUD)
            client.link.drain()
            try:
                client._tx(conn, Request(client.address))
                ident = client._await(conn)
            except (MeterTimeout, IecProtocolError) as e:
                log.info("scan %s address %r: %s", url, addr, e)
                continue
            finally:
                client._abandon()
            found.append(MeterIdentity(PROTOCOL, addr, str(addr) or ident.ident,
                                       manufacturer=ident.manufacturer, model=ident.model))
    finally:
        client.close()
    return found
