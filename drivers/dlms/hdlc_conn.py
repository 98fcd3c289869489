"""One end of a connection-mode HDLC data link (normal response mode) as
DLMS/COSEM uses it (IEC 62056-46 §6.4.4, Green Book 8.4.3-8.4.5): send and
receive sequence numbers N(S)/N(R), the LLC header, segmentation of long
APDUs both ways (S bit) with a send window, acknowledgement by RR and
retransmission of the last burst.

Portable and symmetric: the client association and the meter simulator use
the same class (``is_client`` picks the LLC header and how a duplicate is
answered). Owns sequence state only; must not know APDUs, clocks or ports
(a timeout is the caller calling ``retransmit()``).
"""

from drivers import RemoteProtocolError
from drivers.dlms.hdlc import (
    DISC,
    DM,
    LLC_REQUEST,
    LLC_RESPONSE,
    RNR,
    RR,
    SNRM,
    UA,
    Frame,
    I,
    LinkParameters,
    control,
)

MAX_APDU = 256 * 1024   # refuse to reassemble more than this from segments


class Connection:
    """Sequence numbers and segmentation for one HDLC connection.

    ``local``/``remote`` are raw address bytes. ``params`` are this end's
    effective parameters (``max_info_tx`` = longest info field it may send,
    ``window_tx`` = frames per burst). Every method returns the frames to
    transmit as bytes, and keeps them in ``last_sent`` for ``retransmit()``.
    """

    def __init__(self, local, remote, is_client, params=None):
        self.local = bytes(local)
        self.remote = bytes(remote)
        self.is_client = is_client
        self.params = params or LinkParameters()
        self.reset()

    def reset(self):
        self.vs = 0
        self.vr = 0
        self._rx = bytearray()
        self._out = []
        self._base = 0
        self._base_ns = 0
        self._burst = 0
        self.last_sent = []

    def _frame(self, ctrl, info=b"", segmented=False):
        return Frame(self.remote, self.local, ctrl, info, segmented).to_bytes()

    def _sent(self, frames):
        self.last_sent = frames
        return frames

    # -- unnumbered frames ---------------------------------------------------
    def snrm(self, proposal=None):
        info = proposal.to_bytes() if proposal is not None else b""
        return self._sent([self._frame(control(SNRM), info)])

    def ua(self, params=None):
        info = params.to_bytes() if params is not None else b""
        return self._sent([self._frame(control(UA), info)])

    def disc(self):
        return self._sent([self._frame(control(DISC))])

    def dm(self):
        return self._sent([self._frame(control(DM))])

    def rr(self):
        return self._sent([self._frame(control(RR, True, nr=self.vr))])

    def retransmit(self):
        """The frames of the last transmission, unchanged (IEC 62056-46 §6.4.4.3:
        the peer recognises a repeated N(S) and answers again)."""
        return list(self.last_sent)

    # -- sending an APDU -------------------------------------------------------
    def send_apdu(self, apdu):
        """LLC header + APDU, cut into info fields of at most ``max_info_tx``
        bytes; returns the first burst (up to ``window_tx`` frames, P/F set on
        the last)."""
        data = (LLC_REQUEST if self.is_client else LLC_RESPONSE) + bytes(apdu)
        size = max(1, self.params.max_info_tx)
        self._out = [data[i:i + size] for i in range(0, len(data), size)]
        self._base = 0
        self._base_ns = self.vs
        return self._next_burst()

    def _next_burst(self):
        n = min(max(1, self.params.window_tx), len(self._out) - self._base)
        frames = []
        for k in range(n):
            idx = self._base + k
            ns = (self._base_ns + k) & 7
            ctrl = control(I, k == n - 1, ns=ns, nr=self.vr)
            frames.append(self._frame(ctrl, self._out[idx], idx < len(self._out) - 1))
        self.vs = (self._base_ns + n) & 7
        self._burst = n
        return self._sent(frames)

    def _acknowledge(self, nr):
        """Apply the peer's N(R); True if it acknowledged at least one frame."""
        acked = (nr - self._base_ns) & 7
        if 0 < acked <= self._burst:
            self._base += acked
            self._base_ns = nr & 7
            self._burst -= acked
            if self._base >= len(self._out):
                self._out = []
                self._base = 0
                self._burst = 0
            return True
        return False

    @property
    def sending(self):
        """True while segments of an APDU we send are still unacknowledged."""
        return bool(self._out)

    # -- receiving ----------------------------------------------------------
    def on_frame(self, frame):
        """Handle an I, RR or RNR frame from the peer.

        -> (apdu or None, frames to transmit). ``apdu`` is a complete APDU
        with the LLC header removed.
        """
        kind = frame.kind
        if kind == I:
            return self._on_i(frame)
        if kind == RR:
            if self._acknowledge(frame.nr) and self._out:
                return None, self._next_burst()
            if self._out:
                return None, self.retransmit()
            return None, (self.rr() if not self.is_client else [])
        if kind == RNR:
            return None, []
        raise RemoteProtocolError("unexpected HDLC %s frame on a connection" % kind)

    def _on_i(self, frame):
        if frame.ns != self.vr:
            if not self.is_client and frame.ns == ((self.vr - 1) & 7):
                return None, self.retransmit()     # our answer was lost: say it again
            if frame.pf:
                return None, self.rr()             # ask for a resend from V(R)
            return None, []
        self.vr = (self.vr + 1) & 7
        if self._out:
            self._acknowledge(frame.nr)
        if not frame.segmented:
            self._out = []
            self._burst = 0
        self._rx.extend(frame.info)
        if len(self._rx) > MAX_APDU:
            self._rx = bytearray()
            raise RemoteProtocolError("segmented APDU longer than %d bytes" % MAX_APDU)
        if frame.segmented:
            return None, (self.rr() if frame.pf else [])
        data = bytes(self._rx)
        self._rx = bytearray()
        if len(data) < 3 or data[0] != 0xE6 or data[1] not in (0xE6, 0xE7):
            raise RemoteProtocolError("missing LLC header", raw=data[:8].hex())
        return data[3:], []
