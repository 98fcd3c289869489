"""Readable forms of COSEM values for ``wum dissect`` (the DLMS dissector's
presentation layer): A-XDR data with visible octet strings shown as text and
COSEM date-times/dates/times field by field, attribute descriptors with their
selective access (range and entry descriptors, Blue Book class 7 attribute
2), system titles, the security control byte and the DataNotification APDU.

Portable. Owns JSON-ready dicts only; never raises on bad values (a shape it
does not recognise is shown raw). Must not know HDLC, keys or sessions.
"""

from drivers import DriverError
from drivers.dlms import axdr, xdlms

NS = None       # JSON null: "not specified" (0xFF, 0xFFFF, 0x8000) in a date-time
_MONTHS = {0xFD: "dst-end", 0xFE: "dst-begin"}          # Blue Book 4.1.6.1
_DAYS = {0xFD: "second-last", 0xFE: "last"}
_STATUS = ((0x01, "invalid"), (0x02, "doubtful"), (0x04, "different-base"),
           (0x08, "invalid-status"), (0x80, "dst"))


def printable(raw):
    """The text of ``raw`` if every byte is printable ASCII, else None."""
    if not raw or any(b < 0x20 or b > 0x7E for b in raw):
        return None
    return "".join(chr(b) for b in raw)


def rfc3339(ts):
    d = axdr.DateTime.from_epoch(ts)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (d.year, d.month, d.day, d.hour, d.minute,
                                               d.second)


def _field(v, special=None):
    if v == 0xFF:
        return NS
    if special and v in special:
        return special[v]
    return v


def looks_like_date_time(raw):
    """A 12-byte octet string whose fields are all in range (Blue Book
    4.1.6.1): how meters send clock values, profile timestamps and range
    bounds when they do not use the date-time tag."""
    if len(raw) != 12:
        return False
    year = (raw[0] << 8) | raw[1]
    dev = (raw[9] << 8) | raw[10]
    dev = dev - 0x10000 if dev & 0x8000 and dev != 0x8000 else dev
    return ((1900 <= year <= 2200 or year == 0xFFFF) and (1 <= raw[2] <= 12 or raw[2] >= 0xFD)
            and (1 <= raw[3] <= 31 or raw[3] >= 0xFD) and (1 <= raw[4] <= 7 or raw[4] == 0xFF)
            and (raw[5] <= 23 or raw[5] == 0xFF) and (raw[6] <= 59 or raw[6] == 0xFF)
            and (raw[7] <= 59 or raw[7] == 0xFF) and (raw[8] <= 99 or raw[8] == 0xFF)
            and (dev == 0x8000 or -720 <= dev <= 720))


def _date_part(raw):
    year = (raw[0] << 8) | raw[1]
    return {"year": NS if year == 0xFFFF else year, "month": _field(raw[2], _MONTHS),
            "day": _field(raw[3], _DAYS), "weekday": _field(raw[4])}


def _time_part(raw):
    return {"hour": _field(raw[0]), "minute": _field(raw[1]), "second": _field(raw[2]),
            "hundredths": _field(raw[3])}


def _two(v, fmt="%02d"):
    return "??" if v is None or isinstance(v, str) else fmt % v


