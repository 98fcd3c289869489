"""The utility's side of signed updates: release keys, packing a bundle
into an update package, signing it, inspecting one.

Owns the release key file (64 hex digits of an Ed25519 seed, owner-only)
and writing packages (docs/firmware.md, "Update packages"). CPython only.
Must not know how packages travel (``hes_lite.firmware``) or are installed
(``firmware.slots``). The release key is the utility's, kept offline from
the HES: the HES stores and serves packages, it never signs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from agent import ed25519
from agent import update_package as pkg
from firmware import FirmwareError
from firmware.flash import verify_bundle


def write_secret(path: Path, text: str) -> None:
    """``text`` into a new owner-only file (0600), refusing to overwrite one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def keygen(out: Path) -> bytes:
    """A new release key in ``out`` (0600, never overwritten); -> public key."""
    seed = os.urandom(32)
    try:
        write_secret(out, seed.hex() + "\n")
    except FileExistsError:
        raise FirmwareError("%s exists: a release key is never overwritten" % out) from None
    return ed25519.public_key(seed)


def load_secret(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
        seed = bytes.fromhex(text)
        if len(seed) != 32:
            raise ValueError
    except OSError as e:
        raise FirmwareError("cannot read release key %s: %s" % (path, e.strerror)) from None
    except ValueError:
        raise FirmwareError("%s is not a release key (64 hex digits)" % path) from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise FirmwareError("%s is readable by others (chmod 600 it): refusing to sign with a "
                            "release key that may have leaked" % path)
    return seed


def public_hex(text: str) -> bytes:
    """A release public key given as 64 hex digits."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise FirmwareError("a release public key is 64 hex digits, got %r" % text[:80])
    return key


def pack(bundle: Path, out: Path, created: int | None = None) -> pkg.Header:
    """An unsigned package of ``bundle`` (its manifest verified first) in ``out``."""
    manifest = verify_bundle(bundle, target=None)
    target, board, version = manifest.get("target"), manifest.get("board"), manifest.get("version")
    if target not in pkg.TARGETS:
        raise FirmwareError("bundle %s has target %r; packages are for %s"
                            % (bundle, target, " or ".join(pkg.TARGETS)))
    try:
        pkg.parse_version(version)
    except pkg.PackageError:
        raise FirmwareError("bundle %s has version %r: update packages need dotted integers "
                            "(1.2.0)" % (bundle, version)) from None
    names = sorted(list(manifest["files"]) + ["manifest.json"])
    files: list[list[Any]] = []
    total = hashlib.sha256()
    for rel in names:
        pkg.check_path(rel)
        data = (bundle / rel).read_bytes()
        total.update(data)
        files.append([rel, len(data), hashlib.sha256(data).hexdigest()])
    doc = {"format": 1, "target": target, "board": board, "version": version, "key_id": "",
           "created": int(time.time() if created is None else created), "files": files,
           "payload_size": sum(f[1] for f in files), "payload_sha256": total.hexdigest()}
    raw = pkg.encode_header(doc)
    _write(out, pkg.assemble(raw, pkg.UNSIGNED, ((bundle / rel).read_bytes() for rel in names)))
    return pkg.Header(doc, raw)


def _write(out: Path, parts: Any) -> None:
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        for p in parts:
            f.write(p)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)


def sign(package: Path, secret: bytes, out: Path | None = None) -> pkg.Header:
    """Sign ``package`` with a release key (its key id goes into the header,
    which the signature covers); written to ``out`` or in place."""
    with open(package, "rb") as f:
        header, _, offset = pkg.read_head(f)
        f.seek(offset)
        payload = f.read()
    public = ed25519.public_key(secret)
    doc = dict(header.doc, key_id=pkg.key_id(public))
    raw = pkg.encode_header(doc)
    signature = ed25519.sign(secret, pkg.DOMAIN + raw)
    _write(out or package, pkg.assemble(raw, signature, [payload]))
    return pkg.Header(doc, raw)


def inspect(package: Path, release_keys: list[bytes] | None = None) -> dict[str, Any]:
    """What a package says about itself, its digest, and (with keys) whether
    its signature and payload verify."""
    digest, size = pkg.file_sha256(str(package))
    with open(package, "rb") as f:
        header, sig, _ = pkg.read_head(f)
        out: dict[str, Any] = {
            "target": header.target, "board": header.board, "version": header.version,
            "key_id": header.key_id or None, "signed": sig != pkg.UNSIGNED,
            "files": len(header.files), "payload_size": header.payload_size,
            "sha256": digest, "size": size, "created": header.created}
        if release_keys is not None:
            try:
                pkg.check_signature(header, sig, release_keys)
                pkg.check_payload(f, header)
                out["verified"] = True
            except pkg.UpdateRefused as e:
                out["verified"] = False
                out["refused"] = str(e)
    return out


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True)
