"""Field commands of ``wum``: ``scan``, ``read`` and ``dissect``.

Owns: the command-line surface a technician uses at a meter cabinet, and the
exact JSON of ``wum read --json`` (a contract)::

    {"meter": {"protocol": ..., "address": ..., "id": ...},
     "registers": [{"obis": "1.0.1.8.0.255", "value": <number>, "unit": "Wh",
                    "ts": "<RFC 3339 UTC>"}],
     "profile": [{"ts": "<RFC 3339 UTC>", "values": {"<obis>": <number>}}],
     "skipped": [{"obis": "0.0.96.1.0.255", "reason": "illegal_data_address"}]}

``skipped`` (added by issue 9; the other keys are unchanged): registers the
device profile marks optional that this meter refused, left out of
``registers``. A meter without a serial number gets the fallback id of
docs/INTERFACES.md, ``<port>:<protocol>:<address>`` (the port standing in
for the agent's bus name).

Dispatches to ``drivers.<protocol>.open_client / scan / dissect``; must not
know any protocol's internals.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from types import ModuleType
from typing import Any

from agent import AgentError
from agent.clock import clock_from_env
from agent.timefmt import TimeFormatError, parse_time, rfc3339

PACKAGES = {"dlms": "drivers.dlms", "iec62056-21": "drivers.iec62056_21",
            "modbus": "drivers.modbus"}
DISSECTORS = {"hdlc": "dlms", "apdu": "dlms", "iec62056-21": "iec62056-21",
              "modbus-rtu": "modbus"}


class FieldError(AgentError):
    """A usage problem the technician can fix (bad option, missing driver)."""


def driver(protocol: str, need: str = "open_client") -> ModuleType:
    try:
        name = PACKAGES[protocol]
    except KeyError:
        raise FieldError("unknown protocol %r (known: %s)"
                         % (protocol, ", ".join(PACKAGES))) from None
    try:
        mod = importlib.import_module(name)
    except ImportError as e:
        raise FieldError("the %s driver is not available: %s" % (protocol, e)) from e
    if not hasattr(mod, need):
        raise FieldError("the %s driver has no %s() yet" % (protocol, need))
    return mod


def parse_addresses(spec: str | None) -> list[str] | None:
    """``1-16,20`` -> ["1", ..., "16", "20"]; None keeps the driver's default."""
    if not spec:
        return None
    out: list[str] = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        if hi and lo.isdigit() and hi.isdigit():
            out.extend(str(a) for a in range(int(lo), int(hi) + 1))
        elif part.strip():
            out.append(part.strip())
    return out


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"clock": clock_from_env().now}
    for name in ("profile", "auth", "password", "client", "logical_device", "timeout",
                 "retries", "system_title"):
        value = getattr(args, name, None)
        if value is not None:
            opts[name] = value
    for name in ("ek", "ak"):
        value = getattr(args, name, None)
        if value is not None:
            try:
                opts[name] = bytes.fromhex(value)
            except ValueError:
                raise FieldError("--%s must be hex" % name) from None
    return opts


def read_document(args: argparse.Namespace) -> dict[str, Any]:
    """Open, identify, read; the ``wum read --json`` document."""
    drv = driver(args.protocol)
    client = drv.open_client(args.port, args.address, args.baud, **client_options(args))
    try:
        ident = client.identify()
        obis = [o.strip() for o in args.registers.split(",")] if args.registers else None
        registers = client.read_registers(obis)
        rows = []
        if args.load_profile:
            now = clock_from_env().now()
            start = parse_time(args.start) if args.start else int(now) - 86400
            end = parse_time(args.end) if args.end else int(now)
            rows = client.read_load_profile(start, end)
    finally:
        client.close()
    skipped = getattr(client, "skipped", None)      # optional registers refused
    if not isinstance(skipped, list):
        skipped = []
    return {
        "meter": {"protocol": args.protocol, "address": str(args.address),
                  "id": ident.id or fallback_id(args.port, args.protocol, args.address)},
        "registers": [{"obis": r.obis, "value": r.value, "unit": r.unit, "ts": rfc3339(r.ts)}
                      for r in registers],
        "profile": [{"ts": rfc3339(row.ts), "values": dict(row.values)} for row in rows],
        "skipped": [{"obis": obis, "reason": reason} for obis, reason in skipped],
    }


def fallback_id(bus: str, protocol: str, address: object) -> str:
    """The id of a meter without a serial number (docs/INTERFACES.md)."""
    return "%s:%s:%s" % (bus, protocol, address)


