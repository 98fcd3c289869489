// The simulated MicroPython board: the official WebAssembly MicroPython
// (npm @micropython/micropython-webassembly-pyscript) run under Node.js with
// its REPL on one pseudo-terminal and its machine.UART on another.
//
// Owns: the REPL as a board serves it (friendly REPL, raw REPL, raw-paste
// mode with flow control, Ctrl-C into running code, soft reset with Ctrl-D,
// hard reset by machine.reset(), boot.py then main.py), the board's flash
// filesystem (/flash, the working directory, kept across resets, capped at
// --flash-kb with ENOSPC), the `_board` module behind the ROM `machine`
// module (UART bytes, pins with the RS-485 driver-enable rule, idle/sleep,
// reset) and, with --cryptolib, a `cryptolib.aes` (ECB) backed by Node's
// OpenSSL. Knows nothing about meters or the agent.
//
// Started by hil/board.py, which opens both pty pairs and passes the master
// ends as file descriptors:
//   node hil/board.mjs --repl-fd N --uart-fd M --pkg PATH/micropython.mjs
//        [--flash-kb K] [--heap-kb H] [--de-pin ID|none] [--cryptolib] [--rom DIR]
// Prints one JSON line {"ready": true} on stdout when the board is up; logs go
// to stderr.
//
// The interpreter is synchronous (no asyncify in this build): while Python
// runs, Node's event loop is blocked, so the board's hardware calls read the
// ptys themselves (non-blocking reads, Atomics.wait for sleeping). Ctrl-C
// therefore reaches code that is in a hardware call (UART wait, idle,
// lightsleep) — which is where a firmware loop spends its time.

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import url from "node:url";

function parseArgs(argv) {
  const o = { flashKb: 1024, heapKb: 512, dePin: "4", cryptolib: false,
    rom: path.join(path.dirname(url.fileURLToPath(import.meta.url)), "board_rom") };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--repl-fd") o.replFd = parseInt(argv[++i], 10);
    else if (a === "--uart-fd") o.uartFd = parseInt(argv[++i], 10);
    else if (a === "--pkg") o.pkg = argv[++i];
    else if (a === "--flash-kb") o.flashKb = parseInt(argv[++i], 10);
    else if (a === "--heap-kb") o.heapKb = parseInt(argv[++i], 10);
    else if (a === "--de-pin") o.dePin = argv[++i];
    else if (a === "--cryptolib") o.cryptolib = true;
    else if (a === "--rom") o.rom = argv[++i];
    else throw new Error("unknown argument " + a);
  }
  if (o.dePin === "none") o.dePin = null;
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const FLASH = "/_flash";          // MEMFS folder behind the /flash VFS (board_rom/_flashfs.py)
const sleeper = new Int32Array(new SharedArrayBuffer(4));
const sleepMs = (ms) => Atomics.wait(sleeper, 0, 0, Math.max(0, ms));
const log = (msg) => process.stderr.write("board: " + msg + "\n");

// -- the two lines ----------------------------------------------------------
const replIn = [];          // bytes from the host, not yet given to the REPL
let uartRx = [];            // bytes from the bus, not yet read by machine.UART
const pins = new Map();
let uartBaud = 9600, txDoneAt = 0, droppedTx = 0, droppedRx = 0;
const chunk = Buffer.alloc(4096);

function readFd(fd) {
  try {
    const n = fs.readSync(fd, chunk, 0, chunk.length, null);
    return n > 0 ? chunk.subarray(0, n) : null;
  } catch (e) {
    if (e.code === "EAGAIN" || e.code === "EIO" || e.code === "EWOULDBLOCK") return null;
    throw e;
  }
}

// Write all of buf; if nobody drains the pty for 200 ms the rest is dropped,
// as a board's console drops output with no host attached.
function writeFd(fd, buf) {
  let off = 0, stuck = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
      stuck = 0;
    } catch (e) {
      if (e.code !== "EAGAIN" && e.code !== "EWOULDBLOCK") throw e;
      if (++stuck > 200) return;
      sleepMs(1);
    }
  }
}

function deHigh() {
  return opts.dePin !== null && pins.get(opts.dePin) === 1;
}

// Read what is waiting on both ptys. A Ctrl-C while code runs becomes a
// KeyboardInterrupt (when the interrupt character is set, as during execution).
function pumpLines(running) {
  for (let d = readFd(opts.replFd); d; d = readFd(opts.replFd)) {
    for (const c of d) {
      if (running && c === 3 && board.mp && board.mp._module._mp_hal_get_interrupt_char() === 3) {
        board.mp._module._mp_sched_keyboard_interrupt();
        board.kiScheduled = true;
      } else replIn.push(c);
    }
  }
  for (let d = readFd(opts.uartFd); d; d = readFd(opts.uartFd)) {
    if (deHigh()) { droppedRx += d.length; continue; }   // receiver disabled while driving
    for (const c of d) uartRx.push(c);
    if (uartRx.length > 65536) uartRx = uartRx.slice(-65536);
  }
}

