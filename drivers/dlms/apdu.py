"""Any DLMS/COSEM APDU from bytes: dispatch on the first byte to ACSE
(AARQ/AARE/RLRQ/RLRE), xDLMS initiate, data-transfer APDUs, or the
ciphered wrappers (Green Book 9.5 tag list).

Portable. Owns the dispatch only; must not know HDLC or sessions.
"""

from drivers import DriverError, RemoteProtocolError
from drivers.dlms import acse, security, xdlms

INITIATE_REQUEST, INITIATE_RESPONSE = 0x01, 0x08


class Ciphered:
    """A protected APDU we hold no keys for: tag, system title (general-
    ciphering only), security control byte, invocation counter, content."""

    __slots__ = ("tag", "system_title", "content")

    def __init__(self, tag, system_title, content):
        self.tag, self.system_title, self.content = tag, system_title, bytes(content)

    @property
    def security_control(self):
        return self.content[0] if self.content else None

    @property
    def invocation_counter(self):
        return int.from_bytes(self.content[1:5], "big") if len(self.content) >= 5 else None

    def __repr__(self):
        return "Ciphered(0x%02x, %d bytes)" % (self.tag, len(self.content))


def decode(data, context=None):
    """The APDU object for ``data``; with a ``security.SecurityContext`` a
    ciphered APDU is decrypted first. Any malformed input raises a
    ``drivers.DriverError`` subclass (RemoteProtocolError)."""
    data = bytes(data)
    if not data:
        raise RemoteProtocolError("empty APDU")
    try:
        return _decode(data, context)
    except DriverError:
        raise
    except (IndexError, ValueError, TypeError, KeyError) as e:
        raise RemoteProtocolError("malformed APDU: %s" % e, raw=data[:16].hex()) from e


def _decode(data, context):
    tag = data[0]
    if tag == acse.AARQ_TAG:
        return acse.AARQ.from_bytes(data)
    if tag == acse.AARE_TAG:
        return acse.AARE.from_bytes(data)
    if tag == acse.RLRQ_TAG:
        return acse.ReleaseRequest.from_bytes(data)
    if tag == acse.RLRE_TAG:
        return acse.ReleaseResponse.from_bytes(data)
    if tag == INITIATE_REQUEST:
        return acse.InitiateRequest.from_bytes(data)
    if tag == INITIATE_RESPONSE:
        return acse.InitiateResponse.from_bytes(data)
    if tag in security.CIPHERED_TAGS:
        if context is not None:
            return _decode(context.decrypt(data), None)
        t, title, content = security.split_ciphered(data)
        return Ciphered(t, title, content)
    return xdlms.decode(data)
