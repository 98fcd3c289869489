"""``wum dissect`` for DLMS: HDLC frames or a bare APDU decoded layer by
layer into a dict (HDLC header, LLC, APDU, decrypted content when keys are
given, A-XDR data shown readably by ``dissect_values``). Portable
(decryption needs ``security.aes_gcm``).

Checks: the HDLC layer of every frame carries ``"checks"``, a list of
``{"name", "ok", "expected", "found"}``: ``hcs`` (frames with an information
field), ``fcs``, and ``length`` when the length field does not reach a
closing flag; CRCs are shown as the two bytes on the wire. A ciphered APDU
decrypted with keys carries a ``gcm-tag`` check. A frame that fails a check
is still decoded and listed in ``frames`` (and, as before, in ``errors``
with its index); a tag that does not verify still shows the decrypted text.

Keys: ``ek``/``ak`` decrypt glo-ciphered APDUs with the sender's system
title, taken from the capture (the AARQ calling AP title for what the client
sends, the AARE responding AP title for what the server sends, the title in
a general-ciphering APDU), else ``system_title``. A dedicated key carried by
an AARQ's initiate request decrypts the ded-ciphered APDUs after it.

Owns presentation only; never raises on bad input: a layer that fails to
decode carries ``"error"`` and the raw hex.
"""

from drivers import DriverError, LocalProtocolError, RemoteProtocolError
from drivers.dlms import acse, apdu, axdr, hdlc, security, xdlms
from drivers.dlms import dissect_values as values

# glo-/ded- tags of what a client sends (Green Book 9.5); the rest come from the server
_CLIENT_TAGS = {0x21, 0xC8, 0xC9, 0xCB, 0xD0, 0xD1, 0xD3}


def _key(v):
    if v is None or isinstance(v, (bytes, bytearray)):
        return None if v is None else bytes(v)
    return bytes.fromhex(v)


def _check(name, expected, found):
    return {"name": name, "ok": expected == found, "expected": expected, "found": found}


def _crc_hex(crc):
    return "%02x%02x" % (crc & 0xFF, crc >> 8)     # as transmitted, LSB first


class _Session:
    """What a dissection learns along a capture: keys, titles, dedicated key."""

    def __init__(self, ek=None, ak=None, system_title=None):
        self.ek, self.ak = _key(ek), _key(ak) or b""
        self.title = _key(system_title)
        self.titles = {"client": None, "server": None}
        self.dedicated_key = None

    def sender_title(self, tag):
        return self.titles["client" if tag in _CLIENT_TAGS else "server"] or self.title


