"""Signed update packages at the HES: publishing them, announcing one in an
``update`` command, and serving its bytes in ranges.

Owns what the HES checks of a package (its header parses; it is signed —
an unsigned package is refused unless the caller insists; with the utility's
release public keys given, the signature and payload must verify too — the
HES never signs packages: the release key stays with the utility), the
arguments an ``update`` command announces (``announce``: the package's id,
version, SHA-256, size, target and board, from the store, so an operator
names a package and cannot mistype its digest), and opening a device's
fetch request (envelope kind 5 under the device's ``fetch`` key: the device
is authenticated, nothing is replay-checked — a fetch is an idempotent read
of a package whose integrity the device checks itself).
Must not know HTTP or SQL.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent import envelope
from agent import update_package as pkg
from hes_lite import HesError
from hes_lite.audit import Auditor
from hes_lite.store import FirmwareRecord, Store

MAX_CHUNK = 64 * 1024
ANNOUNCED = ("package", "version", "sha256", "size", "target", "board")


class FirmwareRefused(HesError):
    """A package, an announcement or a fetch was refused: ``status`` (HTTP),
    ``reason`` (a word), ``detail`` (words)."""

    status: int
    reason: str
    detail: str

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__("%s: %s" % (reason, detail), status=status, reason=reason,
                         detail=detail)


def publish(store: Store, data: bytes, actor: str, auditor: Auditor | None = None,
            release_keys: Sequence[bytes] = (), allow_unsigned: bool = False,
            clock: Callable[[], float] = time.time) -> tuple[FirmwareRecord, bool]:
    """Store a package -> (record, new). ``FirmwareRefused`` (audited) when
    it is malformed, unsigned (unless ``allow_unsigned``) or, with
    ``release_keys``, does not verify."""
    try:
        rec = _check(data, actor, release_keys, allow_unsigned, clock())
    except FirmwareRefused as e:
        if auditor is not None:
            auditor.record(actor, "firmware.publish", "", "refused", reason=e.reason,
                           detail=e.detail)
        raise
    new = store.add_firmware(rec, data)
    if auditor is not None:
        auditor.record(actor, "firmware.publish", rec.id, "ok" if new else "duplicate",
                       version=rec.version, package_target=rec.target, board=rec.board,
                       key_id=rec.key_id, sha256=rec.sha256, size=rec.size)
    return (rec if new else store.firmware(rec.id) or rec), new


def _check(data: bytes, actor: str, release_keys: Sequence[bytes], allow_unsigned: bool,
           now: float) -> FirmwareRecord:
    f = io.BytesIO(data)
    try:
        header, sig, _ = pkg.read_head(f)
        if release_keys:
            pkg.check_signature(header, sig, release_keys)
            pkg.check_payload(f, header)
        elif not allow_unsigned and (sig == pkg.UNSIGNED or not header.key_id):
            raise pkg.UpdateRefused("unsigned", "package %s carries no release signature "
                                    "(sign it with `wum firmware sign`)" % header.version)
        elif len(data) != f.tell() + header.payload_size:
            raise pkg.UpdateRefused("tampered", "the file is %d bytes, its header describes %d"
                                    % (len(data), f.tell() + header.payload_size))
    except pkg.PackageError as e:
        raise FirmwareRefused(422, "malformed", str(e)) from None
    except pkg.UpdateRefused as e:
        raise FirmwareRefused(422, str(e.fields.get("reason")), str(e)) from None
    digest = hashlib.sha256(data).hexdigest()
    return FirmwareRecord(digest[:16], digest, len(data), str(header.target), str(header.board),
                          header.version, str(header.key_id), now, actor)


def announce(store: Store, args: Any) -> dict[str, Any]:
    """The arguments an ``update`` command carries, from ``{"package": id}``
    (fields given besides it must agree with the stored package)."""
    if not isinstance(args, dict) or not isinstance(args.get("package"), str):
        raise FirmwareRefused(422, "bad_args", 'update needs {"package": "<package id>"} '
                                               "(hes-lite firmware list)")
    extra = sorted(set(args) - set(ANNOUNCED))
    if extra:
        raise FirmwareRefused(422, "bad_args", "unknown field(s) %s" % ", ".join(extra))
    rec = store.firmware(args["package"])
    if rec is None:
        raise FirmwareRefused(404, "unknown_package", args["package"])
    out = {"package": rec.id, "version": rec.version, "sha256": rec.sha256, "size": rec.size,
           "target": rec.target, "board": rec.board}
    for k, v in args.items():
        if out[k] != v:
            raise FirmwareRefused(422, "bad_args", "%s %r differs from the published package's "
                                  "%r" % (k, v, out[k]))
    return out


def open_fetch(store: Store, sealed: bytes, package_id: str) -> tuple[str, int, int]:
    """A device's fetch request -> (device, offset, length); ``FirmwareRefused``
    with the envelope's reason (counted by the caller) when it is not one."""
    try:
        h = envelope.peek(sealed)
    except envelope.EnvelopeError as e:
        raise FirmwareRefused(400, str(e.fields.get("reason")), "not an envelope") from None
    if h.kind != envelope.KIND_FETCH:
        raise FirmwareRefused(400, "bad_kind", "a fetch is envelope kind %d"
                              % envelope.KIND_FETCH)
    rec = store.key(h.device, h.key_epoch)
    if rec is None or rec.revoked:
        raise FirmwareRefused(403, "unknown_key" if rec is None else "revoked_key", h.device)
    ring = envelope.Keyring(purpose=envelope.PURPOSE_FETCH)
    ring.add(h.device, rec.root_key, h.key_epoch)
    try:
        payload = envelope.open_envelope(sealed, ring).payload
        doc = json.loads(bytes(payload).decode())
    except envelope.EnvelopeError as e:
        raise FirmwareRefused(400, str(e.fields.get("reason")), h.device) from None
    except (ValueError, UnicodeError):
        raise FirmwareRefused(400, "bad_request", "the fetch request is not JSON") from None
    if not isinstance(doc, dict) or doc.get("package") != package_id:
        raise FirmwareRefused(400, "bad_request", "the request names another package")
    off, n = doc.get("offset"), doc.get("length")
    if not isinstance(off, int) or not isinstance(n, int) or isinstance(off, bool) or \
            isinstance(n, bool) or off < 0 or not 1 <= n <= MAX_CHUNK:
        raise FirmwareRefused(400, "bad_request", "offset >= 0 and length 1..%d" % MAX_CHUNK)
    return h.device, off, n


