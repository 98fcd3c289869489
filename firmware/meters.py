"""Reading meters on a board: the IO loops around the portable protocol
cores (DLMS/COSEM over HDLC: ``drivers.dlms.client``; Modbus RTU:
``drivers.modbus.rtu``) over a ``firmware.rs485.Rs485`` port.

Portable. Owns, per meter, one register read: the request/response loop
with deadlines and retries (the core decides what to retransmit), the
meter's id (``drivers.meter.meter_id``: serial, then logical device name,
then the ``bus:protocol:address`` fallback) and the values in OBIS terms.
A DLMS read is one GET-with-list (clock, registers, scaler_units, identity),
split to the meter's PDU size, as ``drivers.dlms.io`` does on Linux; a
Modbus read follows a device profile (the JSON of ``drivers/modbus/
profiles``, decoded here with the same rules as ``drivers.modbus.profile``,
which is CPython-only). Must not know batches, archives or uplinks.

``read_meter(port, spec, bus="rs485") -> (meter_id, values)`` where ``spec``
is a meter entry of the board's config (docs/firmware.md) and ``values``
maps OBIS text to int/float. Errors are ``drivers.DriverError``s.
"""
# ruff: noqa: B905 (MicroPython's zip() has no strict= argument)

import struct

from drivers import MeterTimeout, RemoteProtocolError
from drivers.meter import meter_id, scaled

TYPES = {"u16": (1, ">H"), "s16": (1, ">h"), "u32": (2, ">I"), "s32": (2, ">i"),
         "u64": (4, ">Q"), "s64": (4, ">q"), "float32": (2, ">f")}
UNIT_EXPONENT = {("kWh", "Wh"): 3, ("kvarh", "varh"): 3, ("kW", "W"): 3,
                 ("kvar", "var"): 3, ("MWh", "Wh"): 6}


def read_meter(port, spec, bus="rs485", profiles=None):
    proto = spec["protocol"]
    fallback = "%s:%s:%s" % (bus, proto, spec["address"])
    if proto == "dlms":
        serial, name, values = read_dlms(port, spec)
        return meter_id(serial, name, fallback), values
    if proto == "modbus":
        prof = (profiles or {}).get(spec.get("profile", "generic"))
        if prof is None:
            prof = load_profile(spec.get("profile", "generic"))
        serial, values = read_modbus(port, spec, prof)
        return meter_id(serial, "", fallback), values
    raise RemoteProtocolError("protocol %s is not in this firmware" % proto, protocol=proto)


# -- DLMS/COSEM ------------------------------------------------------------------
def _exchange(port, assoc, data, timeout_ms):
    """Send, then feed what arrives to the core until it yields an event."""
    from drivers.dlms import client as core
    port.send(data)
    while True:
        ev = assoc.next_event()
        if ev is core.NEED_DATA:
            chunk = port.recv(timeout_ms)
            if chunk:
                assoc.receive_data(chunk)
            else:
                port.send(assoc.timeout())      # raises MeterTimeout after the retries
            continue
        if isinstance(ev, core.Send):
            port.send(ev.data)
            continue
        if isinstance(ev, core.Corrupt):
            continue
        return ev


def _get(port, assoc, descs, timeout_ms):
    from drivers.dlms import xdlms
    kind = xdlms.NORMAL if len(descs) == 1 else xdlms.WITH_LIST
    req = xdlms.GetRequest(kind, descs)
    if len(descs) > 1 and len(req.to_bytes()) + 32 > assoc.max_pdu_tx():
        half = len(descs) // 2
        return _get(port, assoc, descs[:half], timeout_ms) + \
            _get(port, assoc, descs[half:], timeout_ms)
    resp = _exchange(port, assoc, assoc.request(req), timeout_ms).apdu
    if not isinstance(resp, xdlms.GetResponse) or len(resp.results) != len(descs):
        raise RemoteProtocolError("GET answered with %r" % (resp,))
    return resp.results


def _text(data):
    if isinstance(data, int):
        return ""
    value = data[1]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode()
    return "" if value is None else str(value)


def read_dlms(port, spec):
    """-> (serial, logical device name, {obis: value}) of one DLMS meter."""
    from drivers.dlms import client as core
    from drivers.dlms import cosem, hdlc, xdlms
    timeout = int(spec.get("timeout_ms", 1500))
    info = int(spec.get("max_info", 128))
    pw = spec.get("password")
    assoc = core.Association(int(spec.get("client", 16)), int(spec.get("logical_device", 1)),
                             int(spec["address"]), spec.get("auth", "none"),
                             pw.encode() if pw else None, None,
                             hdlc.LinkParameters(info, info, 1, 1),
                             retries=int(spec.get("retries", 3)))
    codes = list(spec.get("registers") or cosem.DEFAULT_REGISTERS)

    def desc(obis, attr=2):
        return xdlms.Descriptor(cosem.register_class(obis), cosem.obis_bytes(obis), attr)

    _exchange(port, assoc, assoc.connect(), timeout)
    try:
        ev = _exchange(port, assoc, assoc.associate(), timeout)
        if isinstance(ev, core.Associated) and ev.challenge is not None:
            raise RemoteProtocolError("HLS is not in this firmware", meter=spec["address"])
        scaled_codes = [o for o in codes if cosem.has_scaler(cosem.register_class(o))]
        descs = [desc(o) for o in codes] + [desc(o, cosem.SCALER_UNIT) for o in scaled_codes]
        descs += [xdlms.Descriptor(cosem.DATA, cosem.obis_bytes(o), 2)
                  for o in (cosem.SERIAL_NUMBER, cosem.LOGICAL_DEVICE_NAME)]
        res = _get(port, assoc, descs, timeout)
    finally:
        if assoc.state not in (core.IDLE, core.LINKING, core.RELEASING):
            assoc.retries = 1
            try:
                _exchange(port, assoc, assoc.release(), timeout)
            except MeterTimeout:
                pass
    n = len(codes)
    scalers = {}
    for o, r in zip(scaled_codes, res[n:n + len(scaled_codes)]):
        if not isinstance(r, int):
            scalers[o] = cosem.scaler_unit(r)[0]
    values = {}
    for o, r in zip(codes, res[:n]):
        if not isinstance(r, int):
            values[o] = cosem.reading_value(r, scalers.get(o, 0))
    return _text(res[-2]), _text(res[-1]), values