# -- decryption with a visible tag check -------------------------------------------------
def _ctr(key, iv, data):
    """GCM's keystream without the tag (counter 2 on): the text of an APDU
    whose tag does not verify, shown flagged rather than hidden."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    dec = Cipher(algorithms.AES(bytes(key)), modes.CTR(iv + b"\x00\x00\x00\x02")).decryptor()
    return dec.update(bytes(data)) + dec.finalize()


def _decrypt(raw, session):
    """-> (plain or None, checks, error text or None)."""
    try:
        tag, title, content = security.split_ciphered(raw)
    except DriverError as e:
        return None, [], str(e)
    title = title or session.sender_title(tag)
    if title is None or len(title) != 8:
        return None, [], "no system title to decrypt with (give --system-title)"
    ded = tag in security.DED_TAGS or tag == security.GENERAL_DED
    key = session.dedicated_key if ded else session.ek
    if key is None:
        return None, [], "ded-ciphered APDU and no dedicated key (an AARQ carries it)"
    sc = content[0] if content else 0
    tagged = sc & security.SC_AUTH and not sc & (0x0F | security.SC_COMPRESSED) and \
        len(content) >= 5 + security.TAG_LEN
    try:
        plain = security.unprotect(content, title, key, session.ak)[2]
    except LocalProtocolError as e:
        return None, [], str(e)
    except RemoteProtocolError as e:
        if not tagged:
            return None, [], str(e)
        body = content[5:-security.TAG_LEN]
        try:
            plain = _ctr(key, bytes(title) + content[1:5], body) if sc & security.SC_ENC \
                else body
        except ValueError as e2:
            return None, [], str(e2)
    if not tagged:
        return plain, [], None
    ic = int.from_bytes(content[1:5], "big")
    expected = security.protect(plain, sc, title, ic, key, session.ak)[-security.TAG_LEN:]
    return plain, [_check("gcm-tag", expected.hex(), content[-security.TAG_LEN:].hex())], None


# -- APDUs ----------------------------------------------------------------------------
def _ciphered(d, raw, msg, session):
    d["security_control"] = msg.security_control
    d["invocation_counter"] = msg.invocation_counter
    if msg.security_control is not None:
        d["security"] = values.security_dict(msg.security_control)
    if msg.system_title is not None:
        d["system_title"] = bytes(msg.system_title).hex()
        d["system_title_info"] = values.title_dict(msg.system_title)
    if session.ek is None:
        return d
    plain, checks, error = _decrypt(raw, session)
    if checks:
        d["checks"] = checks
    if error is not None:
        d["decrypt_error"] = error
    if plain is not None:
        d["decrypted"] = apdu_dict(plain, session)
    return d


def _field(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return [values.data_dict(x) if isinstance(x, (tuple, int)) else values.descriptor_dict(x)
                for x in v]
    if isinstance(v, xdlms.Descriptor):
        return values.descriptor_dict(v)
    if isinstance(v, tuple):
        return values.data_dict(v)
    if not isinstance(v, (int, str, bool, type(None))):
        return repr(v)
    return v


def _association(d, msg, session):
    """AARQ/AARE: the AP title (the system title, sent in clear) and the
    initiate request/response in the user information, decrypted with keys."""
    if msg.ap_title is not None:
        role, key = ("client", "calling_ap_title") if isinstance(msg, acse.AARQ) else \
            ("server", "responding_ap_title")
        d[key] = values.title_dict(msg.ap_title)
        if len(msg.ap_title) == 8:
            session.titles[role] = bytes(msg.ap_title)
    if msg.user_information:
        d["initiate"] = apdu_dict(msg.user_information, session)


def apdu_dict(raw, session=None):
    raw = bytes(raw)
    session = session or _Session()
    if raw[:1] == bytes((values.DATA_NOTIFICATION,)):
        return values.data_notification(raw)
    d = {"hex": raw.hex()}
    try:
        msg = apdu.decode(raw)
    except DriverError as e:
        d["error"] = str(e)
        return d
    d["type"] = type(msg).__name__
    if isinstance(msg, apdu.Ciphered):
        return _ciphered(d, raw, msg, session)
    for name in getattr(msg, "__slots__", ()):
        d[name] = _field(getattr(msg, name))
    if isinstance(msg, (acse.AARQ, acse.AARE)):
        _association(d, msg, session)
    if isinstance(msg, acse.InitiateRequest) and msg.dedicated_key:
        session.dedicated_key = bytes(msg.dedicated_key)
    if isinstance(msg, xdlms.GetResponse) and msg.kind == xdlms.DATABLOCK and msg.raw:
        try:
            d["data"] = values.data_dict(axdr.decode(msg.raw))
        except DriverError:
            d["data"] = "partial block (decode after joining all blocks)"
    return d


# -- HDLC -----------------------------------------------------------------------------
def _frame_dict(f):
    try:
        kind = f.kind
    except DriverError:
        kind = "unknown"
    d = {"format": "type 3", "segmented": f.segmented, "dest": f.dest.hex(),
         "dest_address": hdlc.parse_address(f.dest), "src": f.src.hex(),
         "src_address": hdlc.parse_address(f.src), "control": "0x%02x" % f.control,
         "kind": kind, "pf": f.pf, "info_len": len(f.info)}
    if kind == hdlc.I:
        d["ns"], d["nr"] = f.ns, f.nr
    elif kind in (hdlc.RR, hdlc.RNR):
        d["nr"] = f.nr
    if kind in (hdlc.SNRM, hdlc.UA) and f.info:
        try:
            p = hdlc.LinkParameters.from_bytes(f.info)
            d["parameters"] = {"max_info_tx": p.max_info_tx, "max_info_rx": p.max_info_rx,
                               "window_tx": p.window_tx, "window_rx": p.window_rx}
        except DriverError as e:
            d["parameters"] = {"error": str(e)}
    return d


def _address_end(body, pos):
    """Index past the 1-, 2- or 4-byte address at ``pos``; -1 if there is none."""
    for i in range(4):
        if pos < 0 or pos + i >= len(body):
            return -1
        if body[pos + i] & 1:
            return -1 if i == 2 else pos + i + 1
    return -1


def _frame_layer(raw, length_ok):
    """(layer, info, None) for the bytes from one flag to the next, decoded
    whatever its checks say; (None, None, reason) if it has no frame shape."""
    body = raw[1:-1]
    fmt = (body[0] << 8) | body[1]
    d_end = _address_end(body, 2)
    s_end = _address_end(body, d_end)
    if s_end < 0 or s_end + 3 > len(body):
        return None, None, "bad HDLC address field or truncated header"
    hdr_end = s_end + 1
    checks = []
    if not length_ok:
        checks.append(_check("length", "%d" % len(body), "%d" % (fmt & 0x7FF)))
    info = b""
    if len(body) > hdr_end + 2:         # an information field, after the HCS
        if len(body) < hdr_end + 4:
            return None, None, "truncated HDLC frame"
        checks.append(_check("hcs", _crc_hex(hdlc.crc16(body[:hdr_end])),
                             body[hdr_end:hdr_end + 2].hex()))
        info = body[hdr_end + 2:-2]
    checks.append(_check("fcs", _crc_hex(hdlc.crc16(body[:-2])), body[-2:].hex()))
    frame = hdlc.Frame(body[2:d_end], body[d_end:s_end], body[s_end], info, fmt & 0x0800)
    layer = _frame_dict(frame)
    layer["checks"] = checks
    return layer, info, None


def _hunt(data):
    """Cut a capture at its HDLC flags -> ([(offset, raw, length_ok)],
    errors, trailing bytes). The length field decides where a frame ends; if
    it does not land on a flag, the next flag does (flagged as ``length``)."""
    found, errors, pos, n = [], [], 0, len(data)
    while pos < n:
        i = data.find(b"\x7e", pos)
        stop = n if i < 0 else i
        if stop > pos:
            errors.append({"reason": "bytes outside any frame", "hex": data[pos:stop].hex(),
                           "offset": pos})
        if i < 0 or i + 1 == n:
            break
        if data[i + 1] == hdlc.FLAG:
            pos = i + 1
            continue
        if i + 3 > n:
            return found, errors, data[i:]
        fmt = (data[i + 1] << 8) | data[i + 2]
        end = i + (fmt & 0x7FF) + 1
        nxt = data.find(b"\x7e", i + 1)
        if fmt & 0xF000 == 0xA000 and fmt & 0x7FF >= 7:
            if end < n and data[end] == hdlc.FLAG:
                found.append((i, data[i:end + 1], True))
                pos = end
                continue
            if nxt < 0:
                return found, errors, data[i:]          # cut off before its end
            if nxt - i >= 8:
                found.append((i, data[i:nxt + 1], False))
                pos = nxt
                continue
        stop = n if nxt < 0 else nxt
        errors.append({"reason": "not an HDLC frame", "hex": data[i:stop].hex(), "offset": i})
        pos = stop
    return found, errors, b""


def _has_frame_start(data):
    i = data.find(b"\x7e")
    while 0 <= i < len(data) - 1:
        if data[i + 1] & 0xF0 == 0xA0:
            return True
        i = data.find(b"\x7e", i + 1)
    return False


def _bad_checks(layer):
    return [c["name"].upper() for c in layer["checks"] if not c["ok"]]


def dissect(data, ek=None, ak=None, system_title=None):
    data = bytes(data)
    session = _Session(ek, ak, system_title)
    if not data or data[0] != hdlc.FLAG:
        doc = {"apdu": apdu_dict(data, session)}
        if "error" not in doc["apdu"] or not _has_frame_start(data):
            return doc
        # not an APDU: HDLC frames behind line noise, which _hunt reports
    found, errors, trailing = _hunt(data)
    frames, pending = [], b""
    for offset, raw, length_ok in found:
        hd, info, reason = _frame_layer(raw, length_ok)
        if hd is None:
            errors.append({"reason": reason, "hex": raw.hex(), "offset": offset})
            continue
        hd["offset"] = offset
        bad = _bad_checks(hd)
        if bad:
            errors.append({"reason": "HDLC %s mismatch" % "/".join(bad), "hex": raw.hex(),
                           "frame": len(frames)})
        layer = {"hdlc": hd}
        if hd["kind"] in (hdlc.I, hdlc.UI):
            pending += info
            if not hd["segmented"]:
                if pending[:2] in (b"\xe6\xe6", b"\xe6\xe7"):
                    layer["llc"] = pending[:3].hex()
                    pending = pending[3:]
                layer["apdu"] = apdu_dict(pending, session)
                pending = b""
        frames.append(layer)
    out = {"frames": frames}
    if errors:
        out["errors"] = errors
    if trailing:
        out["trailing"] = trailing.hex()
    if pending:
        out["incomplete_apdu"] = pending.hex()
    return out
