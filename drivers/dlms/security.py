"""DLMS/COSEM security suite 0 (Green Book 9.2.7): AES-GCM-128 with a
12-byte authentication tag for glo-/ded-ciphered APDUs and general-glo-
ciphering, the security control byte, the initiation vector (system title +
invocation counter, checked for monotonicity on receipt) and the GMAC
function of HLS mechanism 5 (Green Book 9.2.7.4, 9.2.4.8.5).

Portable except for ``aes_gcm``: on CPython it uses ``cryptography``; a
MicroPython build replaces that one function. Owns bytes <-> protected
bytes and counters; must not know HDLC or sessions. Keys never reach logs.
"""

from drivers import LocalProtocolError, RemoteProtocolError
from drivers.dlms.axdr import decode_length, encode_length

SC_AUTH, SC_ENC, SC_BROADCAST, SC_COMPRESSED = 0x10, 0x20, 0x40, 0x80
TAG_LEN = 12
# Green Book 9.5: glo- and ded- tags of the protected APDU for each plain tag
GLO = {0x01: 0x21, 0x08: 0x28, 0x0E: 0x2E, 0xC0: 0xC8, 0xC1: 0xC9, 0xC2: 0xCA, 0xC3: 0xCB,
       0xC4: 0xCC, 0xC5: 0xCD, 0xC7: 0xCF}      # (exception-response is never ciphered)
DED = {0xC0: 0xD0, 0xC1: 0xD1, 0xC2: 0xD2, 0xC3: 0xD3, 0xC4: 0xD4, 0xC5: 0xD5, 0xC7: 0xD7}
GENERAL_GLO, GENERAL_DED = 0xDB, 0xDC
GLO_TAGS = set(GLO.values())
DED_TAGS = set(DED.values())
CIPHERED_TAGS = GLO_TAGS | DED_TAGS | {GENERAL_GLO, GENERAL_DED}


