"""HDLC frame format type 3 as DLMS/COSEM uses it (IEC 62056-46:2002+A1,
Green Book 8.4): frames, addresses, control field, CRC-16/X.25, SNRM/UA
parameter negotiation and a framer that finds frames in a byte stream.

Portable (CPython and MicroPython). Owns bytes <-> frames only; must not
know about APDUs, association state, ports or time. Sequence numbers,
segmentation and retransmission live in ``hdlc_conn``.
"""

from drivers import LocalProtocolError, RemoteProtocolError

FLAG = 0x7E
LLC_REQUEST = b"\xe6\xe6\x00"   # IEC 62056-46 §5.3: LSAP E6, E6 = command
LLC_RESPONSE = b"\xe6\xe7\x00"  # E6, E7 = response, quality 00
MAX_FRAME = 0x7FF               # 11-bit frame length field


def _make_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x8408 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_table()


def crc16(data):
    """CRC-16/X.25 (reflected 0x1021, init and xorout 0xFFFF), IEC 62056-46 Annex A."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFF


def _crc_bytes(data):
    c = crc16(data)
    return bytes((c & 0xFF, c >> 8))   # transmitted least significant byte first


# -- addresses (IEC 62056-46 §6.4.2) -------------------------------------
def client_address(sap):
    """One-byte client address: SAP << 1 with the extension bit set."""
    if not 0 <= sap <= 0x7F:
        raise LocalProtocolError("client SAP out of range: %r" % sap)
    return bytes(((sap << 1) | 1,))


def server_address(logical, physical=None, size=None):
    """Server address of 1, 2 or 4 bytes: upper (logical device) and lower
    (physical, the multi-drop station) HDLC addresses, 7 or 14 bits each."""
    if size is None:
        if physical is None:
            size = 1
        elif logical < 0x80 and physical < 0x80:
            size = 2
        else:
            size = 4
    if size == 1:
        return bytes(((logical << 1) | 1,))
    if size == 2:
        if logical > 0x7F or physical > 0x7F:
            raise LocalProtocolError("address too large for 2 bytes", logical=logical)
        return bytes((logical << 1, (physical << 1) | 1))
    if size == 4:
        if logical > 0x3FFF or physical > 0x3FFF:
            raise LocalProtocolError("address too large", logical=logical, physical=physical)
        return bytes(((logical >> 7) << 1, (logical & 0x7F) << 1,
                      (physical >> 7) << 1, ((physical & 0x7F) << 1) | 1))
    raise LocalProtocolError("address size must be 1, 2 or 4: %r" % size)


def parse_address(raw):
    """-> (upper, lower or None) from an address field's raw bytes."""
    vals = [b >> 1 for b in raw]
    if len(raw) == 1:
        return (vals[0], None)
    if len(raw) == 2:
        return (vals[0], vals[1])
    if len(raw) == 4:
        return ((vals[0] << 7) | vals[1], (vals[2] << 7) | vals[3])
    raise RemoteProtocolError("bad HDLC address length %d" % len(raw), raw=bytes(raw).hex())


def _address_end(data, pos):
    """Index just past the address starting at ``pos``; -1 if more bytes are
    needed; raises on an address that is not 1, 2 or 4 bytes long."""
    for i in range(4):
        if pos + i >= len(data):
            return -1
        if data[pos + i] & 1:
            n = i + 1
            if n == 3:
                break
            return pos + n
    raise RemoteProtocolError("bad HDLC address field")


# -- control field (IEC 62056-46 §6.4.3) ----------------------------------
I, RR, RNR, SNRM, DISC, UA, DM, FRMR, UI = "I", "RR", "RNR", "SNRM", "DISC", "UA", "DM", "FRMR", "UI"  # noqa: E741 (the standard names the I frame)
_U_CODES = {SNRM: 0x83, DISC: 0x43, UA: 0x63, DM: 0x0F, FRMR: 0x87, UI: 0x03}
_U_KINDS = {v: k for k, v in _U_CODES.items()}


