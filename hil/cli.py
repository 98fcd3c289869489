"""The ``wum-hil`` command line: meter simulators on a serial port, and rigs.

Owns: ``wum-hil simulate`` (N simulated meters of one protocol, or a mix, on
one ``hil.bus.Bus`` served on a pty or a real port until SIGINT/SIGTERM),
``wum-hil board`` (a simulated MicroPython board, ``hil.board``) and
``wum-hil rig`` (acceptance scenarios between two ports, see ``hil.rig``).
The DLMS and IEC 62056-21 simulators are imported lazily so a missing one is
a clear error, not an import crash.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import threading
import time
from typing import Any

from agent.clock import SystemClock
from hil import HilError
from hil.bus import Bus, FaultSpec
from hil.model import MeterModel
from hil.ports import PtyPort, open_port

PROTOCOLS = ("dlms", "iec62056-21", "modbus")
SIMULATORS = {  # protocol: (module, class)
    "dlms": ("hil.dlms_meter", "DlmsMeter"),
    "iec62056-21": ("hil.iec_meter", "IecMeter"),
    "modbus": ("hil.modbus_meter", "ModbusMeter"),
}


def simulator_class(protocol: str) -> type:
    module, name = SIMULATORS[protocol]
    try:
        cls: type = getattr(importlib.import_module(module), name)
        return cls
    except (ImportError, AttributeError) as e:
        raise HilError("no %s simulator: %s.%s is not available (%s)"
                       % (protocol, module, name, e)) from e


def make_clock(spec: str | None = None, speed: float | None = None) -> SystemClock:
    """-> a clock object with ``now()``: shared spec, accelerated, or wall."""
    from agent.clock import ScaledClock

    if spec:
        return ScaledClock.from_spec(spec)
    if speed and speed != 1.0:
        return ScaledClock(time.time(), speed)
    return SystemClock()


def build_meters(count: int, protocol: str, seed: int, clock: SystemClock,
                 profile: str = "generic", first: int = 1,
                 dlms: dict[str, Any] | None = None,
                 iec: dict[str, Any] | None = None) -> list[Any]:
    """``count`` meters with addresses first..first+count-1; ``mix`` cycles the
    protocols (address 1 DLMS, 2 IEC, 3 Modbus, ...)."""
    meters = []
    for i in range(first, first + count):
        proto = protocol_of(i, protocol)
        if proto not in SIMULATORS:
            raise HilError("unknown protocol %r (known: %s, mix)" % (proto, ", ".join(PROTOCOLS)))
        cls = simulator_class(proto)
        model = MeterModel(i, seed)
        model.registers(clock.now())    # warm the energy cache: the first read of a
        #                                 meter must cost wire time, not bookkeeping
        opts: dict[str, Any] = {"profile": profile} if proto == "modbus" else {}
        if proto == "dlms" and dlms:
            opts.update(dlms)
        if proto == "iec62056-21" and iec:
            opts.update(iec)
        meters.append(cls(model, str(i), clock.now, **opts))
    return meters


def protocol_of(address: int, protocol: str) -> str:
    return PROTOCOLS[(address - 1) % 3] if protocol == "mix" else protocol


def describe(meters: list[Any], protocol: str, seed: int) -> list[dict[str, str]]:
    return [{"address": str(m.address), "protocol": protocol_of(int(m.address), protocol),
             "serial": MeterModel(int(m.address), seed).serial} for m in meters]


def cmd_simulate(args: argparse.Namespace) -> int:
    clock = make_clock(args.clock, args.speed)
    dlms: dict[str, Any] = {"auth": args.auth}
    if args.no_serial_number:
        dlms["serial_number"] = False
    if args.password:
        dlms["password"] = args.password
    if args.ek:
        dlms["ek"], dlms["ak"] = bytes.fromhex(args.ek), bytes.fromhex(args.ak or args.ek)
    port = open_port(args.port, args.baud, link=args.link)
    # IEC 62056-21 7E1 on a real port (which the bus runs 8N1): parity in bit 7.
    iec = {"wire_parity": not isinstance(port, PtyPort)}
    meters = build_meters(args.meters, args.protocol, args.seed, clock, args.profile, dlms=dlms,
                          iec=iec)
    bus = Bus(port, meters, baud=args.baud, latency=args.latency_ms / 1000.0,
              faults=FaultSpec.parse(args.faults, args.seed))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    bus.start()
    print(port.agent_path, flush=True)
    print(json.dumps({"port": port.agent_path, "baud": args.baud,
                      "clock": clock.spec(), "meters": describe(meters, args.protocol, args.seed)}), flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        bus.stop()
        port.close()
    return 0


def cmd_board(args: argparse.Namespace) -> int:
    from hil.board import SimBoard

    if args.port != "pty":
        raise HilError("the simulated board serves on pseudo-terminals only (--port pty)")
    board = SimBoard(args.flash_kb, args.heap_kb, None if args.de_pin == "none" else args.de_pin,
                     args.cryptolib).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(json.dumps(board.describe()), flush=True)
    try:
        while not stop.wait(0.2):
            if not board.alive():
                raise HilError("the simulated board stopped")
    finally:
        board.stop()
    return 0


def cmd_rig(args: argparse.Namespace) -> int:
    from hil import rig

    return rig.main(args)


def cmd_mesh_sim(args: argparse.Namespace) -> int:
    from hil.mesh_sim import command

    print(command(args.scenario, args.seed, args.json), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wum-hil", description="Meter simulators and HIL rigs.")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    s = sub.add_parser("simulate", help="serve simulated meters on a port until SIGINT/SIGTERM")
    s.add_argument("--port", default="pty", help="'pty' (a new pseudo-terminal pair) or a URL")
    s.add_argument("--meters", type=int, default=8)
    s.add_argument("--protocol", default="modbus", choices=PROTOCOLS + ("mix",))
    s.add_argument("--profile", default="generic", help="Modbus device profile")
    s.add_argument("--baud", type=int, default=9600)
    s.add_argument("--latency-ms", type=float, default=0.0)
    s.add_argument("--faults", default="", help="e.g. crc=0.05,dead@4 (see hil.bus)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--speed", type=float, default=None, help="simulated seconds per second")
    s.add_argument("--clock", default=None, help="ScaledClock spec t0,w0,speed to share")
    s.add_argument("--link", default=None, help="symlink to create to the agent's end")
    s.add_argument("--auth", default="none", choices=("none", "lls", "hls"),
                   help="DLMS meters: authentication they demand (hls = HLS-GMAC + suite 0)")
    s.add_argument("--password", default=None, help="DLMS LLS / IEC password of the meters")
    s.add_argument("--ek", default=None, help="DLMS global encryption key (hex)")
    s.add_argument("--ak", default=None, help="DLMS authentication key (hex)")
    s.add_argument("--no-serial-number", dest="no_serial_number", action="store_true",
                   help="DLMS meters without the serial-number object 0.0.96.1.0.255 "
                        "(known by their logical device name 0.0.42.0.0.255 only)")
    s.set_defaults(func=cmd_simulate)
    b = sub.add_parser(
        "board", help="a simulated MicroPython board: REPL and RS-485 UART on two ptys",
        description="Runs the WebAssembly MicroPython as a board until SIGINT/SIGTERM: its "
                    "REPL (friendly, raw, raw-paste; what mpremote speaks) on one pseudo-terminal, "
                    "its machine.UART on another (serve meters there with `wum-hil simulate "
                    "--port PATH`), a /flash filesystem of --flash-kb. Prints one JSON line: "
                    '{"repl": PATH, "uart": PATH, "flash_kb", "heap_kb", "de_pin", "cryptolib"}.')
    b.add_argument("--port", default="pty", help="'pty' (the only kind)")
    b.add_argument("--flash-kb", type=int, default=1024, help="flash filesystem size (KB)")
    b.add_argument("--heap-kb", type=int, default=512, help="MicroPython heap (KB)")
    b.add_argument("--de-pin", default="4",
                   help="the RS-485 driver-enable pin ('none': an auto-direction transceiver)")
    b.add_argument("--cryptolib", action="store_true",
                   help="give the board a cryptolib (AES) module, as ESP32/RP2 firmware has")
    b.set_defaults(func=cmd_board)
    r = sub.add_parser("rig", help="acceptance scenarios between two ports")
    r.add_argument("--agent-port", default=None, help="URL the drivers read through")
    r.add_argument("--sim-port", default=None, help="URL the simulator serves on")
    r.add_argument("--pty", action="store_true", help="make a pty pair for both ends")
    r.add_argument("--scenario", action="append", default=None,
                   help="scenario name (repeatable; default: all available)")
    r.add_argument("--junit", default=None, help="write JUnit XML here")
    r.add_argument("--baud", type=int, default=9600)
    r.add_argument("--seed", type=int, default=1)
    r.set_defaults(func=cmd_rig)
    m = sub.add_parser(
        "mesh-sim", help="run a district of concentrators over a simulated radio medium "
        "(the real mesh core, then a managed-flooding baseline on the same data)",
        description="Run the real mesh core in every concentrator of a district over the "
        "discrete-event radio medium (virtual time, deterministic by seed), then a "
        "Meshtastic-style managed-flooding baseline on the same scenario and the same "
        "batches. Prints delivery ratio, read rate, latency, airtime, duty-cycle "
        "violations and control overhead for both (docs/mesh-sim.md). A bad scenario "
        "file exits 2.")
    m.add_argument("--scenario", required=True,
                   help="a built-in scenario (wifi-district, lora-district, gateway-failover) "
                        "or a scenario JSON file (issue 10's format)")
    m.add_argument("--seed", type=int, default=1, help="seed of every random draw (default 1)")
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.set_defaults(func=cmd_mesh_sim)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except HilError as e:
        print("wum-hil: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
