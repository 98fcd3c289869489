# MicroPython side of bench/micropython_heap.py (run by bench/micropython_heap.mjs,
# never imported by CPython). Chunks end at the "#--" lines: each is one top-level
# call, so the port's collector runs between them and gc.mem_alloc() at the start
# of a chunk is what is really live. Prints "@@" lines the bench parses.
import gc
import json
import time

gc.collect()
# --
M = {"interp": gc.mem_alloc()}
from agent.batch import Batch, CodecState, Readings, encode_batch  # noqa: E402
from agent.envelope import MemoryBootStore, Sealer  # noqa: E402

gc.collect()
# --
M["code"] = gc.mem_alloc()


def load(key):
    with open("/in.json") as f:
        return json.load(f)[key]


def hour(ts, rows):
    # as firmware.loop.AgentLoop.read_all gives them: the meters' values put
    # into a Readings (columns) one meter at a time, and the cycle results
    r = Readings()
    for m, v in rows:
        r.add(m, ts, v)
    return r, [(m, "read", None) for m, _ in rows]


T = load("t")
PROBE = load("probe")
r, s = hour(T - 3600, load("prev"))
b1 = Batch("board-1", 1, T - 3600, r, (), s)
del r, s
encode_batch(b1, None)
state = CodecState("board-1")
state.advance(b1)
del b1
gc.collect()
# --
M["state"] = gc.mem_alloc()
r, s = hour(T, load("now"))
b2 = Batch("board-1", 2, T, r, (), s)
del r, s
gc.collect()
# --
M["readings"] = gc.mem_alloc()
sealer = Sealer("board-1", bytes(range(32)), MemoryBootStore())
gc.collect()
# --
M["sealer"] = gc.mem_alloc()
NAMES = []
if PROBE:
    import _heap

    import agent.aes
    import agent.batch
    import agent.batch_bits
    import agent.batch_codecstate
    import agent.batch_columns
    import agent.batch_encode
    import agent.batch_readings
    import agent.batch_relations
    import agent.batch_sections
    import agent.batch_state
    import agent.crypto
    import agent.envelope

    _N = object()
    _probe = _heap.probe

    def _wrap(f, i):
        # Positional calls only: no *args/**kwargs, and f, i are defaults, not
        # closed over (a closure call may put its arguments on the heap).
        def w(a0=_N, a1=_N, a2=_N, a3=_N, a4=_N, a5=_N, a6=_N, a7=_N, a8=_N, a9=_N,
              a10=_N, a11=_N, f=f, i=i):
            _probe(i)
            if a0 is _N:
                r = f()
            elif a1 is _N:
                r = f(a0)
            elif a2 is _N:
                r = f(a0, a1)
            elif a3 is _N:
                r = f(a0, a1, a2)
            elif a4 is _N:
                r = f(a0, a1, a2, a3)
            elif a5 is _N:
                r = f(a0, a1, a2, a3, a4)
            elif a6 is _N:
                r = f(a0, a1, a2, a3, a4, a5)
            elif a7 is _N:
                r = f(a0, a1, a2, a3, a4, a5, a6)
            elif a8 is _N:
                r = f(a0, a1, a2, a3, a4, a5, a6, a7)
            elif a9 is _N:
                r = f(a0, a1, a2, a3, a4, a5, a6, a7, a8)
            elif a10 is _N:
                r = f(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9)
            elif a11 is _N:
                r = f(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10)
            else:
                r = f(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11)
            _probe(-i)
            return r
        return w

    FN = type(_wrap)
    MODS = [agent.batch, agent.batch_bits, agent.batch_codecstate, agent.batch_columns,
            agent.batch_encode, agent.batch_readings, agent.batch_relations,
            agent.batch_sections, agent.batch_state, agent.crypto, agent.aes, agent.envelope]
    wrapped = {}

    def _wrapper(f, name):
        w = wrapped.get(f)
        if w is None:
            NAMES.append(name)
            w = wrapped[f] = _wrap(f, len(NAMES))
        return w

    for mod in MODS:
        mname = mod.__name__.split(".")[-1]
        for k, v in list(mod.__dict__.items()):
            if type(v) is FN and v.__globals__ is mod.__dict__:
                _wrapper(v, mname + "." + k)
            elif type(v) is type and v.__dict__.get("__module__") == mod.__name__:
                for a, fv in list(v.__dict__.items()):
                    if type(fv) is FN:
                        setattr(v, a, _wrapper(fv, v.__name__ + "." + a))
    for mod in MODS:
        for k, v in list(mod.__dict__.items()):
            if type(v) is FN and v in wrapped:
                setattr(mod, k, wrapped[v])
    encode_batch = agent.batch.encode_batch
    del mod, k, v
print("@@NAMES " + json.dumps(NAMES))
gc.collect()
# --
M["probes"] = gc.mem_alloc()
if PROBE:
    # the wrappers' own cost: 1000 wrapped calls should allocate nothing
    zz = agent.batch_bits.zigzag
    _heap.begin("probe-check")
    for _ in range(1000):
        zz(-5)
    _heap.end()
    # the observer itself: 16 KB held across a probe must be seen live, 64 KB
    # dropped before it must not (but counts as allocated)
    def _hold(n):
        for _ in range(4):
            bytearray(n)
        b = bytearray(n)
        zz(1)
        return len(b)

    _heap.begin("calibration")
    _hold(16384)
    _heap.end()
    del zz
    _heap.begin("encode+seal")
t0 = time.ticks_ms()
payload = encode_batch(b2, state)
t1 = time.ticks_ms()
sealed = sealer.seal(payload)
t2 = time.ticks_ms()
if PROBE:
    _heap.end()
T_ENC, T_SEAL = time.ticks_diff(t1, t0), time.ticks_diff(t2, t1)
del t0, t1, t2
gc.collect()
# --
M["after"] = gc.mem_alloc()
del payload
if PROBE:
    _heap.begin("advance+save")
state.advance(b2)
with open("/codec.bin", "wb") as f:     # as firmware.loop.Files.save does
    state.write(f.write)
if PROBE:
    _heap.end()
del f
del b2
gc.collect()
# --
M["next"] = gc.mem_alloc()
print("@@" + json.dumps({"mem": M, "encode_ms": T_ENC, "seal_ms": T_SEAL, "sealed": len(sealed),
                         "sealed_hex": sealed.hex(), "state_bytes": len(open("/codec.bin", "rb").read())}))
