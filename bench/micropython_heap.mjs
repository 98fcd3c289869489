// The WebAssembly MicroPython with a heap observer, for bench/micropython_heap.py
// only (nothing in the product loads it).
//
// Why an observer: this port (the "pyscript" variant, MICROPY_GC_SPLIT_HEAP_AUTO)
// cannot scan the C stack, so its gc_collect() only sets a flag and the real
// collection runs when control returns to the top level (the outermost call
// from JavaScript); gc.collect() inside a script frees nothing, and the heap
// grows instead. So:
//
//   - a probe (the Python module `_heap`, called from wrappers the bench puts
//     around every codec and crypto function) takes a full copy of the wasm
//     memory, sets the port's external-call depth to 0, calls gc.collect()
//     and gc.mem_alloc() through the JS API (each call returning to "top
//     level", so the collection really runs, roots = the Python stack and the
//     VM's root pointers), notes the live bytes, and puts the memory back
//     byte for byte. The program never sees the collection: nothing it holds
//     (even an object referenced only from a C local) can be freed under it;
//   - between two probes, the port's gross allocation counter
//     (MP_STATE_MEM(gc_alloc_amount), blocks allocated since the last real
//     collection; never decreased by a free) bounds what can have become
//     live: peak <= live at the last probe + blocks allocated since.
//
// The two addresses (external_call_depth, gc_alloc_amount) are private to the
// build; they are found at start-up by their behaviour (depth 0/1/2 in nested
// calls; +101 and about +201 blocks around two known allocations) and the
// depth one is confirmed by a collection that frees a known amount. Any
// ambiguity stops the run with an error instead of a figure.
//
// Usage: node bench/micropython_heap.mjs PKG BUNDLE_DIR INPUT_JSON SCRIPT HEAP_KB SLACK
//   SCRIPT: MicroPython source in chunks separated by lines "# --"; each chunk is a
//   top-level call (the real collector runs between them).
// Prints the script's own lines and one line "@@HEAP {json}" with the probes' figures.

import fs from "node:fs";

const [pkg, bundle, input, script, heapKb, slackArg] = process.argv.slice(2);
const BLOCK = 16;                       // MICROPY_BYTES_PER_GC_BLOCK on a 32-bit port
const slack = parseInt(slackArg, 10);   // bytes allocated between two measured probes

let wasm = null;                        // the instance's exports (memory)
let measuring = false;
const foreign = [];                     // host calls made during a measurement
const instantiate = WebAssembly.instantiate;
WebAssembly.instantiate = async (binary, imports) => {
  // During a measurement the collector may run finalisers. A JsProxy's frees its
  // JavaScript reference: suppressed (the memory restore brings the object
  // back). Any other host call (a file closed, ...) could not be undone: noted,
  // and the run fails.
  for (const ns of Object.values(imports)) {
    for (const [k, f] of Object.entries(ns)) {
      if (typeof f !== "function" || k.startsWith("invoke_")) continue;
      ns[k] = (...args) => {
        if (measuring) {
          if (k === "proxy_js_free_obj") return undefined;
          foreign.push(k);
        }
        return f(...args);
      };
    }
  }
  const r = await instantiate(binary, imports);
  wasm = (r.instance || r).exports;
  return r;
};
const m = await import(pkg);
const out = [];
const mp = await m.loadMicroPython({ heapsize: parseInt(heapKb, 10) * 1024,
  stdout: (l) => out.push(l), stderr: (l) => out.push(l) });
WebAssembly.instantiate = instantiate;
if (!wasm || !wasm.memory) throw new Error("no wasm memory export");

const i32 = () => new Int32Array(wasm.memory.buffer);

// -- finding the two private words ------------------------------------------------
let found = { depth: [], amount: [] };
let snap0 = null;
const marks = [];
mp.registerJsModule("_find", {
  d1: () => {
    const h = i32();
    found.depth = [];
    for (let i = 0; i < snap0.length; i++) if (snap0[i] === 0 && h[i] === 1) found.depth.push(i);
    mp.runPython("import _find\n_find.d2()");
  },
  d2: () => { const h = i32(); found.depth = found.depth.filter((i) => h[i] === 2); },
  mark: () => { marks.push(i32().slice()); },
});
snap0 = i32().slice();
mp.runPython("import _find\n_find.d1()");
mp.runPython("import _find, gc\n_find.mark()\n_x = bytearray(1600)\n_find.mark()\n" +
             "_y = bytearray(3200)\n_find.mark()\ndel _x, _y\ngc.collect()");
{
  const [a, b, c] = marks;
  for (let i = 0; i < a.length; i++) {
    const d1 = b[i] - a[i], d2 = c[i] - b[i];
    if (d1 >= 101 && d1 <= 104 && d2 >= 201 && d2 <= 208) found.amount.push(i);
  }
}
if (found.amount.length !== 1) throw new Error("gc_alloc_amount not found: " + found.amount);

