"""CPU time of the batch codec on CPython, this tree against another git
revision (default ``main``), side by side in one run (JSON).

Per 64-meter hour (27 registers each from ``hil.model``; the hour before
acknowledged): the agent's encode (``Batch`` from dict rows, ``encode_batch``
as a delta, ``CodecState.advance``), and the HES's decode of that delta batch
and of a keyframe (``hes_lite.wire.decode``: state loaded from its bytes,
batch decoded, state advanced and serialized, rows laid out). Each tree runs
in its own process, the two alternating ``--rounds`` times so both see the
same machine load; each figure is the median over rounds of the process CPU
time per operation (best of ``--repeat`` within a round). The reference tree
is a ``git archive`` of the revision in a temporary folder; both get the
same inputs and must produce the same bytes.

    .venv/bin/python bench/batch_cpu.py [--ref main] [--meters 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
T = 1780272000 + 86400 * 5


def inputs(meters: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from hil.model import MeterModel
    models = [MeterModel(i, 1) for i in range(1, meters + 1)]
    hours = [[(m.serial, ts, m.registers(ts)) for m in models] for ts in (T - 3600, T)]
    return {"hours": hours, "statuses": [(m.serial, "read", None) for m in models]}


def measure(data: dict[str, Any], repeat: int) -> dict[str, Any]:
    """In the tree on sys.path[0]: the figures of one round."""
    from agent.batch import Batch, CodecState, encode_batch
    from hes_lite import wire

    (h1, h2), sts = data["hours"], data["statuses"]
    first = Batch("dc-1", 1, T - 3600, h1, (), sts)
    key = encode_batch(first, None)
    st = CodecState("dc-1")
    st.advance(first)
    base = st.to_bytes()

    def agent() -> bytes:
        b = Batch("dc-1", 2, T, h2, (), sts)
        s = CodecState.from_bytes(base)
        out = encode_batch(b, s)
        s.advance(b)
        return out

    def best(f: Any, n: int) -> float:
        times = []
        for _ in range(repeat):
            t = time.process_time()
            for _ in range(n):
                f()
            times.append((time.process_time() - t) / n)
        return min(times) * 1000

    delta = agent()
    load = best(lambda: CodecState.from_bytes(base).digest(), 20)
    return {
        "encode_ms": best(agent, 10) - load,          # the agent holds its state in RAM
        "decode_delta_ms": best(lambda: wire.decode(delta, base), 10),
        "decode_keyframe_ms": best(lambda: wire.decode(key, None), 10),
        "bytes": delta.hex(), "keyframe": key.hex(),
    }


def child(tree: str, path: str, repeat: int) -> None:
    sys.path.insert(0, tree)
    data = pickle.loads(Path(path).read_bytes())
    print(json.dumps(measure(data, repeat)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default="main", help="git revision to compare with (default main)")
    ap.add_argument("--meters", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.repeat)
        return 0
    with tempfile.TemporaryDirectory() as d:
        ref = Path(d) / "ref"
        ref.mkdir()
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref, "agent", "hes_lite",
                              "drivers"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(ref)], input=tar, check=True)
        path = Path(d) / "in.pickle"
        path.write_bytes(pickle.dumps(inputs(args.meters)))
        runs: dict[str, list[dict[str, Any]]] = {"this": [], "ref": []}
        for _ in range(args.rounds):
            for name, tree in (("this", ROOT), ("ref", ref)):
                r = subprocess.run([sys.executable, __file__, "--repeat", str(args.repeat),
                                    "--child", str(tree), str(path)],
                                   capture_output=True, text=True, check=True)
                runs[name].append(json.loads(r.stdout))
    out: dict[str, Any] = {"meters": args.meters, "ref": args.ref, "rounds": args.rounds,
                           "same_bytes": runs["this"][0]["bytes"] == runs["ref"][0]["bytes"]
                           and runs["this"][0]["keyframe"] == runs["ref"][0]["keyframe"]}
    for k in ("encode_ms", "decode_delta_ms", "decode_keyframe_ms"):
        a = statistics.median(r[k] for r in runs["this"])
        b = statistics.median(r[k] for r in runs["ref"])
        out[k] = {"this": round(a, 2), "ref": round(b, 2), "change_pct": round(100 * (a / b - 1), 1)}
    print(json.dumps(out))
    return 0 if out["same_bytes"] else 1


if __name__ == "__main__":
    sys.exit(main())
