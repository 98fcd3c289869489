"""The client side of a DLMS/COSEM association over HDLC, sans-IO (h11
style): ``connect() / associate() / request() / release()`` return bytes to
send; ``receive_data(bytes)`` then ``next_event()`` yields events; a
timeout is the caller calling ``timeout()`` (retransmit or give up).

Owns the association state machine (a table, below), HDLC connection
set-up, LLC, ciphering of requests/responses, HLS-GMAC pass 3/4 and GET
block reassembly (raw blocks joined before any A-XDR parsing). Must not know
ports, clocks or what the registers mean. Portable.
"""

from drivers import LocalProtocolError, MeterRefused, MeterTimeout, RemoteProtocolError
from drivers.dlms import acse, apdu, hdlc, security, xdlms
from drivers.dlms.axdr import OCTET_STRING
from drivers.dlms.hdlc_conn import Connection

IDLE, LINKING, LINKED, ASSOCIATING, CHALLENGED = "idle", "linking", "linked", "associating", \
    "challenged"
ASSOCIATED, AWAITING, RELEASING = "associated", "awaiting", "releasing"

# state -> {event: next state} (Green Book 9.4.3 association establishment)
TRANSITIONS = {
    IDLE: {"snrm": LINKING, "disc": RELEASING},
    LINKING: {"ua": LINKED, "dm": IDLE, "snrm": LINKING, "disc": RELEASING},
    LINKED: {"aarq": ASSOCIATING, "disc": RELEASING, "dm": IDLE},
    ASSOCIATING: {"accepted": ASSOCIATED, "challenge": CHALLENGED, "rejected": LINKED,
                  "disc": RELEASING, "dm": IDLE},
    CHALLENGED: {"request": AWAITING, "disc": RELEASING, "dm": IDLE},
    ASSOCIATED: {"request": AWAITING, "disc": RELEASING, "dm": IDLE},
    AWAITING: {"response": ASSOCIATED, "disc": RELEASING, "dm": IDLE},
    RELEASING: {"ua": IDLE, "dm": IDLE, "disc": RELEASING},
}

NEED_DATA = "need-data"


class Send:
    """Event: transmit ``data`` (RR for the next segment, GET-next for a block)."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


class Corrupt:
    """Event: a frame failed its checks (kept in ``bad_frames``). The IO layer
    waits for a quiet line, then calls ``timeout()`` to have it sent again:
    answering at once would talk over the rest of the meter's burst."""

    __slots__ = ("raw",)

    def __init__(self, raw):
        self.raw = raw


class LinkUp:
    __slots__ = ("params",)

    def __init__(self, params):
        self.params = params


class LinkDown:
    __slots__ = ()


class Associated:
    """Event: the AARE accepted us (``challenge`` set when HLS pass 3 is due)."""

    __slots__ = ("aare", "initiate", "challenge")

    def __init__(self, aare, initiate, challenge=None):
        self.aare, self.initiate, self.challenge = aare, initiate, challenge


class Response:
    """Event: a complete data-transfer response (blocks already joined)."""

    __slots__ = ("apdu",)

    def __init__(self, apdu):
        self.apdu = apdu


