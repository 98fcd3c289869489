"""A DLMS/COSEM meter served by Gurux's Python server (gurux-dlms 1.0.203,
GPL-2.0: a test-only oracle from tests/oracles.txt, imported only here in
tests/, never vendored) over HDLC on a pseudo-terminal, for our client to read.

The meter has a few registers, a clock, a logical device name 0.0.42.0.0.255
and NO serial-number object 0.0.96.1.0.255, and an hourly load profile
1.0.99.1.0.255. Its values are constants of this module (nothing from our
simulator or drivers), so a test can say what any reader must get.

Gurux's server base class does not run as released; what we had to add, each
with where it fails (paths under gurux_dlms/ of 1.0.203):

1. ``GXServerReply`` lacks ``setReply``/``getConnectionInfo``/``getCount``/
   ``setCount``, which ``GXDLMSServer.handleRequest``/``handleCommand`` call
   (AttributeError on the first frame): ``_Reply`` adds them.
2. ``GXDLMSServer.initialize`` appends the whole object collection as ONE item
   to a new association's object list (``it.objectList.append(self.items)`` ->
   TypeError "item is not of type GXDLMSObject"): we add the association
   object ourselves, its list filled item by item.
3. ``handleSnrmRequest`` calls ``settings.hdlc.update(self.hdlcSettings)``:
   GXHdlcSettings only has ``_update``, and ``hdlcSettings`` is that same
   object rather than the HDLC setup (AttributeError); it then reads
   ``self.hdlc.maxInfoTX`` etc., names GXDLMSHdlcSetup does not have; and it
   writes the UA's group length as ``setUInt8(2, len - 3)`` — value and index
   swapped — so the length stays 0 and a byte of the window-size parameter
   becomes 2. ``_HdlcSetup`` maps the names, ``_Server.handleSnrmRequest``
   repairs the two bytes after Gurux built the UA.
4. ``handleRequest`` computes ``int(datetime.now() - self.dataReceived)``
   (TypeError: a timedelta) whenever the HDLC setup has an inactivity
   timeout: ours is 0.
5. ``GXDLMSLNCommandHandler`` (GET-Request-Normal) calls
   ``server.notifyRead()``, which no class defines, and ``onPostRead()``
   without its argument: ``_Server`` defines both.
6. In GET-Request-With-List an object the server lacks is answered by a lone
   0x01 byte (``it.target.getValue`` raises on None, caught, HARDWARE_FAULT
   written where a CHOICE tag belongs, no Data-Access-Result follows), so the
   list cannot be parsed. Our meter's missing serial number would hit it on
   every read, so this meter does not offer multiple-references
   (conformance: get, selective-access, block-transfer-with-get) and is read
   attribute by attribute — a configuration real meters have too.
7. ``GXDLMSProfileGeneric`` selective access by range compares
   ``tm >= start >= 0`` (a datetime with 0: TypeError) and, for "all
   columns", wraps the column list in another list so no value is written:
   ``_Profile`` selects the rows of the range itself and hands them to
   Gurux's own ``getData`` to encode.
The server also answers every station address; ``isTarget`` keeps it to its own.

What it cannot serve: ciphered or HLS-GMAC associations. ``GXDLMSSecureServer
.__init__`` stores its GXCiphering as ``settings.ciphering`` while everything
else reads ``settings.cipher`` (so it never ciphers), and with ``cipher`` set
by hand ``_GXAPDU.generateAARE`` crashes on the responding system title it
must send (``data.setUInt8()`` without a value, line 1057: TypeError; the
tag written is CALLED_AP_INVOCATION_ID where the responding-AP-title belongs),
so no AARE ever leaves for suite-0 or HLS-GMAC. Repairing that would mean
writing the AARE ourselves; our HLS/ciphering is checked against Gurux's
client instead (tests/test_dlms_gurux.py) and against dlms-cosem. LLS works.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

from gurux_dlms import GXDateTime, GXDLMSClient, GXDLMSServer, GXServerReply
from gurux_dlms.enums import (
    AccessMode,
    Authentication,
    Conformance,
    DataType,
    InterfaceType,
    MethodAccessMode,
    SourceDiagnostic,
    Unit,
)
from gurux_dlms.objects import (
    GXDLMSAssociationLogicalName,
    GXDLMSClock,
    GXDLMSData,
    GXDLMSHdlcSetup,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)

from hil.ports import open_port

LDN = "GRX0000000000042"
TZ = timezone(timedelta(hours=1))                 # the meter keeps CET (deviation -60)
# (OBIS, Gurux unit, decimal scaler, raw value) and what a reader must make of them
REGISTERS = [("1.0.1.8.0.255", Unit.ACTIVE_ENERGY, 0, 12345678),
             ("1.0.2.8.0.255", Unit.ACTIVE_ENERGY, 0, 4321),
             ("1.0.32.7.0.255", Unit.VOLTAGE, -1, 2301),
             ("1.0.31.7.0.255", Unit.CURRENT, -3, 5120),
             ("1.0.14.7.0.255", Unit.FREQUENCY, -2, 4998)]
UNITS = {Unit.ACTIVE_ENERGY: "Wh", Unit.VOLTAGE: "V", Unit.CURRENT: "A", Unit.FREQUENCY: "Hz"}
PROFILE = "1.0.99.1.0.255"
PROFILE_COLUMNS = ["1.0.1.8.0.255", "1.0.2.8.0.255"]
HOURS = 48


def expected_registers() -> dict[str, tuple[float, str]]:
    """{obis: (value with the scaler applied, unit name)} as the meter means them."""
    return {o: (raw * 10 ** s if s >= 0 else raw / 10 ** -s, UNITS[u])
            for o, u, s, raw in REGISTERS}


def profile_rows(end: int) -> list[tuple[int, dict[str, int]]]:
    """The hourly rows the meter holds: the last ``HOURS`` hours up to ``end``."""
    last = end // 3600 * 3600
    return [(t, {"1.0.1.8.0.255": 12345678 - (last - t) // 3600 * 1000,
                 "1.0.2.8.0.255": 4321 - (last - t) // 3600 * 7})
            for t in range(last - (HOURS - 1) * 3600, last + 1, 3600)]


class _Reply(GXServerReply):
    """Workaround 1."""

    def setReply(self, value):  # noqa: N802 (Gurux's names)
        self.reply = value

    def getConnectionInfo(self):  # noqa: N802
        return self.connectionInfo

    def getCount(self):  # noqa: N802
        return self.count

    def setCount(self, value):  # noqa: N802
        self.count = value


class _HdlcSetup(GXDLMSHdlcSetup):
    """Workaround 3: the names handleSnrmRequest reads."""

    maxInfoTX = property(lambda self: self.maximumInfoLengthTransmit)  # noqa: N815
    maxInfoRX = property(lambda self: self.maximumInfoLengthReceive)  # noqa: N815
    windowSizeTX = property(lambda self: self.windowSizeTransmit)  # noqa: N815
    windowSizeRX = property(lambda self: self.windowSizeReceive)  # noqa: N815


class _Clock(GXDLMSClock):
    """The clock object, telling the test's clock in CET."""

    def __init__(self, now):
        super().__init__()
        self.now = now
        self.timeZone = -60

    def getValue(self, settings, e):  # noqa: N802
        if e.index == 2:
            return GXDateTime(datetime.fromtimestamp(int(self.now()), TZ))
        return super().getValue(settings, e)


