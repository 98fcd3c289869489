"""Heap, size and time of the board firmware under MicroPython (JSON).

Builds the `sim` board bundle with mpy-cross (its size is one figure), then
in the WebAssembly MicroPython 1.27 under Node, loading the bundle's .mpy
files: one hourly cycle's encode + seal for 64 meters (27 registers each,
from hil.model), as a delta against the previous hour's codec state, with
the pure-Python AES fallback. Figures:

- ``peak_heap_kb``: the high-water mark of ``gc.mem_alloc`` over the cycle,
  bounded from above: everything encode + seal allocate with the collector
  off (``alloc_kb_gc_off``) on top of what is live before (``baseline_kb``:
  imports, the codec state of 64 meters, the hour's readings). The
  WebAssembly port grows its heap on demand (split heap), so a fixed small
  heap cannot be used to find the exact mark, and its collector frees
  nothing while a script runs (only between top-level calls: the bench
  collects between steps); ``live_after_kb`` is what stays live after;
- ``bundle_kb``: the .mpy bundle; ``aes_ms``: sealing one batch with the
  pure-Python AES; ``encode_ms``.

Targets (issue 12): peak heap <= 64 KB, bundle <= 200 KB.
Run: .venv/bin/python bench/micropython_heap.py [--meters 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.build import build_micropython  # noqa: E402
from hil.board import mpy_package  # noqa: E402
from hil.model import MeterModel  # noqa: E402

T = 1780272000 + 86400 * 5

CYCLE = """
import gc, time, json
gc.collect()
from agent.batch import Batch, CodecState, encode_batch
from agent.envelope import MemoryBootStore, Sealer
with open('/in.json') as f:
    data = json.load(f)
T = data['t']
def batch(seq, ts, hour):
    return Batch('board-1', seq, ts, [(m, ts, v) for m, v in hour], (),
                 [(m, 'read', None) for m, _ in hour])
sealer = Sealer('board-1', bytes(range(32)), MemoryBootStore())
b1 = batch(1, T - 3600, data['prev'])
encode_batch(b1, None)
state = CodecState('board-1')
state.advance(b1)
b2 = batch(2, T, data['now'])
del data, b1
#--
gc.collect()
#--
before = gc.mem_alloc()
if MODE == 'off':
    gc.disable()
t0 = time.ticks_ms()
payload = encode_batch(b2, state)
t1 = time.ticks_ms()
sealed = sealer.seal(payload)
t2 = time.ticks_ms()
after = gc.mem_alloc()
gc.enable()
del payload
#--
gc.collect()
#--
print('@@' + json.dumps({'before': before, 'after': after, 'live_after': gc.mem_alloc(), 'encode_ms': time.ticks_diff(t1, t0),
                         'aes_ms': time.ticks_diff(t2, t1), 'sealed': len(sealed)}))
"""

NODE = r"""
const [pkg, bundle, input, mode, heapKb] = process.argv.slice(1);
const m = await import(pkg);
const fs = await import("node:fs");
const out = [];
const mp = await m.loadMicroPython({heapsize: parseInt(heapKb) * 1024,
  stdout: (l) => out.push(l), stderr: (l) => out.push(l)});
const walk = (d, rel) => { for (const e of fs.readdirSync(d, {withFileTypes: true})) {
  const p = d + "/" + e.name, r = rel + "/" + e.name;
  if (e.isDirectory()) { mp.FS.mkdirTree("/b" + r); walk(p, r); }
  else if (e.name.endsWith(".mpy")) mp.FS.writeFile("/b" + r, fs.readFileSync(p)); } };
mp.FS.mkdirTree("/b"); walk(bundle, "");
mp.FS.writeFile("/in.json", fs.readFileSync(input));
try {
  mp.runPython("import sys\nsys.path.insert(0, '/b')\nMODE = '" + mode + "'");
  for (const part of fs.readFileSync(0, "utf8").split("#--\n")) mp.runPython(part);
} catch (e) { out.push("@@ERR " + String(e.message || e).split("\n").slice(-2).join(" ")); }
console.log(out.join("\n"));
"""


def run(bundle: Path, inp: Path, mode: str, heap_kb: int) -> dict[str, int] | None:
    r = subprocess.run(["node", "--input-type=module", "-e", NODE, str(mpy_package()),
                        str(bundle), str(inp), mode, str(heap_kb)], input=CYCLE,
                       capture_output=True, text=True, timeout=300)
    for line in r.stdout.splitlines():
        if line.startswith("@@{"):
            out: dict[str, int] = json.loads(line[2:])
            return out
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meters", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        bundle = Path(d) / "bundle"
        manifest = build_micropython("sim", bundle)
        mpy = sum(f["size"] for p, f in manifest["files"].items() if p.endswith(".mpy"))
        models = [MeterModel(i, 1) for i in range(1, args.meters + 1)]
        inp = Path(d) / "in.json"
        inp.write_text(json.dumps({"t": T, "prev": [[m.serial, m.registers(T - 3600)] for m in models],
                                   "now": [[m.serial, m.registers(T)] for m in models]}))
        off = run(bundle, inp, "off", 256)
        big = run(bundle, inp, "on", 256)
        if off is None or big is None:
            print(json.dumps({"error": "the cycle did not run in MicroPython"}))
            return 1
        base = big["before"]
    print(json.dumps({
        "meters": args.meters, "registers_per_meter": len(models[0].registers(T)),
        "peak_heap_kb": round((off["after"] - off["before"] + base) / 1024, 1),
        "peak_is": "upper bound (baseline + allocations with gc off)",
        "baseline_kb": round(base / 1024, 1),
        "alloc_kb_gc_off": round((off["after"] - off["before"]) / 1024, 1),
        "live_after_kb": round(big["live_after"] / 1024, 1),
        "bundle_kb": round(manifest["total_size"] / 1024, 1), "bundle_mpy_kb": round(mpy / 1024, 1),
        "sealed_bytes": big["sealed"], "encode_ms": big["encode_ms"], "aes_ms": big["aes_ms"],
        "targets": {"peak_heap_kb": 64, "bundle_kb": 200},
        "interpreter": "MicroPython 1.27 WebAssembly (Node.js), pure-Python AES"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
