"""Layered decode of captured IEC 62056-21 bytes (for ``wum dissect``).

Portable. Owns turning a capture (both directions mixed, any garbage) into a
JSON-able dict: each message with its fields, data sets with OBIS codes and
readings, and the errors met on the way. Never raises on any input.
"""

from drivers.iec62056_21.dataset import Readout, obis_of, quantity
from drivers.iec62056_21.errors import IecProtocolError
from drivers.iec62056_21.framer import Framer
from drivers.iec62056_21.profile import parse_logbook, parse_profile


def _datasets(text):
    out = []
    try:
        sets = Readout.from_text(text).datasets()
    except IecProtocolError as e:
        return [{"error": str(e)}]
    for ds in sets:
        ob = obis_of(ds.address)
        item = {"address": ds.address, "obis": str(ob) if ob else None,
                "values": [{"value": v, "unit": u} for v, u in ds.values]}
        q = quantity(ds.value, ds.unit) if ds.values else None
        if q is not None:
            item["reading"] = {"value": q[0], "unit": q[1]}
        out.append(item)
    return out


def _describe(msg):
    d = {"type": type(msg).__name__, "hex": msg.to_bytes().hex()}
    k = msg.kind
    if k == "request":
        d["address"] = msg.address
    elif k == "identification":
        d.update(manufacturer=msg.manufacturer, baud_char=msg.baud_char, mode=msg.mode,
                 baud=msg.baud, ident=msg.ident, model=msg.model, enhanced=msg.enhanced)
    elif k == "option":
        d.update(protocol=msg.protocol, baud_char=msg.baud_char, baud=msg.baud,
                 mode="programming" if msg.programming else "readout")
    elif k == "block":
        d.update(partial=msg.partial, text=msg.data, error=msg.error)
        if msg.data.startswith("P.98"):
            try:
                d["events"] = [{"ts": e.ts, "code": e.code} for e in parse_logbook(msg.data)]
            except IecProtocolError as e:
                d["events_error"] = str(e)
        elif msg.data.startswith("P.0"):
            try:
                d["profile"] = [[{"ts": r.ts, "values": r.values, "status": r.status}
                                 for r in sec.profile_rows()] for sec in parse_profile(msg.data)]
            except IecProtocolError as e:
                d["profile_error"] = str(e)
        elif msg.error is None:
            d["datasets"] = _datasets(msg.data)
    elif k == "command":
        d.update(command=msg.name, data=msg.data, partial=msg.partial)
    return d


def dissect(data, **keys):
    f = Framer("meter")
    f.ack_may_be_option = False
    f.feed(bytes(data))
    messages = []
    errors = []
    while True:
        try:
            msg = f.next_frame()
        except IecProtocolError as e:
            errors.append({"error": str(e), "raw": getattr(e, "raw", "")})
            continue
        if msg is None:
            break
        messages.append(_describe(msg))
    return {"protocol": "iec62056-21", "messages": messages, "errors": errors,
            "skipped_bytes": f.discarded, "unframed_tail": f._buf.hex()}