// -- `_board`: what the ROM machine module calls ------------------------------
const boardApi = {
  uart_init: (baud) => { uartBaud = baud || uartBaud; return 0; },
  uart_write: (hex) => {
    const buf = Buffer.from(hex, "hex");
    const now = Date.now();
    txDoneAt = Math.max(now, txDoneAt) + (buf.length * 10000) / uartBaud;
    if (opts.dePin !== null && !deHigh()) { droppedTx += buf.length; return buf.length; }
    writeFd(opts.uartFd, buf);
    return buf.length;
  },
  uart_flush: () => { pumpLines(true); sleepMs(txDoneAt - Date.now()); pumpLines(true); return 0; },
  uart_txdone: () => (Date.now() >= txDoneAt ? 1 : 0),
  uart_any: () => { pumpLines(true); return uartRx.length; },
  uart_read: (n) => {
    pumpLines(true);
    const take = n < 0 ? uartRx.length : Math.min(n, uartRx.length);
    const out = Buffer.from(uartRx.slice(0, take));
    uartRx = uartRx.slice(take);
    return out.toString("hex");
  },
  pin: (id, v) => {
    if (v < 0) return pins.get(id) || 0;
    pins.set(id, v);
    if (id === opts.dePin && v === 1) pumpLines(true);   // what arrived before DE rose is kept
    return 0;
  },
  idle: (ms) => {
    const until = ms < 0 ? Infinity : Date.now() + ms;
    board.kiScheduled = false;
    do {
      pumpLines(true);
      if (board.kiScheduled) break;
      sleepMs(Math.min(5, until - Date.now()));
    } while (Date.now() < until);
    return 0;
  },
  reset: (hard) => { board.resetKind = hard ? "hard" : "soft"; return 0; },
  aes_ecb: (keyHex, blockHex) => {
    const key = Buffer.from(keyHex, "hex");
    const c = crypto.createCipheriv("aes-" + key.length * 8 + "-ecb", key, null);
    c.setAutoPadding(false);
    return Buffer.concat([c.update(Buffer.from(blockHex, "hex")), c.final()]).toString("hex");
  },
  stats: () => JSON.stringify({ dropped_tx: droppedTx, dropped_rx: droppedRx, baud: uartBaud }),
};

const CRYPTOLIB = `
import binascii, _board
class aes:
    def __init__(self, key, mode, IV=None):
        if mode != 1:
            raise ValueError("only ECB (mode 1) on this board")
        self._k = binascii.hexlify(key).decode()
    def encrypt(self, data, out=None):
        r = b""
        for i in range(0, len(data), 16):
            r += binascii.unhexlify(_board.aes_ecb(self._k, binascii.hexlify(data[i:i + 16]).decode()))
        if out is not None:
            out[:len(r)] = r
            return None
        return r
`;

// -- the flash filesystem -------------------------------------------------------
function walk(FS, dir, out) {
  for (const name of FS.readdir(dir)) {
    if (name === "." || name === "..") continue;
    const p = dir + "/" + name;
    const st = FS.stat(p);
    if (FS.isDir(st.mode)) { out.push([p, null]); walk(FS, p, out); }
    else out.push([p, FS.readFile(p)]);
  }
  return out;
}

function flashUsed(FS) {
  let total = 0;
  for (const [, data] of walk(FS, FLASH, [])) if (data) total += data.length;
  return total;
}

function capFlash(FS) {
  const quota = opts.flashKb * 1024;
  const write = FS.write;
  FS.write = function (stream, buffer, offset, length, position, canOwn) {
    if (stream.path && stream.path.startsWith(FLASH + "/") && length > 0) {
      const size = stream.node.usedBytes || 0;
      const at = (stream.flags & 1024) ? size : (position ?? stream.position);
      const grow = Math.max(0, at + length - size);
      if (grow && flashUsed(FS) + grow > quota) throw new FS.ErrnoError(51);   // ENOSPC (Emscripten's number)
    }
    return write.call(this, stream, buffer, offset, length, position, canOwn);
  };
}

// -- the interpreter and its REPL ------------------------------------------------
const mpy = await import(url.pathToFileURL(opts.pkg).href);
const PASTE_WINDOW = 2048;

