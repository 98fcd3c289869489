"""xDLMS data-transfer APDUs with logical-name referencing (Green Book 9.3.6
GET, 9.3.7 SET, 9.3.8 ACTION, 9.3.11 exception; ASN.1 in Green Book 9.5,
encoded A-XDR): GET normal / next / with-list, GET responses with data
blocks, SET normal, ACTION normal, ExceptionResponse, ConfirmedServiceError.

Portable. Owns bytes <-> APDU value objects. A data result is either a
Data ``(tag, value)`` tuple or an ``int`` data-access-result. Block data
stays raw bytes: the caller reassembles all blocks *before* A-XDR parsing
(block boundaries fall mid-row). Must not know sessions, keys or HDLC.
"""

from drivers import LocalProtocolError, RemoteProtocolError
from drivers.dlms import axdr

GET_REQUEST, SET_REQUEST, ACTION_REQUEST = 0xC0, 0xC1, 0xC3
GET_RESPONSE, SET_RESPONSE, ACTION_RESPONSE = 0xC4, 0xC5, 0xC7
EXCEPTION_RESPONSE, CONFIRMED_SERVICE_ERROR = 0xD8, 0x0E
NORMAL, NEXT, WITH_LIST = 1, 2, 3
DATABLOCK = 2          # GET-Response-With-Datablock shares choice 2 with Next
INVOKE_ID = 0xC1       # invoke-id 1, confirmed, high priority (Green Book 9.5)

# data-access-result (Green Book 9.5)
DATA_ACCESS_RESULTS = {
    0: "success", 1: "hardware-fault", 2: "temporary-failure", 3: "read-write-denied",
    4: "object-undefined", 9: "object-class-inconsistent", 11: "object-unavailable",
    12: "type-unmatched", 13: "scope-of-access-violated", 14: "data-block-unavailable",
    15: "long-get-aborted", 16: "no-long-get-in-progress", 17: "long-set-aborted",
    18: "no-long-set-in-progress", 19: "data-block-number-invalid", 250: "other-reason",
}


class Reader:
    """Cursor over an APDU; every overrun is a RemoteProtocolError."""

    def __init__(self, data, pos=0):
        self.data, self.pos = bytes(data), pos

    def take(self, n):
        if self.pos + n > len(self.data):
            raise RemoteProtocolError("truncated APDU", raw=self.data[:16].hex())
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw

    def byte(self):
        return self.take(1)[0]

    def uint(self, n):
        return int.from_bytes(self.take(n), "big")

    def length(self):
        n, self.pos = axdr.decode_length(self.data, self.pos)
        return n

    def data_value(self):
        value, self.pos = axdr.decode_from(self.data, self.pos)
        return value

    def end(self):
        if self.pos != len(self.data):
            raise RemoteProtocolError("%d trailing bytes in APDU" % (len(self.data) - self.pos))


class Descriptor:
    """Cosem-Attribute-Descriptor (or method descriptor) with optional
    selective access: class-id(2) instance-id(6) attribute-id(1, signed)
    then 00 | 01 selector Data."""

    __slots__ = ("class_id", "obis", "attribute", "access")

    def __init__(self, class_id, obis, attribute, access=None):
        self.class_id, self.obis, self.attribute = class_id, bytes(obis), attribute
        self.access = access          # (selector, Data) or None
        if len(self.obis) != 6:
            raise LocalProtocolError("logical name must be 6 bytes")

    def to_bytes(self, with_access=True):
        out = self.class_id.to_bytes(2, "big") + self.obis + bytes((self.attribute & 0xFF,))
        if with_access:
            if self.access is None:
                out += b"\x00"
            else:
                out += bytes((1, self.access[0])) + axdr.encode(self.access[1])
        return out

    @classmethod
    def read(cls, r, with_access=True):
        class_id, obis = r.uint(2), r.take(6)
        attr = r.byte()
        attr = attr - 256 if attr > 127 else attr
        access = None
        if with_access and r.byte():
            access = (r.byte(), r.data_value())
        return cls(class_id, obis, attr, access)

    def __eq__(self, other):
        return isinstance(other, Descriptor) and self.to_bytes() == other.to_bytes()

    def __repr__(self):
        return "Descriptor(%d, %s, %d%s)" % (self.class_id, ".".join(str(b) for b in self.obis),
                                             self.attribute, " sel" if self.access else "")


