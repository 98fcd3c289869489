"""One hourly bus cycle against the baud-paced simulator: how close to the
wire's own limit does reading every meter on an RS-485 bus come?

For each protocol (one function each; the DLMS half is added beside
``modbus_cycle``), a ``wum-hil simulate`` process serves N meters on a pty
paced at the baud rate; the real driver reads every meter once. Reported:
round trips per meter, bytes on the wire, wall time, the lower bound
``bytes × bits-per-byte / baud + round trips × latency`` and the ratio, and
the same for a naive register-by-register read in the same run.

    python bench/bus_cycle.py [--meters 64] [--baud 9600] [--latency-ms 0]
                              [--naive-meters 8] [--protocol modbus]
Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BITS_PER_BYTE = 10          # 8N1: start + 8 data + stop


@contextlib.contextmanager
def simulator(protocol: str, meters: int, baud: int, latency_ms: float) -> Iterator[str]:
    cmd = [sys.executable, "-m", "hil.cli", "simulate", "--port", "pty", "--meters",
           str(meters), "--protocol", protocol, "--baud", str(baud),
           "--latency-ms", str(latency_ms)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        proc.stdout.readline()                  # the meters line
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def figures(name: str, meters: int, round_trips: int, nbytes: int, wall: float, baud: int,
            latency_ms: float, errors: int) -> dict[str, Any]:
    bound = nbytes * BITS_PER_BYTE / baud + round_trips * latency_ms / 1000.0
    return {"read": name, "meters": meters, "errors": errors,
            "round_trips_per_meter": round(round_trips / meters, 2),
            "bytes": nbytes, "wall_s": round(wall, 3), "lower_bound_s": round(bound, 3),
            "ratio": round(wall / bound, 3) if bound else None}


def _modbus_pass(path: str, units: list[int], baud: int, naive: bool) -> tuple[int, int, int,
                                                                             float]:
    from drivers import DriverError
    from drivers.modbus.client import open_client
    from drivers.modbus.transport import release_bus, shared_bus

    hold = shared_bus(path, baud)              # one open port for the whole cycle
    tx0, rx0 = hold.bytes_tx, hold.bytes_rx
    trips = errors = 0
    t0 = time.perf_counter()
    for unit in units:
        c = open_client(path, unit, baud, timeout=1.0, retries=2)
        try:
            if naive:                         # one request per register, identity too
                c.identify()
                for reg in c.profile.registers:
                    c.read_registers([reg.obis])
            else:                             # identity rides in the same request
                c.read_registers()
                c.identify()
        except DriverError:
            errors += 1
        trips += c.round_trips
        c.close()
    wall = time.perf_counter() - t0
    nbytes = hold.bytes_tx - tx0 + hold.bytes_rx - rx0
    release_bus(hold)
    return trips, nbytes, errors, wall


def modbus_cycle(meters: int = 64, baud: int = 9600, latency_ms: float = 0.0,
                 naive_meters: int = 8) -> dict[str, Any]:
    with simulator("modbus", meters, baud, latency_ms) as path:
        trips, nbytes, errors, wall = _modbus_pass(path, list(range(1, meters + 1)), baud,
                                                   naive=False)
        grouped = figures("grouped (profile plan)", meters, trips, nbytes, wall, baud,
                          latency_ms, errors)
        n = min(naive_meters, meters)
        trips, nbytes, errors, wall = _modbus_pass(path, list(range(1, n + 1)), baud,
                                                   naive=True)
        naive = figures("naive (register by register)", n, trips, nbytes, wall, baud,
                        latency_ms, errors)
    naive["wall_per_meter_s"] = round(naive["wall_s"] / n, 3)
    grouped["wall_per_meter_s"] = round(grouped["wall_s"] / meters, 3)
    return {"protocol": "modbus", "profile": "generic", "baud": baud,
            "latency_ms": latency_ms, "grouped": grouped, "naive": naive,
            "speedup_per_meter": round(naive["wall_per_meter_s"]
                                       / grouped["wall_per_meter_s"], 1)}


CYCLES = {"modbus": modbus_cycle}     # protocol -> function(meters, baud, latency_ms)
# The figures: DLMS meters answer after 50 ms, Modbus meters at once.
LATENCY_MS = {"modbus": 0.0, "dlms": 50.0}
try:
    from bench._bus_cycle_dlms import dlms_cycle

    CYCLES["dlms"] = dlms_cycle
except ImportError:
    pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", action="append", choices=sorted(CYCLES), default=None)
    p.add_argument("--meters", type=int, default=64)
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--latency-ms", type=float, default=None,
                   help="meter response latency (default: 50 ms DLMS, 0 ms Modbus)")
    p.add_argument("--naive-meters", type=int, default=8)
    args = p.parse_args(argv)
    out = {}
    for name in args.protocol or sorted(CYCLES):
        kw = {"naive_meters": args.naive_meters}
        latency = LATENCY_MS[name] if args.latency_ms is None else args.latency_ms
        out[name] = CYCLES[name](args.meters, args.baud, latency, **kw)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
