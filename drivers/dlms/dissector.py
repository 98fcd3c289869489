"""``wum dissect`` for DLMS: HDLC frames or a bare APDU decoded layer by
layer into a dict (HDLC header, LLC, APDU, decrypted content when keys are
given, A-XDR data). Portable (decryption needs ``security.aes_gcm``).

Owns presentation only; never raises on bad input: a layer that fails to
decode carries ``"error"`` and the raw hex.
"""

from drivers import DriverError
from drivers.dlms import acse, apdu, axdr, hdlc, security, xdlms


def _key(v):
    if v is None or isinstance(v, (bytes, bytearray)):
        return v
    return bytes.fromhex(v)


def _frame_dict(f):
    d = {"format": "type 3", "segmented": f.segmented, "dest": f.dest.hex(),
         "dest_address": hdlc.parse_address(f.dest), "src": f.src.hex(),
         "src_address": hdlc.parse_address(f.src), "control": "0x%02x" % f.control,
         "kind": f.kind, "pf": f.pf, "info_len": len(f.info)}
    if f.kind == hdlc.I:
        d["ns"], d["nr"] = f.ns, f.nr
    elif f.kind in (hdlc.RR, hdlc.RNR):
        d["nr"] = f.nr
    if f.kind in (hdlc.SNRM, hdlc.UA) and f.info:
        try:
            p = hdlc.LinkParameters.from_bytes(f.info)
            d["parameters"] = {"max_info_tx": p.max_info_tx, "max_info_rx": p.max_info_rx,
                               "window_tx": p.window_tx, "window_rx": p.window_rx}
        except DriverError as e:
            d["parameters"] = {"error": str(e)}
    return d


def _data(v):
    if isinstance(v, int):
        return {"data-access-result": xdlms.DATA_ACCESS_RESULTS.get(v, v)}
    return _plain(v)


def _plain(v):
    tag, value = v
    if tag in (axdr.ARRAY, axdr.STRUCTURE):
        return {axdr.NAMES[tag]: [_plain(x) for x in value]}
    if tag == axdr.COMPACT_ARRAY:
        return {"compact-array": [_plain(x) for x in value[1]]}
    if isinstance(value, bytes):
        if tag == axdr.OCTET_STRING and len(value) == 12:
            try:
                return {"octet-string": value.hex(),
                        "date-time": axdr.DateTime.from_bytes(value).to_epoch()}
            except DriverError:
                pass
        return {axdr.NAMES.get(tag, str(tag)): value.hex()}
    if tag == axdr.BIT_STRING:
        return {"bit-string": [value[0], value[1].hex()]}
    return {axdr.NAMES.get(tag, str(tag)): value}


def _descriptor(d):
    if not isinstance(d, xdlms.Descriptor):
        return repr(d)
    out = {"class_id": d.class_id, "obis": ".".join(str(b) for b in d.obis),
           "attribute": d.attribute}
    if d.access is not None:
        out["access_selector"] = d.access[0]
        out["access"] = _plain(d.access[1])
    return out


def apdu_dict(raw, context=None):
    d = {"hex": bytes(raw).hex()}
    try:
        msg = apdu.decode(raw)
    except DriverError as e:
        d["error"] = str(e)
        return d
    d["type"] = type(msg).__name__
    if isinstance(msg, apdu.Ciphered):
        d["security_control"] = msg.security_control
        d["invocation_counter"] = msg.invocation_counter
        if msg.system_title is not None:
            d["system_title"] = bytes(msg.system_title).hex()
        if context is not None:
            try:
                d["decrypted"] = apdu_dict(context.decrypt(raw))
            except DriverError as e:
                d["decrypt_error"] = str(e)
        return d
    for name in getattr(msg, "__slots__", ()):
        v = getattr(msg, name)
        if isinstance(v, bytes):
            v = v.hex()
        elif isinstance(v, list):
            v = [_data(x) if isinstance(x, (tuple, int)) else _descriptor(x) for x in v]
        elif isinstance(v, xdlms.Descriptor):
            v = _descriptor(v)
        elif isinstance(v, tuple):
            v = _data(v)
        elif not isinstance(v, (int, str, bool, type(None))):
            v = repr(v)
        d[name] = v
    if isinstance(msg, (acse.AARQ, acse.AARE)) and msg.user_information:
        d["initiate"] = apdu_dict(msg.user_information, context)
    if isinstance(msg, xdlms.GetResponse) and msg.kind == xdlms.DATABLOCK and msg.raw:
        try:
            d["data"] = _plain(axdr.decode(msg.raw))
        except DriverError:
            d["data"] = "partial block (decode after joining all blocks)"
    return d


def dissect(data, ek=None, ak=None, system_title=None):
    data = bytes(data)
    context = None
    if ek is not None:
        context = security.SecurityContext(_key(ek), _key(ak) or b"", b"\x00" * 8)
        context.peer_title = _key(system_title)
        context.peer_ic = -1
    if not data or data[0] != hdlc.FLAG:
        return {"apdu": apdu_dict(data, context)}
    framer = hdlc.Framer()
    framer.receive_data(data)
    frames, errors, pending = [], [], b""
    while True:
        ev = framer.next_event()
        if ev is None:
            break
        if isinstance(ev, hdlc.FrameError):
            errors.append({"reason": ev.reason, "hex": ev.raw.hex()})
            continue
        layer = {"hdlc": _frame_dict(ev)}
        if ev.kind in (hdlc.I, hdlc.UI):
            pending += ev.info
            if not ev.segmented:
                if pending[:2] in (b"\xe6\xe6", b"\xe6\xe7"):
                    layer["llc"] = pending[:3].hex()
                    pending = pending[3:]
                layer["apdu"] = apdu_dict(pending, context)
                pending = b""
        frames.append(layer)
        if context is not None:
            context.peer_ic = -1        # a dissector shows replays too
    out: "dict[str, object]" = {"frames": frames}
    if errors:
        out["errors"] = errors
    if framer.buf:
        out["trailing"] = bytes(framer.buf).hex()
    return out