def _encode_result(result):
    if isinstance(result, int):
        return bytes((1, result))
    return b"\x00" + axdr.encode(result)


def _read_result(r):
    if r.byte():
        return r.byte()
    return r.data_value()


class GetRequest:
    """C0 01 iip <descriptor>  |  C0 02 iip <block(4)>  |  C0 03 iip n <descriptor>*n"""

    __slots__ = ("kind", "invoke_id", "descriptors", "block")

    def __init__(self, kind, descriptors=None, block=0, invoke_id=INVOKE_ID):
        self.kind, self.invoke_id = kind, invoke_id
        self.descriptors = list(descriptors or [])
        self.block = block

    def to_bytes(self):
        head = bytes((GET_REQUEST, self.kind, self.invoke_id))
        if self.kind == NORMAL:
            return head + self.descriptors[0].to_bytes()
        if self.kind == NEXT:
            return head + self.block.to_bytes(4, "big")
        return head + axdr.encode_length(len(self.descriptors)) + \
            b"".join(d.to_bytes() for d in self.descriptors)

    @classmethod
    def read(cls, r):
        kind, iid = r.byte(), r.byte()
        if kind == NORMAL:
            return cls(kind, [Descriptor.read(r)], invoke_id=iid)
        if kind == NEXT:
            return cls(kind, block=r.uint(4), invoke_id=iid)
        if kind == WITH_LIST:
            n = r.length()
            if n > len(r.data):
                raise RemoteProtocolError("GET list longer than APDU")
            return cls(kind, [Descriptor.read(r) for _ in range(n)], invoke_id=iid)
        raise RemoteProtocolError("unknown GET-Request choice %d" % kind)


class GetResponse:
    """C4 01 iip <result>  |  C4 02 iip last block(4) (00 raw | 01 dar)  |  C4 03 iip n <result>*n.
    ``results`` holds Data tuples / ints; a datablock keeps ``raw`` bytes
    (or ``results[0]`` = its data-access-result)."""

    __slots__ = ("kind", "invoke_id", "results", "last", "block", "raw")

    def __init__(self, kind, results=None, last=True, block=0, raw=b"", invoke_id=INVOKE_ID):
        self.kind, self.invoke_id = kind, invoke_id
        self.results = list(results or [])
        self.last, self.block, self.raw = last, block, bytes(raw)

    def to_bytes(self):
        head = bytes((GET_RESPONSE, self.kind, self.invoke_id))
        if self.kind == NORMAL:
            return head + _encode_result(self.results[0])
        if self.kind == DATABLOCK:
            head += bytes((1 if self.last else 0,)) + self.block.to_bytes(4, "big")
            if self.results:
                return head + bytes((1, self.results[0]))
            return head + b"\x00" + axdr.encode_length(len(self.raw)) + self.raw
        return head + axdr.encode_length(len(self.results)) + \
            b"".join(_encode_result(x) for x in self.results)

    @classmethod
    def read(cls, r):
        kind, iid = r.byte(), r.byte()
        if kind == NORMAL:
            return cls(kind, [_read_result(r)], invoke_id=iid)
        if kind == DATABLOCK:
            last, block = r.byte() != 0, r.uint(4)
            if r.byte():
                return cls(kind, [r.byte()], last, block, invoke_id=iid)
            return cls(kind, last=last, block=block, raw=r.take(r.length()), invoke_id=iid)
        if kind == WITH_LIST:
            n = r.length()
            if n > len(r.data):
                raise RemoteProtocolError("GET result list longer than APDU")
            return cls(kind, [_read_result(r) for _ in range(n)], invoke_id=iid)
        raise RemoteProtocolError("unknown GET-Response choice %d" % kind)


class SetRequest:
    """C1 01 iip <descriptor> <Data>"""

    __slots__ = ("descriptor", "value", "invoke_id")

    def __init__(self, descriptor, value, invoke_id=INVOKE_ID):
        self.descriptor, self.value, self.invoke_id = descriptor, value, invoke_id

    def to_bytes(self):
        return bytes((SET_REQUEST, NORMAL, self.invoke_id)) + self.descriptor.to_bytes() + \
            axdr.encode(self.value)

    @classmethod
    def read(cls, r):
        kind, iid = r.byte(), r.byte()
        if kind != NORMAL:
            raise RemoteProtocolError("SET-Request choice %d not supported" % kind)
        d = Descriptor.read(r)
        return cls(d, r.data_value(), iid)


