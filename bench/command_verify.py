"""The agent's cost to verify one signed command (issue 11).

Measures, on this machine, the time ``agent.command.verify`` takes for the
worked example of docs/command-format.md (a disconnect, 118 bytes):
- CPython with ``cryptography`` (OpenSSL Ed25519, what a Linux concentrator uses);
- CPython on the pure-Python path (RFC 8032 code, hashlib SHA-512);
- MicroPython (the official WebAssembly port under Node.js, as the tests run
  it: pure-Python Ed25519 and SHA-512, since that port has no sha512), in a
  fresh interpreter, median of N verifies after one warm-up (which also pays
  for computing the SHA-512 constants and the base point once).
Also the cost of opening the kind-2 envelope (AES-CCM) on CPython. Prints one
JSON object; ``--n`` sets the repetitions. The machine may be shared: the
figures are what this run saw, not a specification.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import command, ed25519, envelope  # noqa: E402

EXAMPLES = ROOT / "tests" / "vectors" / "command" / "examples.txt"
MPY = ROOT / ".cache" / "node" / "node_modules" / "@micropython" / \
    "micropython-webassembly-pyscript" / "micropython.mjs"

NODE_SCRIPT = r"""
const mod = await import(process.argv[2]);
const files = JSON.parse(process.argv[3]);
const out = [];
const mp = await mod.loadMicroPython({heapsize: 32 * 1024 * 1024,
  stdout: (l) => out.push(l), stderr: (l) => out.push(l)});
for (const [dest, text] of Object.entries(files)) {
  mp.FS.mkdirTree(dest.substring(0, dest.lastIndexOf("/")));
  mp.FS.writeFile(dest, text);
}
mp.runPython(process.argv[4]);
console.log(out.join("\n"));
"""

MPY_CODE = """
import sys, time, json
sys.path.insert(0, '/repo')
from agent import command
data = bytes.fromhex('%(data)s')
pub = bytes.fromhex('%(pub)s')
t = time.ticks_us()
command.verify(data, [pub], 'DC-0001')
first = time.ticks_diff(time.ticks_us(), t) / 1e6
ts = []
for i in range(%(n)d):
    t = time.ticks_us()
    command.verify(data, [pub], 'DC-0001')
    ts.append(time.ticks_diff(time.ticks_us(), t) / 1e6)
ts.sort()
print(json.dumps({'first_s': first, 'median_s': ts[len(ts) // 2], 'max_s': ts[-1], 'n': len(ts)}))
"""


def example() -> tuple[bytes, bytes]:
    for line in EXAMPLES.read_text().splitlines():
        if line.startswith("disconnect "):
            _, _secret, public, data = line.split()
            return bytes.fromhex(data), bytes.fromhex(public)
    raise SystemExit("no disconnect example in %s" % EXAMPLES)


def timed(fn, n: int) -> dict[str, float]:
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {"median_s": statistics.median(ts), "max_s": max(ts), "n": n}


def micropython(data: bytes, public: bytes, n: int) -> dict[str, object]:
    node = shutil.which("node")
    if node is None or not MPY.exists():
        return {"skipped": "node or the MicroPython package missing (make mpy)"}
    files = {"/repo/agent/%s" % f: (ROOT / "agent" / f).read_text()
             for f in ("__init__.py", "command.py", "ed25519.py")}
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "bench.mjs"
        script.write_text(NODE_SCRIPT)
        code = MPY_CODE % {"data": data.hex(), "pub": public.hex(), "n": n}
        p = subprocess.run([node, str(script), MPY.as_uri(), json.dumps(files), code],
                           capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return {"error": (p.stdout + p.stderr)[-1000:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50, help="verifies per measurement")
    args = ap.parse_args()
    data, public = example()
    cmd = command.verify(data, [public], "DC-0001")
    assert cmd.op == "disconnect"
    out: dict[str, object] = {"command_bytes": len(data)}
    out["cpython_openssl"] = timed(lambda: command.verify(data, [public], "DC-0001"), args.n)
    saved = ed25519._PubKey
    ed25519._PubKey = None          # the pure-Python path, as on a device
    try:
        out["cpython_pure"] = timed(lambda: command.verify(data, [public], "DC-0001"),
                                    max(5, args.n // 5))
    finally:
        ed25519._PubKey = saved
    root = bytes(range(32))
    sealed = envelope.Sealer("DC-0001", root, envelope.MemoryBootStore(),
                             purpose="downlink").seal(data, envelope.KIND_COMMAND)
    ring = envelope.Keyring(purpose="downlink")
    ring.add("DC-0001", root)
    out["cpython_open_envelope"] = timed(lambda: envelope.open_envelope(sealed, ring), args.n)
    out["micropython_wasm_pure"] = micropython(data, public, max(3, args.n // 10))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