def cmd_read(args: argparse.Namespace) -> int:
    doc = read_document(args)
    if args.json:
        print(json.dumps(doc))
        return 0
    m = doc["meter"]
    print("%s meter %s at %s" % (m["protocol"], m["id"] or "?", m["address"]))
    for r in doc["registers"]:
        print("  %-18s %16s %-5s %s" % (r["obis"], r["value"], r["unit"], r["ts"]))
    for row in doc["profile"]:
        print("  %s %s" % (row["ts"], " ".join("%s=%s" % kv for kv in row["values"].items())))
    for s in doc["skipped"]:
        print("  %-18s skipped: refused (%s)" % (s["obis"], s["reason"]))
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    protocols = list(PACKAGES) if args.protocol == "auto" else [args.protocol]
    found: list[dict[str, Any]] = []
    for proto in protocols:
        try:
            drv = driver(proto, "scan")
        except FieldError:
            if args.protocol != "auto":
                raise
            continue
        kw: dict[str, Any] = {}
        if args.timeout is not None:
            kw["timeout"] = args.timeout
        try:
            idents = drv.scan(args.port, args.baud, parse_addresses(args.addresses), **kw)
        except (ImportError, NotImplementedError) as e:
            if args.protocol != "auto":
                raise FieldError("the %s driver cannot scan: %s" % (proto, e)) from e
            print("wum scan: skipping %s: %s" % (proto, e), file=sys.stderr)
            continue
        for ident in idents:
            d = ident.as_dict()
            d["id"] = d["id"] or fallback_id(args.port, proto, d["address"])
            found.append(d)
    if args.json:
        print(json.dumps(found))
    else:
        for f in found:
            print("%-12s %-6s %-16s %s %s" % (f["protocol"], f["address"], f["id"] or "?",
                                           f["manufacturer"], f["model"]))
        print("%d meter(s) found" % len(found))
    return 0


def _iec_like(data: bytes) -> bool:
    """IEC 62056-21 start characters with the shape of a message behind them
    (a Modbus frame for unit 1, 2 or 6 starts with the same byte)."""
    first = data[:1]
    if first == b"/" or data.endswith(b"\r\n"):
        return True
    if first == b"\x06":
        return len(data) == 1 or data[1:2].isdigit()
    if first == b"\x01":
        return data[1:2] in (b"P", b"W", b"R", b"B", b"E")
    return first == b"\x02" and data[-2:-1] in (b"\x03", b"\x04")


def guess_layer(data: bytes) -> str:
    """Which dissector fits: HDLC flag, a good Modbus CRC, IEC start characters,
    an xDLMS APDU tag; else Modbus RTU (whose dissector explains garbage)."""
    if data[:1] == b"\x7e":
        return "hdlc"
    rtu = importlib.import_module("drivers.modbus.rtu")   # dynamic: drivers stay untyped
    if len(data) >= 4 and rtu.crc16(data[:-2]) == int.from_bytes(data[-2:], "little"):
        return "modbus-rtu"
    if _iec_like(data):
        return "iec62056-21"
    return "apdu" if data[:1] in (b"\x60", b"\x61", b"\xc0", b"\xc4", b"\xdb") else "modbus-rtu"


EXIT_CHECK_FAILED = 3
DISSECT_EPILOG = """\
Every check a layer carries (HDLC HCS/FCS and length, the GCM tag of an
APDU decrypted with --ek/--ak, IEC 62056-21 BCC, Modbus CRC) is shown as
"checks": [{"name", "ok", "expected", "found"}] in that layer; a frame that
fails one is still decoded. "summary" counts the checks and lists the failed
ones with where they are.

exit status:
  0  decoded, every check passed (or there was none)
  3  decoded, but at least one check failed
  2  usage error (not hex, unknown option)
"""


def check_summary(doc: Any) -> dict[str, Any]:
    """{"checks": n, "failed": m, "failures": [{"where", "name", "expected",
    "found", "ok"}]} over every "checks" list in a dissector's document."""
    failures: list[dict[str, Any]] = []
    count = 0

    def walk(node: Any, where: str) -> None:
        nonlocal count
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "checks" and isinstance(value, list):
                    count += len(value)
                    failures.extend(dict(c, where=where) for c in value if not c.get("ok"))
                else:
                    walk(value, "%s.%s" % (where, key) if where else key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, "%s[%d]" % (where, i))

    walk(doc, "")
    return {"checks": count, "failed": len(failures), "failures": failures}


