"""DLMS/COSEM over HDLC (IEC 62056-46/-53/-62, Green Book): our own sans-IO
stack. Portable cores: ``hdlc`` (frames, framer), ``hdlc_conn`` (sequence
numbers, segmentation), ``axdr`` (data), ``acse``/``xdlms``/``apdu``
(APDUs), ``security`` (suite 0), ``cosem`` (interface classes), ``client``
(association state machine). CPython adapter: ``io`` over
``drivers.serialio.Link``.

This module only wires the public entry points and imports the IO adapter
lazily, so the portable cores import on MicroPython.
"""


def open_client(url, address, baud=None, client=16, logical_device=1, auth="none",
                password=None, ek=None, ak=None, timeout=1.5, retries=3, link=None,
                **options):
    """A connected, associated ``MeterClient`` for the meter at HDLC physical
    address ``address`` on ``url`` (or on an already open ``link``).
    ``retries`` is the number of attempts per exchange, so a dead meter
    costs at most ``timeout * retries``."""
    from drivers.dlms.io import DlmsClient
    from drivers.serialio import Link

    own = link is None
    if own:
        link = Link(url, baud or 9600).connect()
    c = DlmsClient(link, address, client=client, logical_device=logical_device, auth=auth,
                   password=password, ek=ek, ak=ak, timeout=timeout, retries=retries,
                   own_link=own, **options)
    try:
        return c.open()
    except BaseException:
        c.close()
        raise


def scan(url, baud=None, addresses=None, timeout=0.5, link=None, **options):
    """-> list of MeterIdentity of the meters that answer. Default physical
    addresses 1..79: a bus of up to 64 numbered from 1, and the common
    16 + n scheme; each silent address costs ``timeout`` (one try)."""
    from drivers import DriverError
    from drivers.serialio import Link

    own = link is None
    if own:
        link = Link(url, baud or 9600).connect()
    found = []
    try:
        for addr in (addresses if addresses is not None else range(1, 80)):
            try:
                c = open_client(url, addr, timeout=timeout, retries=1, link=link, **options)
            except DriverError:
                continue
            try:
                found.append(c.identify())
            except DriverError:
                pass
            finally:
                c.close()
    finally:
        if own:
            link.close()
    return found


def dissect(data, ek=None, ak=None, system_title=None):
    """Layer-by-layer decode of HDLC frames or a bare APDU (see ``dissector``)."""
    from drivers.dlms.dissector import dissect as run

    return run(data, ek=ek, ak=ak, system_title=system_title)