def control(kind, pf=True, ns=0, nr=0):
    """Control byte: I = RRRPSSS0, RR = RRRP0001, RNR = RRRP0101, U = as tabled."""
    p = 0x10 if pf else 0
    if kind == I:
        return ((nr & 7) << 5) | p | ((ns & 7) << 1)
    if kind == RR:
        return ((nr & 7) << 5) | p | 0x01
    if kind == RNR:
        return ((nr & 7) << 5) | p | 0x05
    return _U_CODES[kind] | p


def control_kind(c):
    if not c & 1:
        return I
    if c & 0x0F == 0x01:
        return RR
    if c & 0x0F == 0x05:
        return RNR
    kind = _U_KINDS.get(c & 0xEF)
    if kind is None:
        raise RemoteProtocolError("unknown HDLC control field 0x%02x" % c)
    return kind


class Frame:
    """One HDLC frame, format type 3 (IEC 62056-46 §6.4.1, Green Book 8.4.2)::

        7E | A S LLL LLLLLLLL | dest addr | src addr | control | HCS   | info | FCS   | 7E
           | 2 bytes: 0xA0 + S (segmentation, 0x08) + 11-bit length     | 2 LE  |      | 2 LE
           | 1/2/4 bytes      | 1/2/4     | 1 byte  | (only with info)

    The length counts every byte between the flags. HCS covers format to
    control, FCS covers format to the end of info, both CRC-16/X.25
    transmitted LSB first. Address bytes carry an extension bit (LSB, 1 on
    the last byte). ``dest``/``src`` are kept as raw address bytes so a
    frame re-encodes byte for byte.
    """

    __slots__ = ("dest", "src", "control", "info", "segmented")

    def __init__(self, dest, src, control, info=b"", segmented=False):
        self.dest = bytes(dest)
        self.src = bytes(src)
        self.control = control
        self.info = bytes(info)
        self.segmented = bool(segmented)

    @property
    def kind(self):
        return control_kind(self.control)

    @property
    def pf(self):
        return bool(self.control & 0x10)

    @property
    def ns(self):
        return (self.control >> 1) & 7

    @property
    def nr(self):
        return (self.control >> 5) & 7

    def to_bytes(self):
        header_len = 2 + len(self.dest) + len(self.src) + 1
        length = header_len + 2 + (len(self.info) + 2 if self.info else 0)
        if length > MAX_FRAME:
            raise LocalProtocolError("HDLC frame too long: %d" % length)
        fmt = 0xA000 | (0x0800 if self.segmented else 0) | length
        head = bytes((fmt >> 8, fmt & 0xFF)) + self.dest + self.src + bytes((self.control,))
        if self.info:
            body = head + _crc_bytes(head) + self.info
        else:
            body = head
        return b"\x7e" + body + _crc_bytes(body) + b"\x7e"

    @classmethod
    def from_bytes(cls, data):
        data = bytes(data)
        if len(data) < 9 or data[0] != FLAG or data[-1] != FLAG:
            raise RemoteProtocolError("not an HDLC frame", raw=data.hex())
        fmt = (data[1] << 8) | data[2]
        if fmt & 0xF000 != 0xA000:
            raise RemoteProtocolError("not frame format type 3", raw=data.hex())
        if (fmt & 0x7FF) != len(data) - 2:
            raise RemoteProtocolError("HDLC length mismatch", raw=data.hex())
        d_end = _address_end(data, 3)
        s_end = _address_end(data, d_end) if d_end > 0 else -1
        if s_end < 0 or s_end >= len(data) - 3:
            raise RemoteProtocolError("truncated HDLC header", raw=data.hex())
        ctrl = data[s_end]
        hdr_end = s_end + 1
        body_end = len(data) - 3
        if crc16(data[1:body_end]) != data[body_end] | (data[body_end + 1] << 8):
            raise RemoteProtocolError("HDLC FCS mismatch", raw=data.hex())
        info = b""
        if body_end > hdr_end:
            if body_end < hdr_end + 2 or crc16(data[1:hdr_end]) != \
                    data[hdr_end] | (data[hdr_end + 1] << 8):
                raise RemoteProtocolError("HDLC HCS mismatch", raw=data.hex())
            info = data[hdr_end + 2:body_end]
        control_kind(ctrl)
        return cls(data[3:d_end], data[d_end:s_end], ctrl, info, bool(fmt & 0x0800))

    def __eq__(self, other):
        return isinstance(other, Frame) and self.to_bytes() == other.to_bytes()

    def __repr__(self):
        return "Frame(%s dest=%s src=%s ctrl=0x%02x S=%d info=%s)" % (
            self.kind, self.dest.hex(), self.src.hex(), self.control, self.segmented,
            self.info.hex())


