"""Layered decode of captured IEC 62056-21 bytes (for ``wum dissect``).

Portable. Owns turning a capture (both directions mixed, any garbage) into a
JSON-able dict: each message with its fields, data sets with OBIS codes and
readings, and the errors met on the way. Never raises on any input.

Checks: every block and command message carries ``"checks": [{"name":
"bcc", "ok", "expected", "found"}]`` (§6.3.14, the byte as hex). One whose
BCC is wrong is still decoded and listed in ``messages`` (with its original
``hex``), and reported in ``errors`` with its index, as before.

A capture is framed twice, as a master's and as a meter's stream (they
differ on a '/' inside a block, which real meters send in units such as
``Imp/kWh``, and on a lone ACK); the reading that explains more bytes wins.
"""

from drivers.iec62056_21.dataset import DataSet, Readout, obis_of, parse_line, quantity
from drivers.iec62056_21.errors import BccError, IecProtocolError
from drivers.iec62056_21.framer import Framer
from drivers.iec62056_21.frames import STX, Block, Command, bcc
from drivers.iec62056_21.profile import parse_logbook, parse_profile


def _item(ds):
    ob = obis_of(ds.address)
    item = {"address": ds.address, "obis": str(ob) if ob else None,
            "values": [{"value": v, "unit": u} for v, u in ds.values]}
    q = quantity(ds.value, ds.unit) if ds.values else None
    if q is not None:
        item["reading"] = {"value": q[0], "unit": q[1]}
    return item


def _lenient_line(line):
    """Data sets of a line the §6.4 grammar refuses (a '/' in a unit, as a
    real EMH meter sends 'Imp/kWh'): the address up to '(', then each value
    between parentheses. None if even that does not fit."""
    sets, i, n = [], 0, len(line)
    while i < n:
        j = line.find("(", i)
        if j < 0:
            return None
        address, values = line[i:j], []
        while j < n and line[j] == "(":
            k = line.find(")", j + 1)
            if k < 0:
                return None
            value, star, unit = line[j + 1:k].partition("*")
            values.append((value, unit if star else None))
            j = k + 1
        sets.append(DataSet(address, values))
        i = j
    return sets


def _datasets(text):
    try:
        return [_item(ds) for ds in Readout.from_text(text).datasets()]
    except IecProtocolError:
        pass
    out = []                # line by line: one odd data set must not hide the others
    body = text[:-3] if text == "!\r\n" or text.endswith("\r\n!\r\n") else text
    for line in body.split("\r\n"):
        if not line:
            continue
        try:
            sets, note = parse_line(line), None
        except IecProtocolError as e:
            sets, note = _lenient_line(line), str(e)
        if sets is None:
            out.append({"line": line, "error": note})
            continue
        for ds in sets:
            item = _item(ds)
            if note is not None:
                item["nonstandard"] = note
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
    if k in ("block", "command"):
        check = "%02x" % msg.to_bytes()[-1]
        d["checks"] = [{"name": "bcc", "ok": True, "expected": check, "found": check}]
    return d


def _flagged(e):
    """The message a BccError was raised for, decoded as if its BCC were
    right and flagged; None if it is not decodable even then."""
    try:
        raw = bytes.fromhex(getattr(e, "raw", "") or "")
    except ValueError:
        return None
    if len(raw) < 3:
        return None
    expected = bcc(raw[1:-1])
    try:
        msg = (Block if raw[0] == STX else Command).from_bytes(raw[:-1] + bytes((expected,)))
    except IecProtocolError:
        return None
    d = _describe(msg)
    d["hex"] = raw.hex()
    d["checks"] = [{"name": "bcc", "ok": False, "expected": "%02x" % expected,
                    "found": "%02x" % raw[-1]}]
    return d


def _frame(data, role):
    f = Framer(role)
    f.ack_may_be_option = False
    f.feed(data)
    messages, errors = [], []
    while True:
        try:
            msg = f.next_frame()
        except BccError as e:
            d = _flagged(e)
            errors.append({"error": str(e), "raw": getattr(e, "raw", "")})
            if d is not None:
                errors[-1]["message"] = len(messages)
                messages.append(d)
            continue
        except IecProtocolError as e:
            errors.append({"error": str(e), "raw": getattr(e, "raw", "")})
            continue
        if msg is None:
            break
        messages.append(_describe(msg))
    explained = sum(len(m["hex"]) for m in messages)
    return explained, messages, errors, f


def dissect(data, **keys):
    data = bytes(data)
    best = None
    for role in ("meter", "client"):
        run = _frame(data, role)
        if best is None or run[0] > best[0]:
            best = run
    _, messages, errors, f = best
    return {"protocol": "iec62056-21", "messages": messages, "errors": errors,
            "skipped_bytes": f.discarded, "unframed_tail": f._buf.hex()}