class Association:
    """One client association with one logical device at one HDLC station."""

    def __init__(self, client_sap=16, logical_device=1, physical=None, auth="none",
                 password=None, security_context=None, params=None, max_pdu=0xFFFF,
                 retries=3, challenge=None, dedicated_key=None):
        self.local = hdlc.client_address(client_sap)
        self.remote = hdlc.server_address(logical_device, physical)
        self.proposal = params or hdlc.LinkParameters(2030, 2030, 7, 7)
        self.conn = Connection(self.local, self.remote, True, self.proposal)
        self.framer = hdlc.Framer(dest=self.local, src=self.remote)
        self.auth, self.password = auth, password
        self.security = security_context
        self.max_pdu = max_pdu
        self.retries = max(1, retries)
        self.challenge = challenge or b"\x00" * 16
        self.dedicated_key = dedicated_key if security_context is not None else None
        self.state = IDLE
        self.server_challenge = None
        self.negotiated = None
        self.bad_frames = []
        self._tries = 0
        self._pending = None          # the request awaiting its response
        self._blocks = bytearray()
        self._block_no = 0
        self._events = []

    # -- the table -------------------------------------------------------------
    def _go(self, event, ours=False):
        """Take a transition; an event the table does not allow is our misuse
        (``ours``, LocalProtocolError) or the meter's (RemoteProtocolError)."""
        nxt = TRANSITIONS.get(self.state, {}).get(event)
        if nxt is None:
            err = LocalProtocolError if ours else RemoteProtocolError
            raise err("unexpected %s in state %s" % (event, self.state), state=self.state)
        self.state = nxt

    def _out(self, frames):
        self._tries = 1
        return b"".join(frames)

    # -- verbs that produce bytes ------------------------------------------------
    def connect(self):
        self._go("snrm", True)
        self.conn.reset()
        return self._out(self.conn.snrm(self.proposal))

    def associate(self):
        self._go("aarq", True)
        return self._send_apdu(self._aarq().to_bytes())

    def _aarq(self):
        ir = acse.InitiateRequest(max_pdu=self.max_pdu, dedicated_key=self.dedicated_key)
        ui = ir.to_bytes() if self.security is None else self.security.encrypt(ir.to_bytes())
        ctx = acse.LN if self.security is None else acse.LN_CIPHERED
        title = None if self.security is None else self.security.system_title
        if self.auth == "lls":
            return acse.AARQ(ui, ctx, acse.MECH_LLS, self.password or b"", title)
        if self.auth == "hls":
            return acse.AARQ(ui, ctx, acse.MECH_HLS_GMAC, self.challenge, title)
        return acse.AARQ(ui, ctx, acse.MECH_NONE, None, title)

    def request(self, req):
        """Send a GET/SET/ACTION request object (ciphered when keyed)."""
        self._go("request", True)
        self._pending = req
        self._blocks = bytearray()
        raw = req.to_bytes()
        if self.security is not None:
            raw = self.security.encrypt(raw)
        return self._send_apdu(raw)

    def hls_reply(self):
        """HLS pass 3: ACTION reply_to_HLS_authentication with f(StoC)."""
        from drivers.dlms import cosem
        s = self.security
        tag = security.gmac(security.SC_AUTH, s.system_title, s.next_ic(), s.ek, s.ak,
                            self.server_challenge)
        desc = xdlms.Descriptor(cosem.ASSOCIATION_LN, cosem.obis_bytes(cosem.CURRENT_ASSOCIATION),
                                cosem.REPLY_TO_HLS)
        return self.request(xdlms.ActionRequest(desc, (OCTET_STRING, tag)))

    def release(self):
        self._go("disc", True)
        return self._out(self.conn.disc())

    def _send_apdu(self, raw):
        if len(raw) > self.max_pdu_tx():
            raise LocalProtocolError("APDU longer than the meter accepts", size=len(raw))
        return self._out(self.conn.send_apdu(raw))

    def max_pdu_tx(self):
        return self.negotiated.max_pdu if self.negotiated is not None else 0xFFFF

    def timeout(self):
        """The deadline for an answer passed: bytes to retransmit, or MeterTimeout."""
        if self._tries >= self.retries:
            raise MeterTimeout("no answer after %d tries" % self._tries, state=self.state)
        self._tries += 1
        self.framer.reset()
        return b"".join(self.conn.retransmit())

    # -- receiving --------------------------------------------------------------------
    def receive_data(self, data):
        self.framer.receive_data(data)

    def next_event(self):
        while not self._events:
            ev = self.framer.next_event()
            if ev is None:
                return NEED_DATA
            if isinstance(ev, hdlc.FrameError):
                self.bad_frames = self.bad_frames[-31:] + [ev.raw]
                return Corrupt(ev.raw)
            self._on_frame(ev)
        return self._events.pop(0)

    def _on_frame(self, frame):
        kind = frame.kind
        if kind == hdlc.DM and self.state not in (IDLE, RELEASING):
            was = self.state                # the meter has no connection with us (any more)
            self._go("dm")
            raise MeterRefused("meter answered DM in state %s" % was, state=was)
        if kind in (hdlc.UA, hdlc.DM):
            if self.state not in (LINKING, RELEASING):
                return                      # a late duplicate
            self._go("ua" if kind == hdlc.UA else "dm")
            if self.state == LINKED:
                srv = hdlc.LinkParameters.from_bytes(frame.info)
                self.conn.params = hdlc.LinkParameters(srv.max_info_rx, srv.max_info_tx,
                                                       srv.window_rx, srv.window_tx)
                self._events.append(LinkUp(self.conn.params))
            else:
                self._events.append(LinkDown())
            return
        if kind == hdlc.FRMR:
            raise RemoteProtocolError("meter rejected a frame (FRMR)", info=frame.info.hex())
        if kind not in (hdlc.I, hdlc.RR, hdlc.RNR):
            return
        data, frames = self.conn.on_frame(frame)
        if frames:
            self._tries = 1
            self._events.append(Send(b"".join(frames)))
        if data is not None:
            self._on_apdu(data)

    def _on_apdu(self, raw):
        if self.state == ASSOCIATING:
            self._on_aare(apdu.decode(raw))
            return
        if self.state != AWAITING:
            return
        msg = apdu.decode(raw, self.security)
        if isinstance(msg, xdlms.GetResponse) and msg.kind == xdlms.DATABLOCK:
            self._on_block(msg)
            return
        self._go("response")
        self._pending = None
        if isinstance(msg, xdlms.ExceptionResponse):
            raise MeterRefused("exception-response state %d service %d" % (
                msg.state_error, msg.service_error), state_error=msg.state_error,
                service_error=msg.service_error)
        self._events.append(Response(msg))

    def _on_block(self, msg):
        if msg.results:
            self._go("response")
            raise MeterRefused("block transfer failed: %s" % xdlms.DATA_ACCESS_RESULTS.get(
                msg.results[0], msg.results[0]), code=msg.results[0])
        if msg.block != self._block_no + 1 and self._blocks:
            raise RemoteProtocolError("GET block %d out of order" % msg.block)
        self._block_no = msg.block
        self._blocks.extend(msg.raw)
        if len(self._blocks) > 4 * 1024 * 1024:
            raise RemoteProtocolError("GET block transfer too long")
        if not msg.last:
            iid = self._pending.invoke_id if self._pending is not None else msg.invoke_id
            nxt = xdlms.GetRequest(xdlms.NEXT, block=msg.block, invoke_id=iid).to_bytes()
            if self.security is not None:
                nxt = self.security.encrypt(nxt)
            self._events.append(Send(self._send_apdu(nxt)))
            return
        self._go("response")
        raw, self._blocks, self._block_no = bytes(self._blocks), bytearray(), 0
        self._events.append(Response(_joined_response(self._pending, raw, msg.invoke_id)))
        self._pending = None

    def _on_aare(self, aare):
        if not isinstance(aare, acse.AARE):
            raise RemoteProtocolError("expected an AARE, got %r" % (aare,))
        if aare.result != 0:
            self._go("rejected")
            raise MeterRefused("association rejected (result %d, diagnostic %d)" % (
                aare.result, aare.diagnostic), result=aare.result, diagnostic=aare.diagnostic)
        if self.security is not None:
            if aare.ap_title is None:
                raise RemoteProtocolError("ciphered AARE without a system title")
            self.security.peer_title = aare.ap_title
        init = apdu.decode(aare.user_information, self.security)
        if isinstance(init, xdlms.ConfirmedServiceError):
            self._go("rejected")
            raise MeterRefused("initiate refused", service=init.service, value=init.value)
        if not isinstance(init, acse.InitiateResponse):
            raise RemoteProtocolError("AARE without an InitiateResponse")
        self.negotiated = init
        if self.dedicated_key is not None:      # from now on ded-ciphering (Green Book 9.2.7.2)
            self.security.dedicated_key = self.dedicated_key
        if aare.diagnostic == acse.DIAG_AUTH_REQUIRED and self.auth == "hls":
            if self.security is None or not aare.authentication:
                raise RemoteProtocolError("HLS challenge without keys or StoC")
            self.server_challenge = aare.authentication
            self._go("challenge")
            self._events.append(Associated(aare, init, aare.authentication))
            return
        self._go("accepted")
        self._events.append(Associated(aare, init))

    def check_hls_reply(self, response):
        """HLS pass 4: verify f(CtoS) the meter returned."""
        s = self.security
        ret = response.return_data
        if response.result != 0 or not isinstance(ret, tuple) or ret[0] != OCTET_STRING:
            raise MeterRefused("HLS authentication failed", result=response.result)
        tag = ret[1]
        if len(tag) != 17:
            raise RemoteProtocolError("bad HLS reply length")
        ic = int.from_bytes(tag[1:5], "big")
        want = security.gmac(tag[0], s.peer_title, ic, s.ek, s.ak, self.challenge)
        if want != tag:
            raise MeterRefused("meter failed HLS authentication (f(CtoS) mismatch)")


def _joined_response(request, raw, invoke_id):
    """The normal / with-list response a block transfer carried (Green Book 9.3.6)."""
    from drivers.dlms import axdr
    from drivers.dlms.xdlms import Reader, _read_result
    if request is not None and request.kind == xdlms.WITH_LIST:
        r = Reader(raw)
        n = r.length()
        results = [_read_result(r) for _ in range(n)]
        r.end()
        return xdlms.GetResponse(xdlms.WITH_LIST, results, invoke_id=invoke_id)
    return xdlms.GetResponse(xdlms.NORMAL, [axdr.decode(raw)], invoke_id=invoke_id)
