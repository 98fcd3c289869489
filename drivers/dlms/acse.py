"""Association control (ACSE) APDUs as DLMS/COSEM uses them: AARQ, AARE,
RLRQ, RLRE (BER, IEC 62056-53 / Green Book 9.4.2.3 with ISO/IEC 8650-1),
and the xDLMS InitiateRequest / InitiateResponse / ConfirmedServiceError
carried in their user-information (A-XDR, Green Book 9.5).

Portable. Owns bytes <-> association APDUs; must not know keys, HDLC or
how a session proceeds. ``user_information`` is kept as the raw xDLMS APDU
(plain or glo-ciphered): ``security`` unwraps it.
"""

from drivers import RemoteProtocolError
from drivers.dlms.axdr import decode_length, encode_length

AARQ_TAG, AARE_TAG, RLRQ_TAG, RLRE_TAG = 0x60, 0x61, 0x62, 0x63
_OID_CONTEXT = b"\x60\x85\x74\x05\x08\x01"     # 2.16.756.5.8.1.x application context
_OID_MECHANISM = b"\x60\x85\x74\x05\x08\x02"   # 2.16.756.5.8.2.x authentication mechanism
LN, SN, LN_CIPHERED, SN_CIPHERED = 1, 2, 3, 4
MECH_NONE, MECH_LLS, MECH_HLS_GMAC = 0, 1, 5
# Green Book 9.4.2.3 result-source-diagnostic, acse-service-user
DIAG_NULL, DIAG_NO_REASON, DIAG_CONTEXT_NOT_SUPPORTED = 0, 1, 2
DIAG_MECHANISM_NOT_RECOGNISED, DIAG_MECHANISM_REQUIRED = 11, 12
DIAG_AUTH_FAILURE, DIAG_AUTH_REQUIRED = 13, 14

# Conformance block bits (Green Book 9.5, bit 0 = most significant bit of the 24)
CONFORMANCE = {
    "general-protection": 1, "general-block-transfer": 2, "attribute0-with-set": 8,
    "priority-mgmt": 9, "attribute0-with-get": 10, "block-transfer-with-get": 11,
    "block-transfer-with-set": 12, "block-transfer-with-action": 13,
    "multiple-references": 14, "data-notification": 16, "access": 17, "get": 19,
    "set": 20, "selective-access": 21, "event-notification": 22, "action": 23,
}
CLIENT_CONFORMANCE = 0x007E1F   # block transfer, multiple references, get/set/selective/action


def conformance_names(bits):
    return [n for n, b in CONFORMANCE.items() if bits & (1 << (23 - b))]


# -- BER TLVs --------------------------------------------------------------------
def _tlv(tag, value):
    return bytes((tag,)) + encode_length(len(value)) + bytes(value)


def _parse_tlvs(data):
    """-> list of (tag, value) of a constructed BER content."""
    out, pos = [], 0
    while pos < len(data):
        tag = data[pos]
        n, pos = decode_length(data, pos + 1)
        if pos + n > len(data):
            raise RemoteProtocolError("truncated BER element 0x%02x" % tag)
        out.append((tag, bytes(data[pos:pos + n])))
        pos += n
    return out


def _outer(data, tag):
    data = bytes(data)
    if not data or data[0] != tag:
        raise RemoteProtocolError("expected APDU tag 0x%02x" % tag, raw=data[:4].hex())
    n, pos = decode_length(data, 1)
    if pos + n != len(data):
        raise RemoteProtocolError("APDU length mismatch", raw=data[:8].hex())
    return _parse_tlvs(data[pos:])


def _oid_last(value, prefix, what):
    inner = _parse_tlvs(value) if value[:1] == b"\x06" else [(0x06, value)]
    oid = inner[0][1] if inner else b""
    if len(oid) != 7 or oid[:6] != prefix:
        raise RemoteProtocolError("unknown %s %s" % (what, oid.hex()))
    return oid[6]


