"""A simulated DLMS/COSEM meter on an HDLC multi-drop bus, serving a
``hil.model.MeterModel`` through the same codecs as the client
(``drivers.dlms``), server side.

Owns: HDLC station behaviour (answers only its own physical address,
SNRM/UA negotiation, DISC, duplicate I-frames answered again), the
association (none / LLS / HLS-GMAC, suite-0 glo-ciphering), GET normal /
with-list / data blocks, SET clock, ACTION disconnect control, Profile
Generic buffers with selective access by range and by entry, the event log;
the disconnect control (class 70 state machine), activity calendar (class 20)
and limiter (class 71) of ``hil.dlms_objects``, and a traffic log of every
service asked (``traffic``). ``serial_number=False`` leaves out the
serial-number object 0.0.96.1.0.255 (a meter known only by its logical
device name 0.0.42.0.0.255).
A bus device in the sense of ``hil.bus`` (``address``, ``feed``, ``reset``,
``corrupt_address``); ``feed`` never raises on any input.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from drivers import DriverError
from drivers.dlms import acse, apdu, cosem, hdlc, security, xdlms
from drivers.dlms.axdr import (
    ARRAY,
    BOOLEAN,
    DOUBLE_LONG,
    DOUBLE_LONG_UNSIGNED,
    ENUM,
    INTEGER,
    LONG,
    LONG_UNSIGNED,
    NULL,
    OCTET_STRING,
    STRUCTURE,
    UNSIGNED,
    DateTime,
    encode,
    encode_length,
)
from drivers.dlms.hdlc_conn import Connection
from drivers.units import unit_code
from hil.dlms_objects import CommandObjects
from hil.model import DAY, HOUR, PROFILE, REGISTERS, MeterModel

# OBIS C group -> (A-XDR type, scaler) of the value attribute; unit from the model
_KINDS = {8: (DOUBLE_LONG_UNSIGNED, 0), 32: (LONG_UNSIGNED, -1), 52: (LONG_UNSIGNED, -1),
          72: (LONG_UNSIGNED, -1), 31: (DOUBLE_LONG_UNSIGNED, -3),
          51: (DOUBLE_LONG_UNSIGNED, -3), 71: (DOUBLE_LONG_UNSIGNED, -3),
          13: (LONG_UNSIGNED, -3), 14: (LONG_UNSIGNED, -2)}
PROFILE_ENTRIES = 45 * 24
# priority-mgmt, block-transfer-with-get, multiple-references, get, set, selective-access,
# event-notification, action (Green Book 9.5 conformance bits 9, 11, 14, 19-23)
SERVER_CONFORMANCE = 0x00521F
NO_SUCH = 4                      # data-access-result object-undefined
DENIED = 3                       # read-write-denied


def register_format(obis: str) -> tuple[int, int]:
    """(A-XDR type, scaler) of a register's value (energy by D=8, else by C)."""
    g = [int(x) for x in obis.split(".")]
    if g[3] == 8:
        return _KINDS[8]
    return _KINDS.get(g[2], (DOUBLE_LONG, 0))


