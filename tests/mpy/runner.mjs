// Runs the portable tests of this repo inside the real MicroPython interpreter
// (the official WebAssembly port, npm @micropython/micropython-webassembly-pyscript,
// installed by `make mpy` into .cache/node/node_modules) under Node.js.
//
// Owns: building the interpreter's in-memory filesystem (a mirror of the repo
// under /repo holding only the files named in tests/mpy/portable.txt and the
// portable test files), running every `def test_*()` of each test file in a
// fresh interpreter, and reporting. Knows nothing about what the tests test.
//
// Usage:
//   node tests/mpy/runner.mjs [--repo DIR] [--heap MB] [--check-imports] [--list]
//                             [tests/portable/test_x.py ...]
// With no test files, runs every tests/portable/test_*.py.
// --check-imports imports every module of the manifest instead of running tests.
// Output: one line per test, "PASS <file>::<test> (<ms> ms)" or "FAIL <file>::<test>"
// followed by the MicroPython traceback; a summary line; exit 0 when all pass,
// 1 on any failure, 2 when the runner itself cannot start.

import fs from "node:fs";
import path from "node:path";
import url from "node:url";
import { buildTree, readManifest, repoRoot, pkgPath } from "./manifest.mjs";

function parseArgs(argv) {
  const opts = { repo: repoRoot(), heap: 32, checkImports: false, list: false, files: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--repo") opts.repo = path.resolve(argv[++i]);
    else if (a === "--heap") opts.heap = parseInt(argv[++i], 10);
    else if (a === "--check-imports") opts.checkImports = true;
    else if (a === "--list") opts.list = true;
    else if (a === "-h" || a === "--help") {
      console.log("usage: node tests/mpy/runner.mjs [--repo DIR] [--heap MB] " +
        "[--check-imports] [--list] [test files...]");
      process.exit(0);
    } else opts.files.push(a);
  }
  return opts;
}

function defaultTestFiles(repo) {
  const dir = path.join(repo, "tests", "portable");
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir)
    .filter((n) => n.startsWith("test_") && n.endsWith(".py"))
    .sort()
    .map((n) => path.join("tests", "portable", n));
}

async function freshInterpreter(mpyModule, heapMB, out) {
  const mp = await mpyModule.loadMicroPython({
    heapsize: heapMB * 1024 * 1024,
    stdout: (line) => out.push(line),
    stderr: (line) => out.push(line),
  });
  return mp;
}

function populate(mp, tree) {
  for (const [rel, data] of tree) {
    const dest = "/repo/" + rel;
    mp.FS.mkdirTree(path.posix.dirname(dest));
    mp.FS.writeFile(dest, data);
  }
}

// The Python side: runs in MicroPython, prints machine-readable lines that the
// Node side turns into the report. Kept free of anything CPython-only.
const HARNESS = `
import sys, io, time
sys.path[:0] = ['/repo', '/repo/tests/portable']
def _wum_run(modname):
    def tb(e):
        s = io.StringIO()
        sys.print_exception(e, s)
        return s.getvalue()
    try:
        mod = __import__(modname)
    except BaseException as e:
        print('@@IMPORTFAIL ' + modname)
        print(tb(e))
        return
    names = sorted(n for n in dir(mod) if n.startswith('test_'))
    names = [n for n in names if callable(getattr(mod, n))]
    if not names:
        print('@@NOTESTS ' + modname)
    for n in names:
        t0 = time.ticks_ms()
        try:
            getattr(mod, n)()
        except BaseException as e:
            print('@@FAIL %s %d' % (n, time.ticks_diff(time.ticks_ms(), t0)))
            print(tb(e))
            continue
        print('@@PASS %s %d' % (n, time.ticks_diff(time.ticks_ms(), t0)))
def _wum_import(modname):
    try:
        __import__(modname)
        print('@@IMPORTOK ' + modname)
    except BaseException as e:
        s = io.StringIO()
        sys.print_exception(e, s)
        print('@@IMPORTERR ' + modname)
        print(s.getvalue())
`;

