"""A district of simulated meters as hourly reading rows: the input of the
uplink size benchmark, of ``wum uplink simulate`` tests and of the HES round
trip (45 days x 64 meters).

Owns only the enumeration: every value comes from ``hil.model.MeterModel``
(the 27-register set, read exactly at each hour boundary), so a test can
recompute any row from ``(seed, index, ts)``. Must not know codecs or wire
formats beyond the JSON-lines reading format of ``wum uplink simulate``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

from hil.model import DAY, HOUR, ORIGIN, MeterModel

Reading = tuple[str, int, dict[str, int | float]]


def district_readings(meters: int = 64, days: int = 45, seed: int = 1,
                      start: int = ORIGIN, registers: list[str] | None = None) -> Iterator[Reading]:
    """(meter serial, ts, {obis: value}) for every meter at every hour boundary
    from ``start`` (rounded up to the hour) for ``days`` days, hour by hour,
    meters in index order. ``registers`` keeps only those OBIS codes."""
    models = [MeterModel(i, seed) for i in range(meters)]
    first = -(-int(start) // HOUR) * HOUR
    keep = set(registers) if registers is not None else None
    for h in range(days * DAY // HOUR):
        ts = first + h * HOUR
        for m in models:
            vals = m.registers(ts)
            if keep is not None:
                vals = {o: v for o, v in vals.items() if o in keep}
            yield m.serial, ts, vals


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reading_json(row: Reading) -> str:
    """One line of the ``wum uplink simulate --readings`` format."""
    meter, ts, vals = row
    return json.dumps({"meter": meter, "ts": rfc3339(ts), "values": vals}, separators=(",", ":"))


def write_readings_jsonl(path: str, meters: int = 64, days: int = 45, seed: int = 1,
                         start: int = ORIGIN) -> int:
    """Write the district's readings as JSON lines; returns the number of lines."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in district_readings(meters, days, seed, start):
            f.write(reading_json(row) + "\n")
            n += 1
    return n