def _small_int(value):
    inner = _parse_tlvs(value)
    if not inner or inner[0][0] != 0x02 or not inner[0][1]:
        raise RemoteProtocolError("expected INTEGER")
    return int.from_bytes(inner[0][1], "big")


def _octets_in(value, tag):
    inner = _parse_tlvs(value)
    if not inner or inner[0][0] != tag:
        raise RemoteProtocolError("expected tag 0x%02x" % tag)
    return inner[0][1]


class AARQ:
    """Association request ([APPLICATION 0], Green Book 9.4.2.3 / 11.x examples)::

        60 L  A1 09 06 07 60 85 74 05 08 01 <ctx>        application-context-name
              [A6 0A 04 08 <calling AP title>]             (system title, ciphered contexts)
              [8A 02 07 80  8B 07 60 85 74 05 08 02 <m>    acse-requirements, mechanism
               AC L 80 L <password or challenge>]           calling-authentication-value
              BE L 04 L <InitiateRequest, plain or glo-ciphered>
    """

    __slots__ = ("context", "mechanism", "authentication", "ap_title", "user_information")

    def __init__(self, user_information, context=LN, mechanism=MECH_NONE, authentication=None,
                 ap_title=None):
        self.context, self.mechanism = context, mechanism
        self.authentication, self.ap_title = authentication, ap_title
        self.user_information = bytes(user_information)

    def to_bytes(self):
        body = _tlv(0xA1, _tlv(0x06, _OID_CONTEXT + bytes((self.context,))))
        if self.ap_title is not None:
            body += _tlv(0xA6, _tlv(0x04, self.ap_title))
        if self.mechanism != MECH_NONE:
            body += _tlv(0x8A, b"\x07\x80")
            body += _tlv(0x8B, _OID_MECHANISM + bytes((self.mechanism,)))
            body += _tlv(0xAC, _tlv(0x80, self.authentication or b""))
        body += _tlv(0xBE, _tlv(0x04, self.user_information))
        return _tlv(AARQ_TAG, body)

    @classmethod
    def from_bytes(cls, data):
        ctx, mech, auth, title, ui = None, MECH_NONE, None, None, None
        for tag, value in _outer(data, AARQ_TAG):
            if tag == 0xA1:
                ctx = _oid_last(value, _OID_CONTEXT, "application context")
            elif tag == 0xA6:
                title = _octets_in(value, 0x04)
            elif tag == 0x8B:
                mech = _oid_last(value, _OID_MECHANISM, "mechanism")
            elif tag == 0xAC:
                auth = _octets_in(value, 0x80)
            elif tag == 0xBE:
                ui = _octets_in(value, 0x04)
        if ctx is None or ui is None:
            raise RemoteProtocolError("AARQ without context or user-information")
        return cls(ui, ctx, mech, auth, title)

    def __eq__(self, other):
        return isinstance(other, AARQ) and self.to_bytes() == other.to_bytes()

    def __repr__(self):
        return "AARQ(ctx=%d mech=%d)" % (self.context, self.mechanism)