def aes_gcm(key, iv, aad, data, tag=None):
    """AES-GCM with a 12-byte tag. Encrypt (``tag`` None) -> ciphertext + tag;
    decrypt -> plaintext, RemoteProtocolError if the tag does not verify.
    The one place that needs a crypto library (swap it on MicroPython)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if len(key) != 16 or len(iv) != 12:
        raise LocalProtocolError("suite 0 needs a 16-byte key and a 12-byte IV")
    if tag is None:
        enc = Cipher(algorithms.AES(bytes(key)), modes.GCM(bytes(iv))).encryptor()
        enc.authenticate_additional_data(bytes(aad))
        ct = enc.update(bytes(data)) + enc.finalize()
        return ct + enc.tag[:TAG_LEN]
    try:
        dec = Cipher(algorithms.AES(bytes(key)),
                     modes.GCM(bytes(iv), bytes(tag), min_tag_length=TAG_LEN)).decryptor()
        dec.authenticate_additional_data(bytes(aad))
        return dec.update(bytes(data)) + dec.finalize()
    except InvalidTag:
        raise RemoteProtocolError("authentication tag does not verify") from None


def protect(plain, sc, system_title, ic, ek, ak):
    """SC | IC(4) | ciphertext | tag(12) (Green Book 9.2.7.2.4 table of AAD/plaintext)."""
    if sc & 0x0F:
        raise LocalProtocolError("only security suite 0 is supported")
    iv = bytes(system_title) + ic.to_bytes(4, "big")
    head = bytes((sc,)) + ic.to_bytes(4, "big")
    if sc & SC_ENC and sc & SC_AUTH:
        return head + aes_gcm(ek, iv, bytes((sc,)) + ak, plain)
    if sc & SC_AUTH:
        return head + plain + aes_gcm(ek, iv, bytes((sc,)) + ak + plain, b"")
    if sc & SC_ENC:
        return head + aes_gcm(ek, iv, b"", plain)[:-TAG_LEN]
    return head + bytes(plain)


def unprotect(content, system_title, ek, ak):
    """-> (sc, ic, plain) from SC | IC | ciphertext | tag."""
    content = bytes(content)
    if len(content) < 5:
        raise RemoteProtocolError("ciphered content too short")
    sc, ic = content[0], int.from_bytes(content[1:5], "big")
    if sc & 0x0F:
        raise RemoteProtocolError("security suite %d not supported" % (sc & 0x0F))
    if sc & SC_COMPRESSED:
        raise RemoteProtocolError("compressed APDUs not supported")
    iv = bytes(system_title) + content[1:5]
    body = content[5:]
    if sc & SC_AUTH:
        if len(body) < TAG_LEN:
            raise RemoteProtocolError("ciphered content shorter than its tag")
        body, tag = body[:-TAG_LEN], body[-TAG_LEN:]
        if sc & SC_ENC:
            return sc, ic, aes_gcm(ek, iv, bytes((sc,)) + ak, body, tag)
        aes_gcm(ek, iv, bytes((sc,)) + ak + body, b"", tag)
        return sc, ic, body
    if sc & SC_ENC:
        # encryption only: GCM without tag is CTR from counter 2
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        ctr = Cipher(algorithms.AES(bytes(ek)), modes.CTR(iv + b"\x00\x00\x00\x02")).decryptor()
        return sc, ic, ctr.update(body) + ctr.finalize()
    return sc, ic, body


def gmac(sc, system_title, ic, ek, ak, challenge):
    """HLS mechanism 5: SC | IC | GMAC(SC | AK | challenge) (Green Book 9.2.4.8.5)."""
    iv = bytes(system_title) + ic.to_bytes(4, "big")
    tag = aes_gcm(ek, iv, bytes((sc,)) + bytes(ak) + bytes(challenge), b"")
    return bytes((sc,)) + ic.to_bytes(4, "big") + tag


def split_ciphered(data):
    """-> (tag, system title or None, content) of a glo-/ded-/general-ciphered APDU."""
    data = bytes(data)
    if not data or data[0] not in CIPHERED_TAGS:
        raise RemoteProtocolError("not a ciphered APDU", raw=data[:4].hex())
    pos, title = 1, None
    if data[0] in (GENERAL_GLO, GENERAL_DED):
        n, pos = decode_length(data, pos)
        title, pos = data[pos:pos + n], pos + n
    n, pos = decode_length(data, pos)
    if pos + n != len(data):
        raise RemoteProtocolError("ciphered APDU length mismatch")
    return data[0], title, data[pos:]


class SecurityContext:
    """Keys, own system title and invocation counter of one end of an
    association; the peer's title and last counter (a repeat or a step
    back is a replay: RemoteProtocolError)."""

    def __init__(self, ek, ak, system_title, sc=SC_AUTH | SC_ENC, invocation_counter=0,
                 dedicated_key=None, general=False):
        self.ek, self.ak = bytes(ek), bytes(ak)
        self.system_title = bytes(system_title)
        self.sc = sc
        self.ic = invocation_counter
        self.dedicated_key = dedicated_key
        self.general = general
        self.peer_title = None
        self.peer_ic = -1

    def next_ic(self):
        ic = self.ic
        self.ic = (self.ic + 1) & 0xFFFFFFFF
        return ic

    def encrypt(self, plain):
        """The glo- (or ded- with a dedicated key; general-glo if ``general``)
        ciphered form of a plain APDU."""
        plain = bytes(plain)
        ded = self.dedicated_key is not None and plain[0] in DED
        key = self.dedicated_key if ded else self.ek
        content = protect(plain, self.sc, self.system_title, self.next_ic(), key, self.ak)
        if self.general:
            tag = GENERAL_DED if ded else GENERAL_GLO
            return bytes((tag,)) + encode_length(len(self.system_title)) + \
                self.system_title + encode_length(len(content)) + content
        wrapped = DED[plain[0]] if ded else GLO.get(plain[0])
        if wrapped is None:
            raise LocalProtocolError("APDU 0x%02x has no ciphered form" % plain[0])
        return bytes((wrapped,)) + encode_length(len(content)) + content

    def decrypt(self, data):
        tag, title, content = split_ciphered(data)
        title = title or self.peer_title
        if title is None or len(title) != 8:
            raise RemoteProtocolError("no peer system title to decrypt with")
        ded = tag in DED_TAGS or tag == GENERAL_DED
        if ded and self.dedicated_key is None:
            raise RemoteProtocolError("ded-ciphered APDU without a dedicated key")
        key = self.dedicated_key if ded else self.ek
        if len(content) >= 5:
            ic = int.from_bytes(content[1:5], "big")
            if ic <= self.peer_ic:
                raise RemoteProtocolError("invocation counter replayed", ic=ic, last=self.peer_ic)
        sc, ic, plain = unprotect(content, title, key, self.ak)
        self.peer_ic = ic
        return plain
