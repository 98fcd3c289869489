// The manifest of portable files (tests/mpy/portable.txt) and the in-memory
// tree the runner copies into MicroPython. Knows the manifest syntax, nothing
// about MicroPython itself.
//
// Syntax, one entry a line (paths relative to the repo root, `#` comments):
//   drivers/obis.py        a portable module: must import under MicroPython
//   ?drivers/modbus/rtu.py  optional: copied; an import failure is reported, not fatal
//   drivers/dlms/           a folder: every file below it, .py files optional modules
//   drivers/dlms/*.py       a glob in one folder (only `*`): matches are optional modules
//   tests/vectors/crypto/   data files are copied the same way (readable by tests)
// The __init__.py of every package above a copied module is copied too.

import fs from "node:fs";
import path from "node:path";
import url from "node:url";

export const MPY_PKG = "@micropython/micropython-webassembly-pyscript";

export function repoRoot() {
  return path.resolve(path.dirname(url.fileURLToPath(import.meta.url)), "..", "..");
}

export function pkgPath(repo) {
  const base = process.env.WUM_MPY_NODE_MODULES || path.join(repo, ".cache", "node", "node_modules");
  return path.join(base, MPY_PKG, "micropython.mjs");
}

function walk(dir) {
  const out = [];
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    if (ent.name === "__pycache__" || ent.name.startsWith(".")) continue;
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) out.push(...walk(p));
    else if (ent.isFile()) out.push(p);
  }
  return out.sort();
}

function globOne(repo, pattern) {
  const dir = path.posix.dirname(pattern);
  const re = new RegExp("^" + path.posix.basename(pattern)
    .replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*") + "$");
  const abs = path.join(repo, dir);
  if (!fs.existsSync(abs)) return [];
  return fs.readdirSync(abs).filter((n) => re.test(n)).sort()
    .map((n) => path.join(abs, n)).filter((p) => fs.statSync(p).isFile());
}

export function moduleName(rel) {
  let m = rel.replace(/\.py$/, "").split("/");
  if (m[m.length - 1] === "__init__") m = m.slice(0, -1);
  return m.join(".");
}

export function readManifest(repo) {
  const file = path.join(repo, "tests", "mpy", "portable.txt");
  const files = new Map();   // rel -> {optional}
  const problems = [];
  for (const raw of fs.readFileSync(file, "utf8").split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    if (!line) continue;
    let entry = line, optional = false;
    if (entry.startsWith("?")) { optional = true; entry = entry.slice(1).trim(); }
    let matches;
    if (entry.endsWith("/")) {
      const abs = path.join(repo, entry);
      matches = fs.existsSync(abs) ? walk(abs) : [];
      optional = true;
    } else if (entry.includes("*")) {
      matches = globOne(repo, entry);
      optional = true;
    } else {
      const abs = path.join(repo, entry);
      matches = fs.existsSync(abs) ? [abs] : [];
      if (!matches.length && !optional) problems.push(entry);
    }
    for (const abs of matches) {
      const rel = path.relative(repo, abs).split(path.sep).join("/");
      const prev = files.get(rel);
      files.set(rel, { optional: prev ? prev.optional && optional : optional });
    }
  }
  if (problems.length) throw new Error("portable.txt names missing files: " + problems.join(", "));
  const modules = [];
  for (const [rel, { optional }] of files) {
    if (rel.endsWith(".py")) modules.push({ rel, name: moduleName(rel), optional });
  }
  return { files, modules };
}

// -> Map(rel -> Buffer): manifest files, their packages' __init__.py, every
// .py file in tests/portable (test files and their helpers) and extra test files.
export function buildTree(repo, manifest, testFiles) {
  const tree = new Map();
  const add = (rel) => {
    if (tree.has(rel)) return;
    const abs = path.join(repo, rel);
    if (fs.existsSync(abs)) tree.set(rel, fs.readFileSync(abs));
  };
  for (const rel of manifest.files.keys()) {
    add(rel);
    if (!rel.endsWith(".py")) continue;
    const parts = rel.split("/");
    for (let i = 1; i < parts.length; i++) {
      const init = parts.slice(0, i).join("/") + "/__init__.py";
      if (!init.startsWith("tests/")) add(init);
    }
  }
  const portable = path.join(repo, "tests", "portable");
  if (fs.existsSync(portable)) {
    for (const n of fs.readdirSync(portable).sort()) {
      if (n.endsWith(".py")) add("tests/portable/" + n);
    }
  }
  for (const f of testFiles) add(f.split(path.sep).join("/"));
  return tree;
}