def date_time_dict(raw):
    """COSEM date-time, field by field; ``null`` where not specified."""
    raw = bytes(raw)
    out = _date_part(raw[:5])
    out.update(_time_part(raw[5:9]))
    dev = (raw[9] << 8) | raw[10]
    out["deviation"] = NS if dev == axdr.NOT_SPECIFIED else (dev - 0x10000 if dev & 0x8000
                                                             else dev)
    st = raw[11]
    out["clock_status"] = NS if st == 0xFF else {
        "value": st, "flags": [name for bit, name in _STATUS if st & bit]}
    y = out["year"]
    text = "%s-%s-%s %s:%s:%s.%s" % ("????" if y is None else "%04d" % y,
                                     _two(out["month"]), _two(out["day"]), _two(out["hour"]),
                                     _two(out["minute"]), _two(out["second"]),
                                     _two(out["hundredths"]))
    if out["deviation"] is not None:
        off = -out["deviation"]     # classic DLMS sign: UTC = local + deviation
        text += " UTC%s%02d:%02d" % ("+" if off >= 0 else "-", abs(off) // 60, abs(off) % 60)
    if out["clock_status"] is not None:
        text += " status 0x%02x" % st
    out["text"] = text
    try:
        out["utc"] = rfc3339(axdr.DateTime.from_bytes(raw).to_epoch())
    except DriverError:
        pass
    return out


def date_dict(raw):
    return _date_part(bytes(raw))


def time_dict(raw):
    return _time_part(bytes(raw))


def data_dict(v):
    """One Data value ``(tag, value)`` (or an int data-access-result)."""
    if isinstance(v, int):
        return {"data-access-result": xdlms.DATA_ACCESS_RESULTS.get(v, v)}
    tag, value = v
    if tag in (axdr.ARRAY, axdr.STRUCTURE):
        return {axdr.NAMES[tag]: [data_dict(x) for x in value]}
    if tag == axdr.COMPACT_ARRAY:
        return {"compact-array": [data_dict(x) for x in value[1]]}
    if tag == axdr.BIT_STRING:
        return {"bit-string": [value[0], value[1].hex()]}
    if not isinstance(value, bytes):
        return {axdr.NAMES.get(tag, str(tag)): value}
    out = {axdr.NAMES.get(tag, str(tag)): value.hex()}
    if tag == axdr.OCTET_STRING:
        if len(value) == 12:
            try:        # "date-time": epoch seconds, as the dissector always gave
                out["date-time"] = axdr.DateTime.from_bytes(value).to_epoch()
            except DriverError:
                pass
        if looks_like_date_time(value):
            out["cosem-date-time"] = date_time_dict(value)
        else:
            text = printable(value)
            if text is not None:
                out["text"] = text
    elif tag == axdr.DATE_TIME:
        out["cosem-date-time"] = date_time_dict(value)
    elif tag == axdr.DATE:
        out["cosem-date"] = date_dict(value)
    elif tag == axdr.TIME:
        out["cosem-time"] = time_dict(value)
    return out


def _obis(raw):
    return ".".join(str(b) for b in raw)


def _capture_object(v):
    """structure {class-id, logical-name, attribute-index, data-index}."""
    tag, items = v
    if tag != axdr.STRUCTURE or len(items) != 4 or items[1][0] != axdr.OCTET_STRING \
            or len(items[1][1]) != 6:
        raise ValueError("not a capture object definition")
    return {"class_id": items[0][1], "obis": _obis(items[1][1]), "attribute": items[2][1],
            "data_index": items[3][1]}


def range_descriptor(v):
    """Selector 1 (Blue Book 4.3.6, profile generic buffer): restricting
    object, from, to, selected values."""
    tag, items = v
    if tag != axdr.STRUCTURE or len(items) != 4 or items[3][0] != axdr.ARRAY:
        raise ValueError("not a range descriptor")
    return {"restricting_object": _capture_object(items[0]), "from": data_dict(items[1]),
            "to": data_dict(items[2]),
            "selected_values": [_capture_object(x) for x in items[3][1]]}


def entry_descriptor(v):
    """Selector 2: from/to entry, from/to selected value."""
    tag, items = v
    if tag != axdr.STRUCTURE or len(items) != 4:
        raise ValueError("not an entry descriptor")
    return {"from_entry": items[0][1], "to_entry": items[1][1],
            "from_selected_value": items[2][1], "to_selected_value": items[3][1]}


_SELECTORS = {1: ("range_descriptor", range_descriptor), 2: ("entry_descriptor", entry_descriptor)}


def descriptor_dict(d):
    if not isinstance(d, xdlms.Descriptor):
        return repr(d)
    out = {"class_id": d.class_id, "obis": _obis(d.obis), "attribute": d.attribute}
    if d.access is not None:
        selector, value = d.access
        out["access_selector"] = selector
        out["access"] = data_dict(value)
        named = _SELECTORS.get(selector)
        if named is not None and d.class_id == 7:
            try:
                out[named[0]] = named[1](value)
            except (ValueError, TypeError, IndexError) as e:
                out[named[0]] = {"error": str(e)}
    return out


def title_dict(raw):
    """A system title (Green Book 4.3.4): 8 octets, the first three the
    manufacturer's FLAG id, the rest manufacturer specific (often a serial)."""
    raw = bytes(raw)
    out = {"system_title": raw.hex()}
    maker = printable(raw[:3])
    if len(raw) == 8 and maker is not None and maker.isalpha():
        out["manufacturer"] = maker
        out["device"] = raw[3:].hex()
    text = printable(raw)
    if text is not None:
        out["text"] = text
    return out


def security_dict(sc):
    """Security control byte (Green Book 9.2.7.2.3)."""
    return {"suite": sc & 0x0F, "authenticated": bool(sc & 0x10), "encrypted": bool(sc & 0x20),
            "broadcast_key": bool(sc & 0x40), "compressed": bool(sc & 0x80)}


DATA_NOTIFICATION = 0x0F


def data_notification(raw):
    """DataNotification (Green Book 9.3.10): 0F, long-invoke-id-and-priority
    (4), date-time (octet string: 00 absent or 0C + 12 bytes), body (Data)."""
    raw = bytes(raw)
    d = {"type": "DataNotification", "hex": raw.hex()}
    try:
        if len(raw) < 6 or raw[0] != DATA_NOTIFICATION:
            raise ValueError("not a DataNotification")
        d["long_invoke_id"] = int.from_bytes(raw[1:5], "big")
        pos = 6
        if raw[5]:
            if raw[5] != 12 or len(raw) < 18:
                raise ValueError("bad DataNotification date-time")
            d["date_time"] = {"octet-string": raw[6:18].hex(),
                              "cosem-date-time": date_time_dict(raw[6:18])}
            pos = 18
        d["body"] = data_dict(axdr.decode(raw[pos:]))
    except (ValueError, DriverError) as e:
        d["error"] = str(e)
    return d