class _Profile(GXDLMSProfileGeneric):
    """Workaround 7: the rows of a range, encoded by Gurux's own getData."""

    def getValue(self, settings, e):  # noqa: N802
        if e.index == 2 and e.selector == 1 and e.parameters:
            start = GXDLMSClient.changeType(e.parameters[1], DataType.DATETIME).value
            end = GXDLMSClient.changeType(e.parameters[2], DataType.DATETIME).value
            rows = [r for r in self.buffer if start <= r[0].value <= end]
            return self.getData(settings, e, rows, None)
        return super().getValue(settings, e)


class _Server(GXDLMSServer):
    def __init__(self, physical: int, password: bytes | None) -> None:
        super().__init__(True, InterfaceType.HDLC)
        self.me = GXDLMSClient.getServerAddress(1, physical)
        self.password = password
        self.hdlc = _HdlcSetup()
        self.hdlc.inactivityTimeout = 0                        # workaround 4
        hdlc = self.settings.hdlc
        hdlc.update = lambda _same: hdlc._update(self.hdlc)    # workaround 3

    def handleSnrmRequest(self, data):  # noqa: N802
        super().handleSnrmRequest(data)                        # workaround 3: the UA
        buf, n = self.replyData, len(self.replyData)
        buf.setUInt8((self.hdlc.windowSizeRX >> 16) & 0xFF, n - 3)
        buf.setUInt8(n - 3, 2)

    def notifyRead(self):  # noqa: N802 (workaround 5)
        pass

    def onPostRead(self, args=None):  # noqa: N802 (workaround 5)
        pass

    def isTarget(self, serverAddress, clientAddress):  # noqa: N802, N803
        return serverAddress == self.me

    def onValidateAuthentication(self, authentication, password):  # noqa: N802
        if self.password is None:
            return SourceDiagnostic.NONE
        if authentication != Authentication.LOW:
            return SourceDiagnostic.MECHANISM_NAME_REGUIRED
        if bytes(password or b"") != self.password:
            return SourceDiagnostic.AUTHENTICATION_FAILURE
        return SourceDiagnostic.NONE

    def onFindObject(self, objectType, sn, ln):  # noqa: N802, N803
        return None

    def onGetAttributeAccess(self, arg):  # noqa: N802
        return AccessMode.READ

    def onGetMethodAccess(self, arg):  # noqa: N802
        return MethodAccessMode.NO_ACCESS

    def _nothing(self, *args):
        pass

    onPreRead = onPreWrite = onPostWrite = onPreGet = onPostGet = _nothing  # noqa: N815
    onPreAction = onPostAction = onConnected = onDisconnected = _nothing  # noqa: N815
    onInvalidConnection = _nothing  # noqa: N815