class DlmsMeter:
    def __init__(self, model: MeterModel, address: str | int, clock: Callable[[], float],
                 auth: str = "none", password: bytes | str = b"00000000",
                 ek: bytes | None = None, ak: bytes | None = None,
                 system_title: bytes | None = None, max_info: int = 2030, window: int = 7,
                 block_size: int | None = None, logical_device: int = 1, deviation: int = -60,
                 max_pdu: int = 0x0800, compress_profile: bool = True,
                 dst: bool = False, conformance: int = SERVER_CONFORMANCE,
                 serial_number: bool = True) -> None:
        self.model, self.address, self.clock = model, str(address), clock
        self.serial_number = serial_number
        self.physical, self.logical = int(address), logical_device
        self.auth = auth
        self.password = password.encode() if isinstance(password, str) else password
        self.ek, self.ak = ek, ak or b""
        self.system_title = system_title or (b"WUM" + ("%05d" % (self.physical % 100000)).encode())
        self.own = hdlc.LinkParameters(max_info, max_info, window, window)
        self.block_size, self.max_pdu = block_size, max_pdu
        self.deviation, self.compress, self.dst = deviation, compress_profile, dst
        self.conformance = conformance
        self.framer = hdlc.Framer()
        self.conn: Connection | None = None
        self.requests = 0
        self.frame_counter = 1          # our invocation counter: never reset, never reused
        self.client_counter = -1        # the highest client counter seen: replays refused
        self.ctx: security.SecurityContext | None = None
        self._drop_session()
        # Classes 70/20/71 for signed commands (``objects.control_mode``: 0..6,
        # ``objects.press_button()``), and every service asked of this meter:
        # (service, class id, OBIS, attribute or method), for tests to inspect.
        self.objects = CommandObjects(model, clock, model.clock)
        self.traffic: list[tuple[str, int, str, int]] = []

    def _drop_session(self) -> None:
        if self.ctx is not None:
            self.frame_counter = self.ctx.ic
            self.client_counter = max(self.client_counter, self.ctx.peer_ic)
        self.associated = False
        self.hls_pending = False
        self.ctx = None
        self.client_max_pdu = 0xFFFF
        self.challenge_ctos = b""
        self.challenge_stoc = b""
        self._blocks: list[bytes] = []
        self._block_iid = xdlms.INVOKE_ID

    # -- bus device ------------------------------------------------------------------
    def reset(self) -> None:
        self.framer.reset()

    def feed(self, data: bytes, now: float) -> list[tuple[bytes, int | None]]:
        self.framer.receive_data(data)
        out: list[tuple[bytes, int | None]] = []
        while True:
            ev = self.framer.next_event()
            if ev is None:
                return out
            if isinstance(ev, hdlc.FrameError):
                continue
            try:
                frames = self._on_frame(ev)
            except DriverError:
                frames = []
            if frames:
                out.append((b"".join(frames), None))

    def corrupt_address(self, reply: bytes) -> bytes:
        """The same reply as if sent by the next station (valid CRCs, wrong source)."""
        framer, out = hdlc.Framer(), b""
        framer.receive_data(reply)
        while True:
            f = framer.next_event()
            if f is None or isinstance(f, hdlc.FrameError):
                return out or reply
            src = hdlc.server_address(self.logical, (self.physical + 1) & 0x3FFF, len(f.src))
            out += hdlc.Frame(f.dest, src, f.control, f.info, f.segmented).to_bytes()

    # -- HDLC -----------------------------------------------------------------------------
    def _on_frame(self, f: hdlc.Frame) -> list[bytes]:
        if len(f.dest) == 1 or hdlc.parse_address(f.dest) != (self.logical, self.physical):
            return []
        kind = f.kind
        if kind == hdlc.SNRM:
            ua = hdlc.LinkParameters.from_bytes(f.info).answer(self.own)
            self.conn = Connection(f.dest, f.src, False, ua)
            self._drop_session()
            return self.conn.ua(ua)
        conn = self.conn
        if conn is None or f.src != conn.remote:
            if kind in (hdlc.DISC, hdlc.I, hdlc.RR):
                return Connection(f.dest, f.src, False).dm()
            return []
        if kind == hdlc.DISC:
            self.conn = None
            self._drop_session()
            return conn.ua()
        if kind not in (hdlc.I, hdlc.RR, hdlc.RNR):
            return []
        request, frames = conn.on_frame(f)
        if request is None:
            return frames
        self.requests += 1
        return conn.send_apdu(self._on_apdu(request))

    # -- association --------------------------------------------------------------------
    def _on_apdu(self, raw: bytes) -> bytes:
        try:
            msg = apdu.decode(raw)
            if isinstance(msg, acse.AARQ):
                return self._on_aarq(msg).to_bytes()
            if isinstance(msg, acse.ReleaseRequest) and not isinstance(msg, acse.ReleaseResponse):
                self._drop_session()
                return acse.ReleaseResponse(0).to_bytes()
            if isinstance(msg, apdu.Ciphered):
                if self.ctx is None:
                    return xdlms.ExceptionResponse(1, 2).to_bytes()
                reply = self._serve(apdu.decode(self.ctx.decrypt(raw)))
                # answer with the protection the request came with (general- or service-
                # specific ciphering, Green Book 9.2.7.2.4)
                self.ctx.general = raw[0] in (security.GENERAL_GLO, security.GENERAL_DED)
                return reply if reply[0] == xdlms.EXCEPTION_RESPONSE else self.ctx.encrypt(reply)
            if self.ctx is not None:
                return xdlms.ExceptionResponse(1, 1).to_bytes()   # plain APDU on a keyed link
            return self._serve(msg)
        except DriverError:
            return xdlms.ExceptionResponse(2, 3).to_bytes()       # service-unknown, other

    def _aare(self, result: int, diagnostic: int, context: int, ui: bytes,
              mechanism: int = acse.MECH_NONE, auth: bytes | None = None) -> acse.AARE:
        title = self.system_title if context == acse.LN_CIPHERED else None
        return acse.AARE(ui, result, diagnostic, context, mechanism, auth, title)

    def _on_aarq(self, aarq: acse.AARQ) -> acse.AARE:
        self._drop_session()
        keyed = self.ek is not None
        want_ctx = acse.LN_CIPHERED if keyed else acse.LN
        refuse = xdlms.ConfirmedServiceError(1, 6, 0).to_bytes()
        if aarq.context != want_ctx:
            return self._aare(1, acse.DIAG_CONTEXT_NOT_SUPPORTED, aarq.context, refuse)
        mech = {"none": acse.MECH_NONE, "lls": acse.MECH_LLS, "hls": acse.MECH_HLS_GMAC}[self.auth]
        if aarq.mechanism != mech:
            diag = acse.DIAG_MECHANISM_REQUIRED if aarq.mechanism == acse.MECH_NONE else \
                acse.DIAG_MECHANISM_NOT_RECOGNISED
            return self._aare(1, diag, aarq.context, refuse)
        if mech == acse.MECH_LLS and aarq.authentication != self.password:
            return self._aare(1, acse.DIAG_AUTH_FAILURE, aarq.context, refuse)
        if keyed:
            if aarq.ap_title is None or len(aarq.ap_title) != 8:
                return self._aare(1, acse.DIAG_NO_REASON, aarq.context, refuse)
            self.ctx = security.SecurityContext(self.ek, self.ak, self.system_title,
                                                invocation_counter=self.frame_counter)
            self.ctx.peer_title = aarq.ap_title
            self.ctx.peer_ic = self.client_counter
        try:
            ir = apdu.decode(aarq.user_information, self.ctx)
        except DriverError:
            ir = None
        if not isinstance(ir, acse.InitiateRequest) or ir.version < 6:
            self.ctx = None
            return self._aare(1, acse.DIAG_NO_REASON, aarq.context, refuse)
        self.client_max_pdu = ir.max_pdu
        resp = acse.InitiateResponse(self.conformance & ir.conformance, self.max_pdu).to_bytes()
        if self.ctx is not None:
            resp = self.ctx.encrypt(resp)
            self.ctx.dedicated_key = ir.dedicated_key     # ded-ciphering from now on
        if mech == acse.MECH_HLS_GMAC:
            self.challenge_ctos = aarq.authentication or b""
            self.challenge_stoc = os.urandom(16)
            self.hls_pending = True
            return self._aare(0, acse.DIAG_AUTH_REQUIRED, aarq.context, resp, mech,
                              self.challenge_stoc)
        self.associated = True
        return self._aare(0, acse.DIAG_NULL, aarq.context, resp)

    # -- services ------------------------------------------------------------------------
    def _serve(self, msg: Any) -> bytes:
        if self.hls_pending and isinstance(msg, xdlms.ActionRequest):
            return self._hls_reply(msg).to_bytes()
        if not self.associated:
            return xdlms.ExceptionResponse(1, 1).to_bytes()  # service-not-allowed
        self._record(msg)
        if isinstance(msg, xdlms.GetRequest):
            return self._get(msg)
        if isinstance(msg, xdlms.SetRequest):
            return xdlms.SetResponse(self._set(msg.descriptor, msg.value), msg.invoke_id).to_bytes()
        if isinstance(msg, xdlms.ActionRequest):
            return self._action(msg).to_bytes()
        return xdlms.ExceptionResponse(2, 2).to_bytes()      # service-unknown

    def _hls_reply(self, msg: xdlms.ActionRequest) -> xdlms.ActionResponse:
        d, ctx = msg.descriptor, self.ctx
        p = msg.parameters
        if ctx is None or d.class_id != cosem.ASSOCIATION_LN or d.attribute != cosem.REPLY_TO_HLS \
                or p is None or p[0] != OCTET_STRING or len(p[1]) != 17:
            return xdlms.ActionResponse(DENIED, invoke_id=msg.invoke_id)
        tag = p[1]
        want = security.gmac(tag[0], ctx.peer_title, int.from_bytes(tag[1:5], "big"), ctx.ek,
                             ctx.ak, self.challenge_stoc)
        if want != tag:
            self.hls_pending = False
            return xdlms.ActionResponse(DENIED, invoke_id=msg.invoke_id)
        self.hls_pending, self.associated = False, True
        reply = security.gmac(security.SC_AUTH, self.system_title, ctx.next_ic(), ctx.ek, ctx.ak,
                              self.challenge_ctos)
        return xdlms.ActionResponse(0, (OCTET_STRING, reply), msg.invoke_id)

    def _get(self, msg: xdlms.GetRequest) -> bytes:
        iid = msg.invoke_id
        if msg.kind == xdlms.NEXT:
            if not self._blocks or msg.block >= len(self._blocks) or msg.block < 1:
                code = 19 if self._blocks else 16    # block-number-invalid / no-long-get
                self._blocks = []
                return xdlms.GetResponse(xdlms.DATABLOCK, [code], block=msg.block,
                                         invoke_id=iid).to_bytes()
            return self._block(msg.block + 1, iid)
        if msg.kind == xdlms.WITH_LIST and not self.conformance & (1 << (23 - 14)):
            return xdlms.ExceptionResponse(2, 2).to_bytes()   # no multiple-references
        results = [self._read(d) for d in msg.descriptors]
        if msg.kind == xdlms.NORMAL:
            resp = xdlms.GetResponse(xdlms.NORMAL, results, invoke_id=iid).to_bytes()
            raw = b"" if isinstance(results[0], int) else encode(results[0])
        else:
            resp = xdlms.GetResponse(xdlms.WITH_LIST, results, invoke_id=iid).to_bytes()
            raw = encode_length(len(results)) + b"".join(
                bytes((1, r)) if isinstance(r, int) else b"\x00" + encode(r) for r in results)
        size = self._block_len()
        if len(raw) <= size:
            return resp
        self._blocks = [raw[i:i + size] for i in range(0, len(raw), size)]
        return self._block(1, iid)

    def _block_len(self) -> int:
        limit = min(self.client_max_pdu, self.max_pdu) - 16   # room for header and ciphering
        return max(16, min(self.block_size or limit, limit))

    def _block(self, n: int, iid: int) -> bytes:
        last = n == len(self._blocks)
        resp = xdlms.GetResponse(xdlms.DATABLOCK, last=last, block=n, raw=self._blocks[n - 1],
                                 invoke_id=iid).to_bytes()
        if last:
            self._blocks = []
        return resp

    # -- the object model ------------------------------------------------------------------
    def _now(self) -> float:
        return float(self.clock())

    def _read(self, d: xdlms.Descriptor) -> Any:
        obis = cosem.obis_text(d.obis)
        now = self._now()
        if d.class_id in self.objects.classes:
            return DENIED if d.access is not None else self.objects.get(d.class_id, obis,
                                                                         d.attribute)
        try:
            if d.class_id == cosem.PROFILE_GENERIC:
                return self._profile(obis, d.attribute, d.access, now)
            if d.access is not None:
                return DENIED
            return self._attribute(d.class_id, obis, d.attribute, now)
        except (DriverError, TypeError, IndexError, ValueError):
            return 12          # type-unmatched: selective access parameters of the wrong shape

    def _attribute(self, class_id: int, obis: str, attr: int, now: float) -> Any:
        m = self.model
        if attr == 1:
            return (OCTET_STRING, cosem.obis_bytes(obis))
        if class_id == cosem.CLOCK and obis == cosem.CLOCK_OBIS:
            meter_now = int(m.clock(now))
            dev, status = self._local(meter_now)
            return {2: lambda: cosem.date_time_data(meter_now, dev, status),
                    3: lambda: (LONG, self.deviation),   # time_zone: same sign as date-time deviation 4: lambda: (UNSIGNED, status),
                    7: lambda: (INTEGER, 60 if self.dst else 0),
                    8: lambda: (BOOLEAN, self.dst)}.get(attr, lambda: NO_SUCH)()
        if class_id == cosem.DATA:
            table = {cosem.LOGICAL_DEVICE_NAME: (OCTET_STRING, self.logical_device_name.encode()),
                     cosem.ERROR_REGISTER: (DOUBLE_LONG_UNSIGNED, m.status_word(now))}
            if self.serial_number:
                table[cosem.SERIAL_NUMBER] = (OCTET_STRING, m.serial.encode())
            return table.get(obis, NO_SUCH) if attr == 2 else NO_SUCH
        if class_id in (cosem.REGISTER, cosem.EXTENDED_REGISTER) and obis in dict(REGISTERS):
            kind, scaler = register_format(obis)
            if attr == 3:
                unit = unit_code(dict(REGISTERS)[obis])
                return (STRUCTURE, [(INTEGER, scaler), (ENUM, unit)])
            if attr == 2:
                value = m.registers(now)[obis]
                return (kind, int(round(value * 10 ** -scaler)))
        return NO_SUCH

    @property
    def logical_device_name(self) -> str:
        """0.0.42.0.0.255: three letters of the maker, then the serial number."""
        return "WUM" + self.model.serial

    def _local(self, ts: int) -> tuple[int, int]:
        """(deviation, clock status) at ``ts``: EU summer time adds an hour and sets
        the DST bit (last Sunday of March 01:00 UTC to last Sunday of October)."""
        if self.dst and _eu_summer(ts):
            return self.deviation - 60, 0x80
        return self.deviation, 0

    def _columns(self, obis: str) -> list[cosem.CaptureObject]:
        if obis == cosem.LOAD_PROFILE:
            return [cosem.CLOCK_CAPTURE] + [cosem.CaptureObject(cosem.REGISTER, o) for o in PROFILE] \
                + [cosem.CaptureObject(cosem.DATA, cosem.PROFILE_STATUS)]
        return [cosem.CLOCK_CAPTURE, cosem.CaptureObject(cosem.DATA, cosem.EVENT_CODE)]

    def _profile(self, obis: str, attr: int, access: Any, now: float) -> Any:
        if obis not in (cosem.LOAD_PROFILE, cosem.EVENT_LOG):
            return NO_SUCH
        period = HOUR if obis == cosem.LOAD_PROFILE else 0
        if attr == 3:
            return (ARRAY, [c.to_data() for c in self._columns(obis)])
        if attr == 4:
            return (DOUBLE_LONG_UNSIGNED, period)
        if attr == 5:
            return (ENUM, 1)               # sort_method fifo (Blue Book 4.3.6)
        if attr == 6:                      # sort_object: unused when fifo, all zero
            return cosem.CaptureObject(0, "0.0.0.0.0.0", 0).to_data()
        if attr in (7, 8):
            return (DOUBLE_LONG_UNSIGNED, PROFILE_ENTRIES)
        if attr != 2:
            return NO_SUCH
        last = int(now) // HOUR * HOUR
        first = last - (PROFILE_ENTRIES - 1) * HOUR
        start, end = first, last
        if access is not None and access[0] == 1:
            start, end = cosem.parse_range_access(access)
        elif access is not None and access[0] == 2:
            sel = [v[1] for v in access[1][1]]
            start = first + (max(1, sel[0]) - 1) * HOUR
            end = last if sel[1] == 0 else first + (sel[1] - 1) * HOUR
        elif access is not None:
            return DENIED
        if obis == cosem.EVENT_LOG:
            start, end = max(start, int(now) - 30 * DAY), min(end, int(now))
            rows = [[cosem.date_time_data(t, *self._local(t)), (UNSIGNED, c)]
                    for t, c in self.model.events(start, end)]
            return (ARRAY, [(STRUCTURE, r) for r in rows])
        return (ARRAY, self._profile_rows(max(start, first), min(end, last)))

    def _profile_rows(self, start: int, end: int) -> list[Any]:
        rows, prev = [], None
        for ts, values in self.model.profile(start, end):
            clock = (NULL, None) if self.compress and prev == ts - HOUR else \
                cosem.date_time_data(ts, *self._local(ts))
            cells = [clock] + [(DOUBLE_LONG_UNSIGNED, values[o]) for o in PROFILE]
            rows.append((STRUCTURE, cells + [(UNSIGNED, 0)]))
            prev = ts
        return rows

    def _set(self, d: xdlms.Descriptor, value: Any) -> int:
        if d.class_id in self.objects.classes:
            return self.objects.set(d.class_id, cosem.obis_text(d.obis), d.attribute, value)
        if d.class_id != cosem.CLOCK or d.obis != cosem.obis_bytes(cosem.CLOCK_OBIS) \
                or d.attribute != 2:
            return DENIED
        try:
            meter_ts = DateTime.from_bytes(value[1]).to_epoch()
        except (DriverError, TypeError):
            return 12
        self.model.set_clock(meter_ts, self._now())
        return 0

    def _action(self, msg: xdlms.ActionRequest) -> xdlms.ActionResponse:
        d = msg.descriptor
        if d.class_id in self.objects.classes:      # disconnect control, calendar
            return xdlms.ActionResponse(self.objects.action(
                d.class_id, cosem.obis_text(d.obis), d.attribute), invoke_id=msg.invoke_id)
        return xdlms.ActionResponse(NO_SUCH, invoke_id=msg.invoke_id)


    def _record(self, msg: Any) -> None:
        """The traffic log: what was asked of this meter, in order (bounded)."""
        if isinstance(msg, xdlms.GetRequest):
            for d in msg.descriptors:
                self.traffic.append(("GET", d.class_id, cosem.obis_text(d.obis), d.attribute))
        elif isinstance(msg, (xdlms.SetRequest, xdlms.ActionRequest)):
            d = msg.descriptor
            kind = "SET" if isinstance(msg, xdlms.SetRequest) else "ACTION"
            self.traffic.append((kind, d.class_id, cosem.obis_text(d.obis), d.attribute))
        del self.traffic[:-10000]


def _last_sunday(year: int, month: int) -> int:
    """Epoch seconds of 01:00 UTC on the last Sunday of ``month``."""
    day = DateTime(year, month, 31 if month in (3, 10) else 30)
    return day.to_epoch() - ((day.dow % 7) * 86400) + 3600


def _eu_summer(ts: int) -> bool:
    year = DateTime.from_epoch(ts).year
    return _last_sunday(year, 3) <= ts < _last_sunday(year, 10)