def cmd_dissect(args: argparse.Namespace) -> int:
    try:
        data = bytes.fromhex("".join(args.hex).replace(":", "").replace(" ", ""))
    except ValueError:
        raise FieldError("not hex: %r" % " ".join(args.hex)) from None
    layer = guess_layer(data) if args.protocol == "auto" else args.protocol
    drv = driver(DISSECTORS[layer], "dissect")
    keys: dict[str, Any] = {}
    for name in ("ek", "ak", "system_title"):
        value = getattr(args, name, None)
        if value:
            try:
                keys[name] = bytes.fromhex(value)
            except ValueError:
                raise FieldError("--%s must be hex" % name.replace("_", "-")) from None
    doc = drv.dissect(data, **keys)
    summary = doc["summary"] = check_summary(doc)
    if args.json:
        print(json.dumps(doc, default=str))
    else:
        print(json.dumps(doc, indent=2, default=str))
        print("checks: %d passed, %d failed" % (summary["checks"] - summary["failed"],
                                                summary["failed"]))
        for f in summary["failures"]:
            print("FAILED %s at %s: expected %s, found %s" % (f["name"], f["where"],
                                                              f["expected"], f["found"]))
    return EXIT_CHECK_FAILED if summary["failed"] else 0


def _guarded(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        driver_error: type[Exception] = importlib.import_module("drivers").DriverError
        try:
            rc: int = fn(args)
            return rc
        except (FieldError, TimeFormatError) as e:
            print("wum %s: error: %s" % (args.command, e), file=sys.stderr)
            return 2
        except driver_error as e:
            print("wum %s: %s: %s" % (args.command, type(e).__name__, e), file=sys.stderr)
            return 1
    return run


def register(subparsers: Any) -> None:
    protos = list(PACKAGES)
    s = subparsers.add_parser("scan", help="find the meters on a bus")
    s.add_argument("--port", required=True, help="serial URL (/dev/ttyUSB0, /dev/pts/N, ...)")
    s.add_argument("--protocol", default="auto", choices=protos + ["auto"])
    s.add_argument("--baud", type=int, default=None)
    s.add_argument("--addresses", default=None, help="e.g. 1-16,20 (default: the protocol's)")
    s.add_argument("--timeout", type=float, default=None, help="seconds per address")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_guarded(cmd_scan))

    r = subparsers.add_parser("read", help="read one meter's registers (and load profile)")
    r.add_argument("--port", required=True)
    r.add_argument("--protocol", required=True, choices=protos)
    r.add_argument("--address", required=True)
    r.add_argument("--baud", type=int, default=None)
    r.add_argument("--profile", default=None, help="device profile (Modbus: vendor-model)")
    r.add_argument("--auth", default=None, choices=["none", "lls", "hls"])
    r.add_argument("--password", default=None)
    r.add_argument("--ek", default=None, help="DLMS encryption key, hex")
    r.add_argument("--ak", default=None, help="DLMS authentication key, hex")
    r.add_argument("--client", type=int, default=None, help="DLMS client SAP")
    r.add_argument("--logical-device", dest="logical_device", type=int, default=None)
    r.add_argument("--registers", default=None, help="OBIS codes, comma-separated")
    r.add_argument("--load-profile", dest="load_profile", action="store_true")
    r.add_argument("--from", dest="start", default=None, help="epoch s or RFC 3339")
    r.add_argument("--to", dest="end", default=None, help="epoch s or RFC 3339")
    r.add_argument("--timeout", type=float, default=None)
    r.add_argument("--retries", type=int, default=None)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_guarded(cmd_read))

    d = subparsers.add_parser("dissect", help="decode captured bytes layer by layer",
                              description="Decode captured bytes layer by layer and check "
                              "every checksum they carry.", epilog=DISSECT_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--protocol", default="auto", choices=["auto"] + list(DISSECTORS))
    d.add_argument("--ek", default=None, help="DLMS global encryption key, hex")
    d.add_argument("--ak", default=None, help="DLMS authentication key, hex")
    d.add_argument("--system-title", dest="system_title", default=None,
                   help="DLMS sender system title, hex (default: the AP titles of the "
                   "capture's AARQ/AARE)")
    d.add_argument("--json", action="store_true")
    d.add_argument("hex", nargs="+", help="bytes in hex (spaces and colons allowed)")
    d.set_defaults(func=_guarded(cmd_dissect))