# -- Modbus RTU ---------------------------------------------------------------------
def load_profile(name):
    """A Modbus device profile (JSON) from the bundle's drivers/modbus/profiles/."""
    import json
    base = __file__.rsplit("/", 2)[0] if "/" in __file__ else "."
    with open(base + "/drivers/modbus/profiles/%s.json" % name) as f:
        return json.load(f)


def _exponent(reg):
    unit = reg.get("unit", "")
    raw = reg.get("raw_unit") or unit
    ratio = 0 if raw == unit else UNIT_EXPONENT[(raw, unit)]
    return ratio - int(reg.get("decimals", 0))


def decode(reg, words, word_order="big"):
    """Register words -> value, as drivers.modbus.profile.Register.decode."""
    if word_order == "little":
        words = list(reversed(words))
    raw = struct.unpack(TYPES[reg["type"]][1], struct.pack(">%dH" % len(words), *words))[0]
    if reg["type"] == "float32":
        if raw != raw or raw in (float("inf"), float("-inf")):
            raise RemoteProtocolError("register %s holds %r" % (reg.get("obis"), raw))
        mantissa = round(raw * 10 ** int(reg.get("decimals", 0)))
    else:
        mantissa = raw
    return scaled(mantissa, _exponent(reg))


def plan(profile, regs):
    """Few contiguous reads covering ``regs`` (same table, within
    max_registers, inside a declared space or fully mapped)."""
    limit = int(profile.get("max_registers", 125))
    spaces = profile.get("spaces", {})
    mapped = {}
    for r in profile["registers"] + ([profile["identity"]] if profile.get("identity") else []):
        for a in range(r["address"], r["address"] + TYPES[r["type"]][0]):
            mapped[(r["table"], a)] = True

    def readable(table, start, end):
        for lo, hi in spaces.get(table, []):
            if lo <= start and end <= hi + 1:
                return True
        for a in range(start, end):
            if (table, a) not in mapped:
                return False
        return True

    blocks = []
    for r in sorted(regs, key=lambda r: (r["table"], r["address"])):
        end = r["address"] + TYPES[r["type"]][0]
        last = blocks[-1] if blocks else None
        if last is not None and last[0] == r["table"]:
            new_end = max(last[1] + last[2], end)
            if new_end - last[1] <= limit and readable(r["table"], last[1], new_end):
                last[2] = new_end - last[1]
                last[3].append(r)
                continue
        blocks.append([r["table"], r["address"], end - r["address"], [r]])
    return blocks


def _modbus_call(port, unit, table, start, count, timeout_ms, retries):
    from drivers.modbus import rtu
    fn = rtu.READ_INPUT if table == "input" else rtu.READ_HOLDING
    req = rtu.read_request(unit, fn, start, count).to_bytes()
    for _ in range(max(1, retries)):
        framer = rtu.Framer(rtu.RESPONSE)
        port.send(req)
        while True:
            chunk = port.recv(timeout_ms)
            if not chunk:
                break
            framer.receive_data(chunk)
            for f in framer.frames():
                if f.address != unit:
                    continue                # another station on the bus
                if f.is_exception:
                    from drivers import MeterRefused
                    raise MeterRefused("unit %d exception %d" % (unit, f.exception_code),
                                       meter=str(unit), code=f.exception_code)
                words = f.registers()
                if len(words) != count:
                    raise RemoteProtocolError("unit %d sent %d registers" % (unit, len(words)))
                return words
    raise MeterTimeout("unit %d: no answer" % unit, meter=str(unit))


def read_modbus(port, spec, profile):
    """-> (serial, {obis: value}) of one Modbus unit, through ``profile``."""
    unit = int(spec["address"])
    order = profile.get("word_order", "big")
    want = spec.get("registers")
    regs = [r for r in profile["registers"] if want is None or r["obis"] in want]
    ident = profile.get("identity")
    if ident:
        ident = dict(ident, obis="0.0.96.1.0.255", unit="")
        regs = regs + [ident]
    values = {}
    serial = ""
    for table, start, count, members in plan(profile, regs):
        words = _modbus_call(port, unit, table, start, count, int(spec.get("timeout_ms", 500)),
                             int(spec.get("retries", 3)))
        for r in members:
            w = words[r["address"] - start:r["address"] - start + TYPES[r["type"]][0]]
            v = decode(r, w, order)
            if r is ident:
                serial = profile.get("serial_format", "%d") % int(v)
            else:
                values[r["obis"]] = v
    return serial, values