class AARE:
    """Association response ([APPLICATION 1])::

        61 L  A1 09 06 07 60 85 74 05 08 01 <ctx>
              A2 03 02 01 <result>                       0 accepted, 1 rejected-permanent, 2 transient
              A3 05 A1 03 02 01 <diagnostic>             acse-service-user (A2: -provider)
              [A4 0A 04 08 <responding AP title>]
              [88 02 07 80  89 07 60 85 74 05 08 02 <m>  AA L 80 L <StoC challenge>]
              BE L 04 L <InitiateResponse or ConfirmedServiceError>
    """

    __slots__ = ("result", "diagnostic", "context", "mechanism", "authentication", "ap_title",
                 "user_information", "diagnostic_source")

    def __init__(self, user_information, result=0, diagnostic=0, context=LN,
                 mechanism=MECH_NONE, authentication=None, ap_title=None, diagnostic_source=1):
        self.result, self.diagnostic, self.context = result, diagnostic, context
        self.mechanism, self.authentication, self.ap_title = mechanism, authentication, ap_title
        self.user_information = bytes(user_information)
        self.diagnostic_source = diagnostic_source

    def to_bytes(self):
        body = _tlv(0xA1, _tlv(0x06, _OID_CONTEXT + bytes((self.context,))))
        body += _tlv(0xA2, _tlv(0x02, bytes((self.result,))))
        body += _tlv(0xA3, _tlv(0xA0 + self.diagnostic_source, _tlv(0x02, bytes((self.diagnostic,)))))
        if self.ap_title is not None:
            body += _tlv(0xA4, _tlv(0x04, self.ap_title))
        if self.mechanism != MECH_NONE:
            body += _tlv(0x88, b"\x07\x80")
            body += _tlv(0x89, _OID_MECHANISM + bytes((self.mechanism,)))
            body += _tlv(0xAA, _tlv(0x80, self.authentication or b""))
        body += _tlv(0xBE, _tlv(0x04, self.user_information))
        return _tlv(AARE_TAG, body)

    @classmethod
    def from_bytes(cls, data):
        fields = {"ui": b"", "ctx": None, "result": None, "diag": 0, "src": 1,
                  "mech": MECH_NONE, "auth": None, "title": None}
        for tag, value in _outer(data, AARE_TAG):
            if tag == 0xA1:
                fields["ctx"] = _oid_last(value, _OID_CONTEXT, "application context")
            elif tag == 0xA2:
                fields["result"] = _small_int(value)
            elif tag == 0xA3:
                inner = _parse_tlvs(value)
                if not inner:
                    raise RemoteProtocolError("empty result-source-diagnostic")
                fields["src"] = inner[0][0] & 0x0F
                fields["diag"] = _small_int(inner[0][1])
            elif tag == 0xA4:
                fields["title"] = _octets_in(value, 0x04)
            elif tag == 0x89:
                fields["mech"] = _oid_last(value, _OID_MECHANISM, "mechanism")
            elif tag == 0xAA:
                fields["auth"] = _octets_in(value, 0x80)
            elif tag == 0xBE:
                fields["ui"] = _octets_in(value, 0x04)
        if fields["ctx"] is None or fields["result"] is None:
            raise RemoteProtocolError("AARE without context or result")
        return cls(fields["ui"], fields["result"], fields["diag"], fields["ctx"], fields["mech"],
                   fields["auth"], fields["title"], fields["src"])

    def __eq__(self, other):
        return isinstance(other, AARE) and self.to_bytes() == other.to_bytes()

    def __repr__(self):
        return "AARE(result=%d diag=%d)" % (self.result, self.diagnostic)


class ReleaseRequest:
    """RLRQ ([APPLICATION 2]): 62 L [80 01 <reason>] [BE L 04 L <InitiateRequest>]."""

    __slots__ = ("reason", "user_information")
    tag = RLRQ_TAG

    def __init__(self, reason=0, user_information=None):
        self.reason, self.user_information = reason, user_information

    def to_bytes(self):
        body = b"" if self.reason is None else _tlv(0x80, bytes((self.reason,)))
        if self.user_information is not None:
            body += _tlv(0xBE, _tlv(0x04, self.user_information))
        return _tlv(self.tag, body)

    @classmethod
    def from_bytes(cls, data):
        reason, ui = None, None
        for tag, value in _outer(data, cls.tag):
            if tag == 0x80 and value:
                reason = value[0]
            elif tag == 0xBE:
                ui = _octets_in(value, 0x04)
        return cls(reason, ui)

    def __eq__(self, other):
        return type(other) is type(self) and self.to_bytes() == other.to_bytes()


class ReleaseResponse(ReleaseRequest):
    """RLRE ([APPLICATION 3]): 63 L [80 01 <reason>] [BE ...]."""

    tag = RLRE_TAG


