"""The thin IO adapter: drives a ``client.Association`` over a
``drivers.serialio.Link`` and implements ``drivers.meter.MeterClient``.

Owns the blocking loop (send, read until an event, turn deadlines into
``Association.timeout()``) and the choice of what to read in one request:
registers as a single GET-with-list of values, scaler_units and the meter
clock; the load profile and event log as one GET-with-list of capture
objects, capture period and the buffer by range. Scalers and capture
objects are cached for the session. Must not know HDLC or APDU byte
layouts. CPython only.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from drivers import (
    DriverError,
    LocalProtocolError,
    MeterRefused,
    RemoteProtocolError,
    Unsupported,
)
from drivers.dlms import acse, cosem, security, xdlms
from drivers.dlms import client as core
from drivers.dlms.axdr import INTEGER, OCTET_STRING, VISIBLE_STRING
from drivers.dlms.io_commands import CommandObjects
from drivers.meter import MeterClient, MeterEvent, MeterIdentity, ProfileRow, RegisterValue
from drivers.serialio import Link

log = logging.getLogger(__name__)
CLIENT_TITLE = b"WUMCONC1"
OBJECT_UNDEFINED = 4    # data-access-result: the meter has no such object
MAX_BURST = 8 * 2100    # bytes one answer (a window of 7 full frames) may take on the wire
# Scalers, units and profile layouts change only with the meter: they are
# remembered across sessions by (port, address) and trusted again only once
# the meter id (serial number, else logical device name) read in the same
# request matches (a swapped meter is noticed and read afresh). Pass ``metadata={}`` to a client to opt out.
METADATA: dict[tuple[str, str], dict[str, Any]] = {}
# Our invocation counter per meter: a meter refuses one that does not grow, across
# sessions too. Kept here for the process; ``invocation_counter`` (read it after
# ``close()``) is what a caller persists across restarts and passes back in.
COUNTERS: dict[tuple[str, str], int] = {}


def _key(value: bytes | str | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return bytes.fromhex(value)


def _title(value: bytes | str) -> bytes:
    """A system title: 8 bytes, or 16 hex digits, or 8 ASCII characters."""
    if isinstance(value, str):
        value = bytes.fromhex(value) if len(value) == 16 else value.encode("ascii")
    if len(value) != 8:
        raise LocalProtocolError("a system title is 8 bytes, got %d" % len(value))
    return value


def _text(data: Any) -> str:
    tag, value = data
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value) if tag in (OCTET_STRING, VISIBLE_STRING) or value is not None else ""


class DlmsClient(CommandObjects, MeterClient):
    protocol = "dlms"

    def __init__(self, link: Link, address: str, client: int = 16, logical_device: int = 1,
                 auth: str = "none", password: bytes | str | None = None,
                 ek: bytes | str | None = None, ak: bytes | str | None = None,
                 system_title: bytes | str = CLIENT_TITLE, timeout: float = 1.5,
                 retries: int = 3,
                 registers: list[str] | None = None, own_link: bool = False,
                 max_info: int = 2030, window: int = 7, challenge: bytes | None = None,
                 dedicated_key: bytes | str | None = None, clock: Any = None,
                 metadata: dict[tuple[str, str], dict[str, Any]] | None = None,
                 general_ciphering: bool = False, invocation_counter: int | None = None,
                 **_ignored: Any) -> None:
        from drivers.dlms.hdlc import LinkParameters

        self.link, self.address, self.own_link = link, str(address), own_link
        self.timeout = timeout
        self.registers = list(registers or cosem.DEFAULT_REGISTERS)
        ctx = None
        if ek is not None:
            if invocation_counter is None:
                invocation_counter = COUNTERS.get((link.url, str(address)), 1)
            ctx = security.SecurityContext(_key(ek), _key(ak) or b"", _title(system_title),
                                           general=general_ciphering,
                                           invocation_counter=invocation_counter)
        if isinstance(password, str):
            password = password.encode()
        self.assoc = core.Association(client, logical_device, int(address), auth, password, ctx,
                                      LinkParameters(max_info, max_info, window, window),
                                      retries=retries, challenge=challenge or _challenge(),
                                      dedicated_key=_key(dedicated_key))
        self.scalers: dict[str, tuple[int, str]] = {}
        self.columns: dict[str, list[cosem.CaptureObject]] = {}
        self.periods: dict[str, int] = {}
        self.deviation = 0
        self.round_trips = 0
        self.identity: MeterIdentity | None = None
        self.clock = clock or time.time           # only when the meter's clock is unreadable
        self.metadata = METADATA if metadata is None else metadata
        self._remembered = self.metadata.get((link.url, self.address))

    # -- session ----------------------------------------------------------------
    def open(self) -> DlmsClient:
        self._guard(self._open)
        return self

    def _open(self) -> None:
        self._exchange(self.assoc.connect())
        ev = self._exchange(self.assoc.associate())
        if isinstance(ev, core.Associated) and ev.challenge is not None:
            resp = self._exchange(self.assoc.hls_reply())
            self.assoc.check_hls_reply(resp.apdu)

    def _exchange(self, data: bytes) -> Any:
        """Send, then read until the core yields an event that is not a Send."""
        wait = deadline = heard = 0.0

        def transmit(out: bytes) -> None:
            nonlocal wait, deadline, heard
            self.link.send(out)
            self.round_trips += 1
            wait, heard = self.timeout, 0
            deadline = time.monotonic() + wait

        transmit(data)
        while True:
            ev = self.assoc.next_event()
            if ev is core.NEED_DATA:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.debug("meter %s: no (good) answer, retransmitting", self.address)
                    transmit(self.assoc.timeout())
                    continue
                chunk = self.link.recv(left)
                heard += len(chunk)
                if chunk:
                    self.assoc.receive_data(chunk)
                    if heard <= MAX_BURST:  # an answer is arriving: a long one may take
                        deadline = time.monotonic() + wait  # longer than ``timeout``
                continue
            if isinstance(ev, core.Corrupt):
                wait = self._quiet()        # resend once the line has gone quiet
                deadline = time.monotonic() + wait
                continue
            if isinstance(ev, core.Send):
                transmit(ev.data)
                continue
            return ev

    def _quiet(self) -> float:
        """How long the line must stay silent after a bad frame before we resend."""
        return min(self.timeout, 0.03 + 20 * 10.0 / (self.link.baudrate or 9600))

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except DriverError as e:
            e.fields.setdefault("meter", self.address)
            e.fields.setdefault("flight", self.link.recorder.dump()[-16:])
            e.meter = self.address  # type: ignore[attr-defined]
            raise

    def _supports(self, name: str) -> bool:
        init = self.assoc.negotiated
        return init is None or bool(init.conformance & (1 << (23 - acse.CONFORMANCE[name])))

    def _get(self, descriptors: list[xdlms.Descriptor]) -> list[Any]:
        """GET (with-list when the meter has multiple-references, split so each
        request fits its max PDU) -> list of Data tuples / int errors."""
        if len(descriptors) > 1 and not self._supports("multiple-references"):
            return [r for d in descriptors for r in self._get([d])]
        kind = xdlms.NORMAL if len(descriptors) == 1 else xdlms.WITH_LIST
        req = xdlms.GetRequest(kind, descriptors)
        if kind == xdlms.WITH_LIST and len(req.to_bytes()) + 32 > self.assoc.max_pdu_tx():
            half = len(descriptors) // 2
            return self._get(descriptors[:half]) + self._get(descriptors[half:])
        resp = self._exchange(self.assoc.request(req)).apdu
        if not isinstance(resp, xdlms.GetResponse) or len(resp.results) != len(descriptors):
            raise RemoteProtocolError("GET answered with %r" % (resp,))
        return resp.results

    # -- MeterClient ---------------------------------------------------------------
    IDENTITY = [(cosem.DATA, cosem.SERIAL_NUMBER), (cosem.DATA, cosem.LOGICAL_DEVICE_NAME)]

    def identify(self) -> MeterIdentity:
        """Serial number and logical device name (cached: a register read fetches
        them in the same request when nothing is cached yet)."""
        if self.identity is None:
            self._guard(lambda: self._identity_from(self._get(
                [_desc(c, o) for c, o in self.IDENTITY])))
        assert self.identity is not None
        return self.identity

    def _identity_from(self, res: list[Any]) -> bool:
        """Take the identity; True if what we remembered of this meter still holds
        (the same id: the serial number, or the logical device name without one)."""
        serial = _text(res[0]) if not isinstance(res[0], int) else ""
        ldn = _text(res[1]) if not isinstance(res[1], int) else ""
        self.identity = MeterIdentity("dlms", self.address, serial, ldn[:3], ldn, name=ldn)
        ident = self.identity.id
        known, self._remembered = self._remembered, None
        if known is None or not ident or known["id"] != ident:
            if known is not None:
                log.info("meter %s: %s is not the %s we knew; reading its layout again",
                         self.address, ident or "a meter without id", known["id"])
            return False
        for name in ("scalers", "columns", "periods"):
            getattr(self, name).update(known[name])
        return True

    def _remember(self) -> None:
        if self.identity is not None and self.identity.id:
            self.metadata[(self.link.url, self.address)] = {
                "id": self.identity.id, "scalers": dict(self.scalers),
                "columns": dict(self.columns), "periods": dict(self.periods)}

    def read_registers(self, obis: list[str] | None = None) -> list[RegisterValue]:
        return self._guard(self._read_registers, [str(o) for o in (obis or self.registers)])

    def _read_registers(self, codes: list[str]) -> list[RegisterValue]:
        descs = [_desc(cosem.CLOCK, cosem.CLOCK_OBIS)]
        descs += [_desc(cosem.register_class(o), o) for o in codes]
        hoped = self._remembered["scalers"] if self._remembered and self.identity is None else {}
        need = [o for o in codes if cosem.has_scaler(cosem.register_class(o))
                and o not in self.scalers and o not in hoped]
        descs += [_desc(cosem.register_class(o), o, cosem.SCALER_UNIT) for o in need]
        ask_identity = self.identity is None
        if ask_identity:
            descs += [_desc(c, o) for c, o in self.IDENTITY]
        res = self._get(descs)
        if ask_identity and not self._identity_from(res[-2:]) and hoped:
            return self._read_registers(codes)      # another meter: ask for its scalers
        for o, r in zip(need, res[1 + len(codes):], strict=False):
            if not isinstance(r, int):
                self.scalers[o] = cosem.scaler_unit(r)
        ts = self._clock_ts(res[0])
        out = []
        for o, r in zip(codes, res[1:1 + len(codes)], strict=False):
            if isinstance(r, int):
                log.warning("meter %s refused %s: %s", self.address, o,
                            xdlms.DATA_ACCESS_RESULTS.get(r, r))
                continue
            scaler, unit = self.scalers.get(o, (0, ""))
            out.append(RegisterValue(o, cosem.reading_value(r, scaler), unit, ts))
        self._remember()
        return out

    def _clock_ts(self, data: Any) -> int:
        if isinstance(data, int):
            return int(self.clock())
        dt = cosem.clock_time(data)
        if dt.deviation != 0x8000:
            self.deviation = dt.deviation
        return dt.to_epoch()

    def _buffer(self, obis: str, start: int, end: int) -> tuple[list[cosem.CaptureObject],
                                                               int, Any]:
        descs = []
        if obis not in self.columns:
            descs += [_desc(cosem.PROFILE_GENERIC, obis, cosem.CAPTURE_OBJECTS),
                      _desc(cosem.PROFILE_GENERIC, obis, cosem.CAPTURE_PERIOD)]
        access = None                   # without selective access: the whole buffer, filtered
        if self._supports("selective-access"):
            access = cosem.range_access(start, end, self.deviation)
        descs.append(_desc(cosem.PROFILE_GENERIC, obis, cosem.BUFFER, access))
        res = self._get(descs)
        for r in res:
            if r == OBJECT_UNDEFINED:   # a meter without this profile: not its fault
                raise Unsupported("meter has no profile %s" % obis, obis=obis, code=r)
            if isinstance(r, int):
                raise MeterRefused("profile %s refused: %s" % (
                    obis, xdlms.DATA_ACCESS_RESULTS.get(r, r)), obis=obis, code=r)
        if obis not in self.columns:
            self.columns[obis] = cosem.capture_objects(res[0])
            self.periods[obis] = int(res[1][1] or 0)
        return self.columns[obis], self.periods[obis], res[-1]

    def read_load_profile(self, start: int, end: int) -> list[ProfileRow]:
        return self._guard(self._read_load_profile, int(start), int(end))

    def _read_load_profile(self, start: int, end: int) -> list[ProfileRow]:
        cols, period, buf = self._buffer(cosem.LOAD_PROFILE, start, end)
        need = [c.obis for c in cols if cosem.has_scaler(c.class_id) and c.obis not in self.scalers]
        if need:
            res = self._get([_desc(cosem.REGISTER, o, cosem.SCALER_UNIT) for o in need])
            for o, r in zip(need, res, strict=False):
                if not isinstance(r, int):
                    self.scalers[o] = cosem.scaler_unit(r)
        scalers = {o: s[0] for o, s in self.scalers.items()}
        rows = cosem.profile_rows(buf, cols, period, scalers)
        self._remember()
        return [r for r in rows if start <= r.ts <= end]

    def read_events(self, start: int, end: int) -> list[MeterEvent]:
        """The event log's entries; [] from a meter without an event log."""
        try:
            return self._guard(self._read_events, int(start), int(end))
        except Unsupported as e:
            log.debug("meter %s: %s", self.address, e)
            return []

    def _read_events(self, start: int, end: int) -> list[MeterEvent]:
        cols, period, buf = self._buffer(cosem.EVENT_LOG, start, end)
        code_col = next((i for i, c in enumerate(cols) if c.class_id != cosem.CLOCK), None)
        out = []
        for ts, values in cosem.buffer_rows(buf, cols, period):
            if code_col is not None and start <= ts <= end:
                out.append(MeterEvent(ts, int(values[code_col] or 0),
                                      cosem.EVENT_NAMES.get(values[code_col], "")))
        return out

    def read_clock(self) -> int:
        return self._guard(lambda: self._clock_ts(
            self._get([_desc(cosem.CLOCK, cosem.CLOCK_OBIS)])[0]))

    def set_clock(self, ts: float) -> None:
        def run() -> None:
            req = xdlms.SetRequest(_desc(cosem.CLOCK, cosem.CLOCK_OBIS),
                                   cosem.date_time_data(int(ts), self.deviation))
            resp = self._exchange(self.assoc.request(req)).apdu
            if not isinstance(resp, xdlms.SetResponse) or resp.result != 0:
                raise MeterRefused("clock set refused", code=getattr(resp, "result", None))
        self._guard(run)

    def _action(self, method: int) -> None:
        desc = xdlms.Descriptor(cosem.DISCONNECT_CONTROL, cosem.obis_bytes(cosem.DISCONNECTOR),
                                method)
        resp = self._exchange(self.assoc.request(xdlms.ActionRequest(desc, (INTEGER, 0)))).apdu
        if not isinstance(resp, xdlms.ActionResponse) or resp.result != 0:
            raise MeterRefused("disconnect control method %d refused" % method,
                               code=getattr(resp, "result", None))

    def disconnect(self) -> None:
        self._guard(self._action, cosem.REMOTE_DISCONNECT)

    def reconnect(self) -> None:
        self._guard(self._action, cosem.REMOTE_RECONNECT)

    @property
    def invocation_counter(self) -> int | None:
        """The next invocation counter we would use (persist it across restarts)."""
        ctx = self.assoc.security
        return None if ctx is None else ctx.ic

    def close(self) -> None:
        """DISC (releases the association with the link, Green Book 9.4.4.2)."""
        ctx = self.assoc.security
        if ctx is not None:
            COUNTERS[(self.link.url, self.address)] = ctx.ic
        try:
            if self.assoc.state not in (core.IDLE, core.LINKING, core.RELEASING):
                self.assoc.retries = 1
                self._exchange(self.assoc.release())
        except DriverError as e:
            log.debug("meter %s: DISC unanswered: %s", self.address, e)
        finally:
            if self.own_link:
                self.link.close()


def _desc(class_id: int, obis: str, attribute: int = 2,
          access: Any = None) -> xdlms.Descriptor:
    return xdlms.Descriptor(class_id, cosem.obis_bytes(obis), attribute, access)


def _challenge() -> bytes:
    import os

    return os.urandom(16)