def fetch_request(device: str, root_key: bytes, package_id: str, offset: int, length: int,
                  sealer: envelope.Sealer | None = None) -> bytes:
    """What a device sends (tests and tools; the agent has its own sealer)."""
    s = sealer or envelope.Sealer(device, root_key, envelope.MemoryBootStore(),
                                  purpose=envelope.PURPOSE_FETCH)
    doc = {"package": package_id, "offset": offset, "length": length}
    return s.seal(json.dumps(doc).encode(), envelope.KIND_FETCH)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """An HTTP ``Range: bytes=…`` (RFC 9110 §14.1.2, one range) -> (first,
    last) inclusive; None for no usable range (serve it whole);
    ``FirmwareRefused(416)`` when it cannot be satisfied."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_s, dash, last_s = header[6:].strip().partition("-")
    if not dash or not (first_s.isdigit() or first_s == "") or not (
            last_s.isdigit() or last_s == "") or (first_s == last_s == ""):
        return None
    if first_s == "":                       # a suffix: the last N bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise FirmwareRefused(416, "range", "empty suffix range")
        return max(0, size - n), size - 1
    first = int(first_s)
    if last_s != "" and int(last_s) < first:
        return None                         # not a valid range-spec: ignored (§14.2)
    if first >= size:
        raise FirmwareRefused(416, "range", "%s of a %d-byte package" % (header, size))
    return first, size - 1 if last_s == "" else min(int(last_s), size - 1)