class FrameError:
    """A framer event: a frame-shaped run of bytes that failed its checks
    (bad FCS, missing closing flag). ``dest``/``src`` are as read and may be
    wrong themselves when the header had no HCS."""

    __slots__ = ("raw", "reason", "dest", "src")

    def __init__(self, raw, reason, dest=b"", src=b""):
        self.raw, self.reason, self.dest, self.src = bytes(raw), reason, bytes(dest), bytes(src)

    def __repr__(self):
        return "FrameError(%s, %s)" % (self.reason, self.raw.hex())


class Framer:
    """Finds frames in a byte stream (pymodbus-style framer).

    ``receive_data(bytes)`` then ``next_event()`` -> ``Frame``, ``FrameError``
    or None (need more data). Skips garbage, frames addressed to other
    stations (``dest``/``src`` filters, raw address bytes) and a frame's
    closing flag when it doubles as the next opening flag; re-hunts one byte
    on after any bad frame; keeps at most ``cap`` bytes.
    """

    def __init__(self, dest=None, src=None, cap=4 * (MAX_FRAME + 2)):
        self.dest, self.src, self.cap = dest, src, cap
        self.buf = b""                  # bytes, not bytearray: MicroPython cannot del a slice
        self.skipped = 0
        self.foreign = 0
        self.errors = 0

    def receive_data(self, data):
        self.buf += bytes(data)
        if len(self.buf) > self.cap:
            drop = len(self.buf) - self.cap
            self.skipped += drop
            self.buf = self.buf[drop:]

    def reset(self):
        self.skipped += len(self.buf)
        self.buf = b""

    def _drop(self, n):
        self.skipped += n
        self.buf = self.buf[n:]

    def _rehunt(self):
        """Skip the flag we stand on and everything up to the next one."""
        j = self.buf.find(b"\x7e", 1)
        self._drop(j if j > 0 else len(self.buf))

    def next_event(self):
        while True:
            i = self.buf.find(b"\x7e")
            if i < 0:
                self._drop(len(self.buf))
                return None
            if i:
                self._drop(i)
            ev = self._try_frame()
            if ev is None:
                return None
            if ev is _SKIP:
                self._rehunt()
                continue
            if isinstance(ev, FrameError):
                self.errors += 1
                self._rehunt()
                return ev
            if (self.dest is not None and ev.dest != self.dest) or \
                    (self.src is not None and ev.src != self.src):
                self.foreign += 1
                continue
            return ev

    def _try_frame(self):
        """Frame, FrameError, _SKIP (not a frame start) or None (need data)."""
        buf = self.buf
        if len(buf) < 3:
            return None
        fmt = (buf[1] << 8) | buf[2]
        length = fmt & 0x7FF
        if fmt & 0xF000 != 0xA000 or length < 7:
            return _SKIP
        try:
            d_end = _address_end(buf, 3)
            s_end = _address_end(buf, d_end) if d_end > 0 else -1
        except RemoteProtocolError:
            return _SKIP
        if s_end < 0 or s_end + 3 > len(buf):
            return None
        hdr_end = s_end + 1
        if length > hdr_end + 1:        # an info field: check the HCS first
            if crc16(buf[1:hdr_end]) != buf[hdr_end] | (buf[hdr_end + 1] << 8):
                return _SKIP
        elif length != hdr_end + 1:
            return _SKIP
        if len(buf) < length + 2:
            return None
        raw = bytes(buf[:length + 2])
        dest, src = raw[3:d_end], raw[d_end:s_end]
        if raw[-1] != FLAG:
            return FrameError(raw, "no closing flag", dest, src)
        try:
            frame = Frame.from_bytes(raw)
        except RemoteProtocolError as e:
            return FrameError(raw, str(e), dest, src)
        self.buf = buf[length + 1:]     # keep the closing flag: it may open the next frame
        return frame