const board = {
  mp: null, raw: false, lineLen: 0, held: [], paste: null, dropOK: 0, resetKind: null,
  outText: "",
  kiScheduled: false,
  out(bytes) {
    let buf = Buffer.from(bytes);
    if (this.dropOK) {              // raw-paste: the interpreter's "OK" is not sent
      const n = Math.min(this.dropOK, buf.length);
      buf = buf.subarray(n);
      this.dropOK -= n;
    }
    if (!buf.length) return;
    this.outText = (this.outText + buf.toString("latin1")).slice(-64);
    if (this.outText.endsWith("raw REPL; CTRL-B to exit\r\n>")) this.raw = true;
    writeFd(opts.replFd, buf);
  },
  async start(kind) {
    const files = this.mp ? walk(this.mp.FS, FLASH, []) : [];
    if (kind !== "soft") this.raw = false;      // a hard reset comes up in the friendly REPL
    this.mp = null;
    const mp = await mpy.loadMicroPython({
      heapsize: opts.heapKb * 1024, linebuffer: false,
      stdout: (b) => this.out(b), stderr: (b) => this.out(b),
    });
    mp.registerJsModule("_board", boardApi);
    mp.FS.mkdirTree(FLASH);
    mp.FS.mkdirTree("/rom");
    for (const name of fs.readdirSync(opts.rom)) {
      if (name.endsWith(".py") && name !== "__init__.py") {
        mp.FS.writeFile("/rom/" + name, fs.readFileSync(path.join(opts.rom, name)));
      }
    }
    if (opts.cryptolib) mp.FS.writeFile("/rom/cryptolib.py", CRYPTOLIB);
    for (const [p, data] of files) {
      if (data === null) mp.FS.mkdirTree(p); else mp.FS.writeFile(p, data);
    }
    capFlash(mp.FS);
    this.mp = mp;
    this.resetKind = null;
    pins.clear();
    mp.runPython("import sys\nsys.path.append('/rom')\nimport _flashfs\n_flashfs.mount()\ndel _flashfs");
    if (kind !== "power-on") this.out(Buffer.from("MPY: soft reboot\r\n"));
    this.runFile("boot.py");
    if (!this.raw) this.runFile("main.py");
    // the REPL: its banner only in friendly mode; raw mode is re-entered quietly
    const keep = this.out;
    if (this.raw) this.out = () => {};
    mp.replInit();
    this.out = keep;
    if (this.raw) { this.raw = false; this.feed(1); }
    if (this.resetKind) await this.start(this.resetKind);
  },
  runFile(name) {
    if (this.resetKind) return;
    try {
      this.mp.runPython(`
def _wum_run(name):
    import os, sys
    try:
        os.stat(name)
    except OSError:
        return
    import micropython
    micropython.kbd_intr(3)
    try:
        with open(name) as f:
            src = f.read()
        exec(src, {"__name__": "__main__"})
    except SystemExit:
        pass
    except BaseException as e:
        sys.print_exception(e)
    micropython.kbd_intr(-1)
_wum_run(${JSON.stringify(name)})
del _wum_run
`);
    } catch (e) {
      log("running " + name + ": " + (e && e.message || e));
    }
  },
  feed(c) {
    if (this.raw) {
      if (c === 2) this.raw = false;
      this.lineLen = (c === 1 || c === 3 || c === 4) ? 0 : this.lineLen + 1;
    }
    return this.mp.replProcessChar(c);
  },
  // One byte from the host; returns true when the board must reset.
  take(c) {
    if (this.paste) return this.takePaste(c);
    if (this.held.length || (this.raw && this.lineLen === 0 && c === 5)) {
      this.held.push(c);
      const want = [5, 0x41, 1];
      if (this.held.every((b, i) => b === want[i])) {
        if (this.held.length < 3) return false;
        this.held = [];
        this.paste = { code: [], since: 0 };
        this.out(Buffer.from([0x52, 0x01, PASTE_WINDOW & 0xff, PASTE_WINDOW >> 8]));
        return false;
      }
      const bytes = this.held;
      this.held = [];
      for (const b of bytes) if (this.feed(b)) return true;
      return false;
    }
    return this.feed(c) !== 0 || this.resetKind !== null;
  },
  takePaste(c) {
    const p = this.paste;
    if (c !== 4) {
      p.code.push(c);
      if (++p.since >= PASTE_WINDOW) { p.since = 0; this.out(Buffer.from([1])); }
      return false;
    }
    this.paste = null;
    this.out(Buffer.from([4]));                 // end of data acknowledged
    for (const b of p.code) this.feed(b);
    this.dropOK = 2;
    const r = this.feed(4);
    this.dropOK = 0;
    return r !== 0 || this.resetKind !== null;
  },
};

let busy = false;
async function serve() {
  if (busy) return;
  busy = true;
  try {
    pumpLines(false);
    while (replIn.length) {
      const c = replIn.shift();
      if (board.take(c)) {
        const kind = board.resetKind === "hard" ? "hard" : "soft";
        replIn.length = 0;
        await board.start(kind);
      }
    }
  } catch (e) {
    log("error: " + (e && e.stack || e));
  } finally {
    busy = false;
  }
}

await board.start("power-on");
process.stdout.write(JSON.stringify({ ready: true, flash_kb: opts.flashKb, heap_kb: opts.heapKb }) + "\n");
setInterval(serve, 2);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(0));