const gcmod = mp.pyimport("gc");
const gcCollect = gcmod.collect, memAlloc = gcmod.mem_alloc;
let depthAt = -1;
let keep = null;

function measure() {
  // Live bytes if a collection ran now; the memory is restored afterwards.
  const buf = wasm.memory.buffer;
  if (keep === null || keep.length !== buf.byteLength >> 2) keep = new Int32Array(buf.byteLength >> 2);
  keep.set(new Int32Array(buf));
  let live;
  measuring = true;
  try {
    const h = i32();
    const saved = h[depthAt];
    h[depthAt] = 0;
    gcCollect();          // returns to depth 0: the pending collection runs
    live = memAlloc();    // nothing allocated since
    if (i32()[depthAt] !== 0) throw new Error("external call depth did not return to 0");
    void saved;
  } finally {
    measuring = false;
    const now = new Int32Array(wasm.memory.buffer);
    now.set(keep);
    if (now.length > keep.length) now.fill(0, keep.length);
  }
  if (foreign.length) throw new Error("host calls during a measurement: " + foreign.join(","));
  return live;
}

// confirm which depth candidate is the one: a collection through it frees garbage
mp.runPython("import gc\n_g = [bytearray(64) for _ in range(100)]\n_g = None");
for (const cand of found.depth) {
  depthAt = cand;
  let live = -1;
  mp.registerJsModule("_try", { go: () => { live = measure(); } });
  const before = { v: 0 };
  mp.registerJsModule("_before", { set: (v) => { before.v = v; } });
  mp.runPython("import gc, _try, _before\n_before.set(gc.mem_alloc())\n_try.go()");
  if (live >= 0 && before.v - live > 6000) break;
  depthAt = -1;
}
if (depthAt < 0) throw new Error("external_call_depth not found: " + found.depth);

// -- the probes --------------------------------------------------------------------
const amount = () => i32()[found.amount[0]];
const stack = [];
let last = null;                        // the last measured point
const phases = [];
let phase = null;

function record(label) {
  const g = amount();
  const live = measure();
  const top = stack.slice(-4);
  if (last !== null && g >= last.g) {
    const ub = last.live + (g - last.g) * BLOCK;
    if (ub > phase.ub) {
      phase.ub = ub; phase.ubAt = top; phase.ubFrom = last.top; phase.ubGap = (g - last.g) * BLOCK;
    }
  }
  if (live > phase.lb) { phase.lb = live; phase.lbAt = top; }
  const at = stack.length ? stack[stack.length - 1] : 0;
  if (!(live <= phase.byFn[at])) phase.byFn[at] = live;
  phase.n += 1;
  if (phase.g0 < 0) { phase.g0 = g; phase.live0 = live; }
  phase.allocated = (g - phase.g0) * BLOCK;
  last = { g, live, top };
  void label;
}

mp.registerJsModule("_heap", {
  // an entry (+id) or exit (-id) of a wrapped function
  probe: (id) => {
    if (id > 0) stack.push(id); else stack.pop();
    if (phase !== null && (amount() - last.g) * BLOCK >= slack) record("");
    phase !== null && (phase.calls += 1);
  },
  begin: (name) => {
    phase = { name, lb: 0, ub: 0, lbAt: [], ubAt: [], n: 0, calls: 0, g0: -1, allocated: 0, byFn: {} };
    last = null;
    record("begin");
  },
  end: () => {
    record("end");
    phases.push(phase);
    phase = null;
  },
});

// -- the run -----------------------------------------------------------------------
const walk = (d, rel) => {
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = d + "/" + e.name, r = rel + "/" + e.name;
    if (e.isDirectory()) { mp.FS.mkdirTree("/b" + r); walk(p, r); }
    else if (e.name.endsWith(".mpy")) mp.FS.writeFile("/b" + r, fs.readFileSync(p));
  }
};
mp.FS.mkdirTree("/b");
walk(bundle, "");
mp.FS.writeFile("/in.json", fs.readFileSync(input));
try {
  mp.runPython("import sys\nsys.path.insert(0, '/b')");
  for (const part of fs.readFileSync(script, "utf8").split(/^# --$/m)) mp.runPython(part);
} catch (e) {
  out.push("@@ERR " + String(e.message || e).split("\n").slice(-3).join(" "));
}
console.log(out.join("\n"));
console.log("@@HEAP " + JSON.stringify({ phases, block: BLOCK, slack }));