function report(file, lines) {
  // Turns the harness's lines into PASS/FAIL lines; returns [passed, failed].
  let passed = 0, failed = 0, current = null;
  const flush = () => {
    if (current && current.body.length) console.log(current.body.join("\n").replace(/^/gm, "    "));
    current = null;
  };
  for (const line of lines) {
    const m = /^@@(PASS|FAIL|IMPORTFAIL|NOTESTS) (\S+)(?: (\d+))?/.exec(line);
    if (!m) {
      if (current) current.body.push(line);
      else console.log("    | " + line);
      continue;
    }
    flush();
    const [, kind, name, ms] = m;
    if (kind === "PASS") { passed++; console.log(`PASS ${file}::${name} (${ms} ms)`); }
    else if (kind === "FAIL") { failed++; console.log(`FAIL ${file}::${name} (${ms} ms)`); current = { body: [] }; }
    else if (kind === "IMPORTFAIL") { failed++; console.log(`FAIL ${file}::<import>`); current = { body: [] }; }
    else { failed++; console.log(`FAIL ${file}::<no test_* functions>`); }
  }
  flush();
  return [passed, failed];
}

async function runFile(mpyModule, opts, tree, file) {
  const lines = [];
  const mp = await freshInterpreter(mpyModule, opts.heap, lines);
  populate(mp, tree);
  const modname = path.basename(file, ".py");
  const dir = "/repo/" + path.posix.dirname(file.split(path.sep).join("/"));
  try {
    mp.runPython(HARNESS);
    mp.runPython(`import sys\nif ${JSON.stringify(dir)} not in sys.path: sys.path.insert(0, ${JSON.stringify(dir)})`);
    mp.runPython(`_wum_run(${JSON.stringify(modname)})`);
  } catch (e) {
    lines.push(`@@IMPORTFAIL ${modname}`, "interpreter error: " + String(e && e.message || e));
  }
  return report(file, lines);
}

async function checkImports(mpyModule, opts, tree, modules) {
  let failed = 0;
  for (const m of modules) {
    const lines = [];
    const mp = await freshInterpreter(mpyModule, opts.heap, lines);
    populate(mp, tree);
    mp.runPython(HARNESS);
    mp.runPython(`_wum_import(${JSON.stringify(m.name)})`);
    const ok = lines.some((l) => l === "@@IMPORTOK " + m.name);
    if (ok) console.log(`PASS import ${m.name}`);
    else if (m.optional) {
      const why = lines.filter((l) => l.trim() && !l.startsWith("@@")).pop() || "";
      console.log(`SKIP import ${m.name} (optional entry, not portable: ${why.trim()})`);
    }
    else {
      failed++;
      console.log(`FAIL import ${m.name}`);
      console.log(lines.filter((l) => !l.startsWith("@@")).join("\n").replace(/^/gm, "    "));
    }
  }
  return failed;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const pkg = pkgPath(opts.repo);
  if (!fs.existsSync(pkg)) {
    console.error(`runner: MicroPython package not found at ${pkg} (run \`make mpy\`)`);
    process.exit(2);
  }
  const mpyModule = await import(url.pathToFileURL(pkg).href);
  const manifest = readManifest(opts.repo);
  const files = opts.files.length ? opts.files.map((f) => path.relative(opts.repo, path.resolve(f)))
    : defaultTestFiles(opts.repo);
  const tree = buildTree(opts.repo, manifest, files);
  if (opts.list) {
    for (const [rel] of tree) console.log(rel);
    return 0;
  }
  if (opts.checkImports) {
    const failed = await checkImports(mpyModule, opts, tree, manifest.modules);
    console.log(`== imports: ${manifest.modules.length - failed} ok or optional, ${failed} failed`);
    return failed ? 1 : 0;
  }
  if (!files.length) {
    console.log("runner: no portable test files");
    return 1;
  }
  let passed = 0, failed = 0;
  for (const f of files) {
    const [p, q] = await runFile(mpyModule, opts, tree, f);
    passed += p; failed += q;
  }
  console.log(`== MicroPython: ${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

main().then((rc) => process.exit(rc), (e) => {
  console.error("runner: " + (e && e.stack || e));
  process.exit(2);
});