# -- xDLMS initiate (Green Book 9.5, A-XDR) -------------------------------------------
def _conformance_bytes(bits):
    return b"\x5f\x1f\x04\x00" + bits.to_bytes(3, "big")


def _read_conformance(data, pos):
    if data[pos:pos + 4] != b"\x5f\x1f\x04\x00" or pos + 7 > len(data):
        raise RemoteProtocolError("bad conformance block", raw=bytes(data).hex())
    return int.from_bytes(data[pos + 4:pos + 7], "big"), pos + 7


class InitiateRequest:
    """01 [dedicated-key] [response-allowed] [proposed-QoS] 06 <conformance> <max PDU(2)>.
    Optional fields are 00 (absent) or 01 + value."""

    __slots__ = ("conformance", "max_pdu", "dedicated_key", "version")

    def __init__(self, conformance=CLIENT_CONFORMANCE, max_pdu=0xFFFF, dedicated_key=None,
                 version=6):
        self.conformance, self.max_pdu = conformance, max_pdu
        self.dedicated_key, self.version = dedicated_key, version

    def to_bytes(self):
        key = b"\x00" if self.dedicated_key is None else \
            b"\x01" + encode_length(len(self.dedicated_key)) + self.dedicated_key
        return b"\x01" + key + b"\x00\x00" + bytes((self.version,)) + \
            _conformance_bytes(self.conformance) + self.max_pdu.to_bytes(2, "big")

    @classmethod
    def from_bytes(cls, data):
        data = bytes(data)
        try:
            if data[0] != 0x01:
                raise RemoteProtocolError("not an InitiateRequest", raw=data.hex())
            pos, key = 1, None
            if data[pos]:
                n, pos = decode_length(data, pos + 1)
                key, pos = data[pos:pos + n], pos + n
            else:
                pos += 1
            pos += 2 if data[pos] else 1            # response-allowed
            pos += 2 if data[pos] else 1            # proposed-quality-of-service
            version = data[pos]
            conf, pos = _read_conformance(data, pos + 1)
            if pos + 2 != len(data):
                raise RemoteProtocolError("bad InitiateRequest length", raw=data.hex())
            return cls(conf, int.from_bytes(data[pos:pos + 2], "big"), key, version)
        except IndexError:
            raise RemoteProtocolError("truncated InitiateRequest", raw=data.hex()) from None

    def __eq__(self, other):
        return isinstance(other, InitiateRequest) and self.to_bytes() == other.to_bytes()


class InitiateResponse:
    """08 [negotiated-QoS] 06 <conformance> <server max receive PDU(2)> <vaa-name(2)=0007>."""

    __slots__ = ("conformance", "max_pdu", "version", "vaa_name")

    def __init__(self, conformance, max_pdu, version=6, vaa_name=7):
        self.conformance, self.max_pdu = conformance, max_pdu
        self.version, self.vaa_name = version, vaa_name

    def to_bytes(self):
        return b"\x08\x00" + bytes((self.version,)) + _conformance_bytes(self.conformance) + \
            self.max_pdu.to_bytes(2, "big") + self.vaa_name.to_bytes(2, "big")

    @classmethod
    def from_bytes(cls, data):
        data = bytes(data)
        try:
            if data[0] != 0x08:
                raise RemoteProtocolError("not an InitiateResponse", raw=data.hex())
            pos = 3 if data[1] else 2
            version = data[pos]
            conf, pos = _read_conformance(data, pos + 1)
            if pos + 4 != len(data):
                raise RemoteProtocolError("bad InitiateResponse length", raw=data.hex())
            return cls(conf, int.from_bytes(data[pos:pos + 2], "big"), version,
                       int.from_bytes(data[pos + 2:pos + 4], "big"))
        except IndexError:
            raise RemoteProtocolError("truncated InitiateResponse", raw=data.hex()) from None

    def __eq__(self, other):
        return isinstance(other, InitiateResponse) and self.to_bytes() == other.to_bytes()