class SetResponse:
    """C5 01 iip <data-access-result>"""

    __slots__ = ("result", "invoke_id")

    def __init__(self, result, invoke_id=INVOKE_ID):
        self.result, self.invoke_id = result, invoke_id

    def to_bytes(self):
        return bytes((SET_RESPONSE, NORMAL, self.invoke_id, self.result))

    @classmethod
    def read(cls, r):
        kind, iid = r.byte(), r.byte()
        if kind != NORMAL:
            raise RemoteProtocolError("SET-Response choice %d not supported" % kind)
        return cls(r.byte(), iid)


class ActionRequest:
    """C3 01 iip class(2) obis(6) method(1) (00 | 01 <Data>)"""

    __slots__ = ("descriptor", "parameters", "invoke_id")

    def __init__(self, descriptor, parameters=None, invoke_id=INVOKE_ID):
        self.descriptor, self.parameters, self.invoke_id = descriptor, parameters, invoke_id

    def to_bytes(self):
        out = bytes((ACTION_REQUEST, NORMAL, self.invoke_id)) + self.descriptor.to_bytes(False)
        if self.parameters is None:
            return out + b"\x00"
        return out + b"\x01" + axdr.encode(self.parameters)

    @classmethod
    def read(cls, r):
        kind, iid = r.byte(), r.byte()
        if kind != NORMAL:
            raise RemoteProtocolError("ACTION-Request choice %d not supported" % kind)
        d = Descriptor.read(r, with_access=False)
        return cls(d, r.data_value() if r.byte() else None, iid)


class ActionResponse:
    """C7 01 iip <action-result> (00 | 01 <Get-Data-Result>)"""

    __slots__ = ("result", "return_data", "invoke_id")

    def __init__(self, result, return_data=None, invoke_id=INVOKE_ID):
        self.result, self.return_data, self.invoke_id = result, return_data, invoke_id

    def to_bytes(self):
        out = bytes((ACTION_RESPONSE, NORMAL, self.invoke_id, self.result))
        if self.return_data is None:
            return out + b"\x00"
        return out + b"\x01" + _encode_result(self.return_data)

    @classmethod
    def read(cls, r):
        kind, iid = r.byte(), r.byte()
        if kind != NORMAL:
            raise RemoteProtocolError("ACTION-Response choice %d not supported" % kind)
        result = r.byte()
        return cls(result, _read_result(r) if r.byte() else None, iid)


class ExceptionResponse:
    """D8 <state-error> <service-error> (Green Book 9.5)."""

    __slots__ = ("state_error", "service_error")

    def __init__(self, state_error, service_error):
        self.state_error, self.service_error = state_error, service_error

    def to_bytes(self):
        return bytes((EXCEPTION_RESPONSE, self.state_error, self.service_error))

    @classmethod
    def read(cls, r):
        return cls(r.byte(), r.byte())


class ConfirmedServiceError:
    """0E <service> <ServiceError choice> <value>, e.g. 0E 01 06 00 = initiateError,
    initiate: other."""

    __slots__ = ("service", "error", "value")

    def __init__(self, service, error, value):
        self.service, self.error, self.value = service, error, value

    def to_bytes(self):
        return bytes((CONFIRMED_SERVICE_ERROR, self.service, self.error, self.value))

    @classmethod
    def read(cls, r):
        return cls(r.byte(), r.byte(), r.byte())


TAGS = {  # type: dict
    GET_REQUEST: GetRequest, GET_RESPONSE: GetResponse, SET_REQUEST: SetRequest,
    SET_RESPONSE: SetResponse, ACTION_REQUEST: ActionRequest, ACTION_RESPONSE: ActionResponse,
    EXCEPTION_RESPONSE: ExceptionResponse, CONFIRMED_SERVICE_ERROR: ConfirmedServiceError,
}


def decode(data):
    """A data-transfer APDU from bytes (the whole of them)."""
    data = bytes(data)
    if not data or data[0] not in TAGS:
        raise RemoteProtocolError("not an xDLMS APDU", raw=data[:8].hex())
    r = Reader(data, 1)
    apdu = TAGS[data[0]].read(r)
    r.end()
    return apdu
