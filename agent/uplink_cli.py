"""``wum uplink simulate``: the batch files the agent would upload for a file
of readings (a contract: docs/batch-format.md §6).

Reads JSON lines ``{"meter": id, "ts": RFC 3339 UTC, "values": {obis: number}}``
(one per meter per hour), groups them by hour, and writes one sealed batch per
hour, in order, as ``<device>-<seq:08d>.wub`` in the output folder: seq from
1, created = the latest reading ts of the hour, each batch encoded against the
state left by the previous one (every batch assumed acknowledged), sealed by a
fresh device (boot epoch 1, counter seq - 1). Must not know meters' protocols
or the HES.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from agent.batch import Batch, CodecState, encode_batch
from agent.envelope import MemoryBootStore, Sealer

log = logging.getLogger(__name__)
HOUR = 3600


class ReadingsError(ValueError):
    """A line of the readings file is not a reading."""


def parse_ts(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("z", "Z"))
    if dt.tzinfo is None:
        raise ReadingsError("timestamp without a UTC offset: %r" % text)
    return int(dt.astimezone(UTC).timestamp() // 1)


def parse_line(line: str, lineno: int) -> tuple[str, int, dict[str, int | float | None]]:
    try:
        obj = json.loads(line)
        meter, ts, values = str(obj["meter"]), parse_ts(str(obj["ts"])), obj["values"]
    except (ValueError, KeyError, TypeError) as e:
        raise ReadingsError("line %d: %s" % (lineno, e)) from None
    if not isinstance(values, dict):
        raise ReadingsError("line %d: values must be an object" % lineno)
    for k, v in values.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise ReadingsError("line %d: value of %s is not a number" % (lineno, k))
    return meter, ts, values


def read_hours(path: str) -> list[tuple[int, list[tuple[str, int, dict[str, Any]]]]]:
    """Readings grouped by hour (ts // 3600), hours ascending; a repeated
    (meter, ts) merges its values, the later line winning."""
    hours: dict[int, dict[tuple[str, int], dict[str, Any]]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            meter, ts, values = parse_line(line, n)
            hours.setdefault(ts // HOUR, {}).setdefault((meter, ts), {}).update(values)
    return [(h, [(m, ts, v) for (m, ts), v in sorted(rows.items())])
            for h, rows in sorted(hours.items())]


def simulate(readings: str, device: str, root_key: bytes, out: str) -> list[str]:
    """Write the batch files; returns their paths in upload order."""
    os.makedirs(out, exist_ok=True)
    sealer = Sealer(device, root_key, MemoryBootStore())
    state: CodecState | None = None
    paths = []
    for seq, (_, rows) in enumerate(read_hours(readings), 1):
        batch = Batch(device, seq, max(ts for _, ts, _ in rows), rows)
        sealed = sealer.seal(encode_batch(batch, state))
        nxt = state if state is not None else CodecState(device)
        nxt.advance(batch)          # acknowledged
        state = nxt
        path = os.path.join(out, "%s-%08d.wub" % (device, seq))
        with open(path, "wb") as f:
            f.write(sealed)
        paths.append(path)
    return paths


def _run(args: argparse.Namespace) -> int:
    try:
        key = bytes.fromhex(args.key)
    except ValueError:
        key = b""
    if len(key) != 32:
        print("wum uplink simulate: --key must be 64 hex digits (a 256-bit root key)",
              file=sys.stderr)
        return 2
    if not 1 <= len(args.device_id.encode()) <= 64 or "/" in args.device_id:
        print("wum uplink simulate: --device-id must be 1..64 bytes without '/'", file=sys.stderr)
        return 2
    try:
        paths = simulate(args.readings, args.device_id, key, args.out)
    except (OSError, ReadingsError) as e:
        print("wum uplink simulate: %s" % e, file=sys.stderr)
        return 2
    total = sum(os.path.getsize(p) for p in paths)
    print(json.dumps({"device": args.device_id, "batches": len(paths), "bytes": total,
                      "out": args.out}))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("uplink", help="uplink tools (batch files)")
    sub = p.add_subparsers(dest="uplink_command", metavar="ACTION", required=True)
    s = sub.add_parser("simulate", help="write the sealed batches the agent would upload for "
                       "a JSON-lines readings file, one per hour, each assumed acknowledged")
    s.add_argument("--readings", required=True, metavar="FILE.jsonl")
    s.add_argument("--device-id", required=True, metavar="ID")
    s.add_argument("--key", required=True, metavar="HEX", help="the device's 256-bit root key")
    s.add_argument("--out", required=True, metavar="DIR")
    s.set_defaults(func=_run)
