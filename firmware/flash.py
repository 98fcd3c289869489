"""``wum flash --port``: a bundle and a provisioned config onto a MicroPython
board with mpremote (as a library), every file's SHA-256 checked on the board.

Owns verifying a bundle against its manifest before anything is copied
(a missing, extra-but-unlisted-is-fine, resized or altered file refuses the
bundle), the on-board layout (docs/firmware.md: ``main.py`` at the root,
the bundle in ``wum/<slot>/``, ``wum/boot.json`` naming the active slot,
the config in ``config/``, the agent's data in ``data/``) and the on-board
hash check. CPython only. Must not know what the files contain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware import FirmwareError

CHUNK = 1024


class BundleRejected(FirmwareError):
    """The bundle does not match its manifest (fields: bundle, file, reason)."""


def verify_bundle(bundle: Path, target: str | None = "micropython") -> dict[str, Any]:
    """The manifest, once every file it lists is there with its size and hash
    (and, unless ``target`` is None, the bundle is for ``target``)."""
    try:
        manifest: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleRejected("%s: no readable manifest.json (%s)" % (bundle, e),
                             bundle=str(bundle), reason="manifest") from e
    total = 0
    for rel, info in sorted(files.items()):
        p = bundle / rel
        if ".." in Path(rel).parts or rel.startswith("/"):
            raise BundleRejected("%s: manifest names a path outside the bundle: %s"
                                 % (bundle, rel), bundle=str(bundle), file=rel, reason="path")
        if not p.is_file():
            raise BundleRejected("%s: %s is listed in the manifest but missing" % (bundle, rel),
                                 bundle=str(bundle), file=rel, reason="missing")
        data = p.read_bytes()
        if len(data) != info.get("size") or hashlib.sha256(data).hexdigest() != info.get("sha256"):
            raise BundleRejected("%s: %s does not match its manifest hash (tampered or corrupt)"
                                 % (bundle, rel), bundle=str(bundle), file=rel, reason="hash")
        total += len(data)
    if total != manifest.get("total_size"):
        raise BundleRejected("%s: total size %d differs from the manifest's %s"
                             % (bundle, total, manifest.get("total_size")),
                             bundle=str(bundle), reason="size")
    if target is not None and manifest.get("target") != target:
        raise BundleRejected("%s: a %s bundle, not one for %s"
                             % (bundle, manifest.get("target"),
                                "a MicroPython board" if target == "micropython" else target),
                             bundle=str(bundle), reason="target")
    return manifest


def plan(bundle: Path, manifest: dict[str, Any], config: Path, slot: str
         ) -> list[tuple[Path, str]]:
    """(local file, board path) pairs, in copy order."""
    out = [(bundle / rel, "wum/%s/%s" % (slot, rel)) for rel in sorted(manifest["files"])
           if rel != manifest.get("entry")]
    out.append((bundle / "manifest.json", "wum/%s/manifest.json" % slot))
    for p in sorted(config.rglob("*")):
        if p.is_file():
            out.append((p, "config/" + p.relative_to(config).as_posix()))
    out.append((bundle / manifest.get("entry", "main.py"), "main.py"))
    return out


def flash(port: str, bundle: Path, config: Path, slot: str = "a",
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Copy, then hash every file on the board; raises FirmwareError on any
    mismatch. -> {"files", "bytes", "slot", "verified"}."""
    manifest = verify_bundle(bundle)
    if not (config / "device.json").is_file():
        raise FirmwareError("%s has no device.json (a provisioned config folder)" % config)
    try:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport
    except ImportError as e:
        raise FirmwareError("mpremote is not installed (pip install 'wum[firmware]')") from e
    pairs = plan(bundle, manifest, config, slot)
    try:
        t = SerialTransport(port, baudrate=115200)
    except TransportError as e:
        raise FirmwareError("cannot open %s: %s" % (port, e), port=port) from e
    try:
        t.enter_raw_repl(soft_reset=True)
        dirs = {"wum", "wum/" + slot, "config", "data"}
        for _, dest in pairs:
            parts = dest.split("/")[:-1]
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        t.exec("import os\nfor d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass"
               % sorted(dirs, key=lambda d: (d.count("/"), d)))
        sent = 0
        for src, dest in pairs:
            data = src.read_bytes()
            t.fs_writefile(dest, data, chunk_size=CHUNK)
            sent += len(data)
        t.fs_writefile("wum/boot.json", json.dumps({"active": slot}).encode())
        for src, dest in pairs:
            want = hashlib.sha256(src.read_bytes()).digest()
            got = t.fs_hashfile(dest, "sha256")
            if got != want:
                raise FirmwareError("%s on the board does not match %s (hash %s, want %s)"
                                    % (dest, src, got.hex(), want.hex()), file=dest)
        t.exit_raw_repl()
    except TransportError as e:
        raise FirmwareError("flashing over %s failed: %s" % (port, e), port=port) from e
    finally:
        t.close()
    log("flashed %d files, %d bytes, slot %s, every SHA-256 verified on the board"
        % (len(pairs), sent, slot))
    return {"files": len(pairs), "bytes": sent, "slot": slot, "verified": len(pairs)}
