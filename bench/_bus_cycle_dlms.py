"""The DLMS half of bench/bus_cycle.py: one hourly cycle over N simulated
DLMS/COSEM meters (``wum-hil simulate --protocol dlms`` on a pty, paced at
the baud rate with a per-reply latency), read by ``drivers.dlms``.

Per meter the grouped read is: SNRM/UA, AARQ/AARE, one GET-with-list (clock,
27 register values, their scaler_units, serial number and logical device
name), one GET-with-list on the load profile (capture objects, capture
period, buffer of the last hour by range), DISC = 5 round trips. The next
hour ("steady") the client remembers scalers and profile layout (checked
against the serial number it reads anyway), so the same 5 round trips carry
fewer bytes. The naive read asks for every attribute on its own, as simple
head ends do.

Reported as in bus_cycle.py: round trips per meter, bytes on the wire, wall
time, the lower bound ``bytes × 10 / baud + round trips × latency`` and the
ratio. ``bus_cycle.py`` imports ``dlms_cycle`` from here when present; this
file also runs on its own:

    python bench/_bus_cycle_dlms.py [--meters 64] [--baud 9600] [--latency-ms 50]
                                    [--naive-meters 8]
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BITS_PER_BYTE = 10          # 8N1


@contextlib.contextmanager
def _simulator(meters: int, baud: int, latency_ms: float):
    cmd = [sys.executable, "-m", "hil.cli", "simulate", "--port", "pty", "--meters",
           str(meters), "--protocol", "dlms", "--baud", str(baud),
           "--latency-ms", str(latency_ms)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        path = proc.stdout.readline().strip()
        proc.stdout.readline()                  # the meters line
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _figures(name: str, meters: int, trips: int, nbytes: int, wall: float, baud: int,
             latency_ms: float, errors: int) -> dict:
    bound = nbytes * BITS_PER_BYTE / baud + trips * latency_ms / 1000.0
    return {"read": name, "meters": meters, "errors": errors,
            "round_trips_per_meter": round(trips / meters, 2), "bytes": nbytes,
            "bytes_per_meter": round(nbytes / meters), "wall_s": round(wall, 3),
            "wall_per_meter_s": round(wall / meters, 3), "lower_bound_s": round(bound, 3),
            "ratio": round(wall / bound, 3) if bound else None}


def _naive(c, now: int) -> None:
    """Every attribute in its own GET (no lists, no caching)."""
    from drivers.dlms import cosem
    from drivers.dlms.io import _desc

    for cls, obis in c.IDENTITY:
        c._get([_desc(cls, obis)])
    c._get([_desc(cosem.CLOCK, cosem.CLOCK_OBIS)])
    for obis in cosem.DEFAULT_REGISTERS:
        cls = cosem.register_class(obis)
        c._get([_desc(cls, obis)])
        if cosem.has_scaler(cls):
            c._get([_desc(cls, obis, cosem.SCALER_UNIT)])
    lp = cosem.LOAD_PROFILE
    c._get([_desc(cosem.PROFILE_GENERIC, lp, cosem.CAPTURE_OBJECTS)])
    c._get([_desc(cosem.PROFILE_GENERIC, lp, cosem.CAPTURE_PERIOD)])
    c._get([_desc(cosem.PROFILE_GENERIC, lp, cosem.BUFFER,
                  cosem.range_access(now - 3600, now, c.deviation))])


def _pass(path: str, addresses: list[int], baud: int, naive: bool,
          memory: dict | None = None) -> tuple[int, int, int, float]:
    import drivers.dlms as dlms
    from drivers import DriverError
    from drivers.serialio import Link

    link = Link(path, baud).connect()
    trips = errors = 0
    t0 = time.perf_counter()
    for addr in addresses:
        try:
            c = dlms.open_client(path, str(addr), link=link, timeout=2.0, retries=2,
                                 metadata={} if memory is None else memory)
        except DriverError:
            errors += 1
            continue
        now = int(time.time())
        try:
            if naive:
                _naive(c, now)
            else:
                c.read_registers()
                c.identify()                  # cached: rode in the register request
                c.read_load_profile(now - 3600, now)
        except DriverError:
            errors += 1
        c.close()
        trips += c.round_trips
    wall = time.perf_counter() - t0
    nbytes = link.bytes_tx + link.bytes_rx
    link.close()
    return trips, nbytes, errors, wall


def dlms_cycle(meters: int = 64, baud: int = 9600, latency_ms: float = 50.0,
               naive_meters: int = 8) -> dict:
    with _simulator(meters, baud, latency_ms) as path:
        memory: dict = {}
        every = list(range(1, meters + 1))
        trips, nbytes, errors, wall = _pass(path, every, baud, False, memory)
        grouped = _figures("grouped (GET-with-list, profile by range)", meters, trips, nbytes,
                           wall, baud, latency_ms, errors)
        trips, nbytes, errors, wall = _pass(path, every, baud, False, memory)
        steady = _figures("grouped, next hour (remembered scalers and layout)", meters, trips,
                          nbytes, wall, baud, latency_ms, errors)
        n = min(naive_meters, meters)
        trips, nbytes, errors, wall = _pass(path, list(range(1, n + 1)), baud, True)
        naive = _figures("naive (attribute by attribute)", n, trips, nbytes, wall, baud,
                         latency_ms, errors)
    return {"protocol": "dlms", "baud": baud, "latency_ms": latency_ms, "grouped": grouped,
            "steady": steady, "naive": naive, "speedup_per_meter": round(naive["wall_per_meter_s"]
                                                       / grouped["wall_per_meter_s"], 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--meters", type=int, default=64)
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--naive-meters", type=int, default=8)
    a = p.parse_args(argv)
    print(json.dumps({"dlms": dlms_cycle(a.meters, a.baud, a.latency_ms, a.naive_meters)},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