def build(physical: int, now, password: bytes | None = None) -> _Server:
    """The meter's object model inside a Gurux server (LLS with ``password``)."""
    s = _Server(physical, password)
    regs = {}
    for obis, unit, scaler, raw in REGISTERS:
        r = GXDLMSRegister(obis)
        r.value, r.scaler, r.unit = raw, 10.0 ** scaler, unit
        r.setDataType(2, DataType.UINT32)
        regs[obis] = r
        s.items.append(r)
    ldn = GXDLMSData("0.0.42.0.0.255")
    ldn.value = LDN.encode()
    ldn.setDataType(2, DataType.OCTET_STRING)
    clock = _Clock(now)
    pg = _Profile(PROFILE)
    pg.capturePeriod = 3600
    pg.captureObjects = [(clock, _capture(2))] + [(regs[o], _capture(2)) for o in PROFILE_COLUMNS]
    pg.buffer = [[GXDateTime(datetime.fromtimestamp(t, TZ))] + [v[o] for o in PROFILE_COLUMNS]
                 for t, v in profile_rows(int(now()))]
    for obj in (ldn, clock, pg):
        s.items.append(obj)
    association = GXDLMSAssociationLogicalName()            # workaround 2
    s.items.append(association)
    for obj in list(s.items):
        association.objectList.append(obj)
    s.conformance = Conformance.GET | Conformance.SELECTIVE_ACCESS | \
        Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ          # workaround 6
    s.initialize()
    return s


def _capture(attribute: int):
    from gurux_dlms.objects import GXDLMSCaptureObject

    return GXDLMSCaptureObject(attribute, 0)


class GuruxMeter:
    """The Gurux server on the far end of a pty, in a thread; ``path`` is what
    a client opens. ``requests`` counts the frames Gurux answered; with a
    ``password`` it demands LLS with it."""

    def __init__(self, physical: int = 1, now=None, password: bytes | None = None) -> None:
        self.server = build(physical, now or (lambda: datetime.now(UTC).timestamp()), password)
        self.port = open_port("pty")
        self.path = self.port.agent_path
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            data = self.port.read(0.05)
            if not data:
                continue
            reply = _Reply(bytearray(data))
            self.server.handleRequest(reply)
            if reply.reply:
                self.requests += 1
                self.port.write(bytes(reply.reply))

    def __enter__(self) -> GuruxMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.port.close()