_SKIP = object()


# -- SNRM/UA information field (IEC 62056-46 §6.4.4.4.3.2) ----------------
_PARAM_IDS = (0x05, 0x06, 0x07, 0x08)   # max info tx, max info rx, window tx, window rx


class LinkParameters:
    """Negotiated HDLC parameters. In an SNRM they are the client's own
    (tx = what it sends); in a UA the server's. Encoded as format identifier
    0x81, group 0x80, group length, then (id, length, value) triples."""

    __slots__ = ("max_info_tx", "max_info_rx", "window_tx", "window_rx")

    def __init__(self, max_info_tx=128, max_info_rx=128, window_tx=1, window_rx=1):
        self.max_info_tx, self.max_info_rx = max_info_tx, max_info_rx
        self.window_tx, self.window_rx = window_tx, window_rx

    def values(self):
        return (self.max_info_tx, self.max_info_rx, self.window_tx, self.window_rx)

    def to_bytes(self):
        out = b""
        for pid, v in zip(_PARAM_IDS, self.values()):  # noqa: B905 (MicroPython zip has no strict=)
            if pid >= 0x07:
                n = 4
            else:
                n = 1 if v < 0x100 else 2
            out += bytes((pid, n)) + v.to_bytes(n, "big")
        return b"\x81\x80" + bytes((len(out),)) + out

    @classmethod
    def from_bytes(cls, data):
        data = bytes(data)
        p = cls()
        if not data:
            return p
        if len(data) < 3 or data[0] != 0x81 or data[1] != 0x80 or data[2] != len(data) - 3:
            raise RemoteProtocolError("bad HDLC parameter field", raw=data.hex())
        vals = list(p.values())
        pos = 3
        while pos < len(data):
            if pos + 2 > len(data):
                raise RemoteProtocolError("truncated HDLC parameter", raw=data.hex())
            pid, n = data[pos], data[pos + 1]
            if n < 1 or n > 4 or pos + 2 + n > len(data):
                raise RemoteProtocolError("bad HDLC parameter length", raw=data.hex())
            v = int.from_bytes(data[pos + 2:pos + 2 + n], "big")
            if pid in _PARAM_IDS:
                vals[_PARAM_IDS.index(pid)] = v
            pos += 2 + n
        p = cls(*vals)
        if min(vals) < 1:
            raise RemoteProtocolError("HDLC parameter zero", raw=data.hex())
        return p

    def answer(self, own):
        """The UA parameters a server with limits ``own`` gives this SNRM:
        it sends no more than the client receives and vice versa."""
        return LinkParameters(min(own.max_info_tx, self.max_info_rx),
                              min(own.max_info_rx, self.max_info_tx),
                              min(own.window_tx, self.window_rx),
                              min(own.window_rx, self.window_tx))

    def __eq__(self, other):
        return isinstance(other, LinkParameters) and self.values() == other.values()

    def __repr__(self):
        return "LinkParameters(%d, %d, %d, %d)" % self.values()
