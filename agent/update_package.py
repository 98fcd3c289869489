"""Signed update packages: the byte format, and the checks a device makes
before it installs one (docs/firmware.md, "Update packages").

Portable (CPython and MicroPython): a board verifies its own updates. A
shared wire format like the batch and command formats (the utility's tools
write it, HES-lite reads its header, devices verify it), so it lives here.
Owns the layout, parsing any bytes into a ``Header`` or ``PackageError``,
the release-key signature check, the version order and the payload digest.
Must not know where a package comes from (``agent.update_fetch``), where it
is installed (``firmware.slots``) or how one is built
(``firmware.package_tools``).

Layout (integers big-endian)::

    0     8   magic b"WUMUPD1\\n"
    8     4   h = header length, 2..65536
    12    h   header: a JSON object, UTF-8 (below)
    12+h  64  signature: Ed25519(release secret key, DOMAIN || header bytes);
              64 zero bytes in a package nobody signed yet
    76+h  p   payload: the bundle's files, back to back, in the order of
              header["files"]

    DOMAIN = b"wum update v1" || 0x00

Header keys: ``format`` (1), ``target`` ("linux" | "micropython"),
``board`` (the bundle's board: "linux" or a board definition's name),
``version`` (dotted integers, "1.2.0"), ``key_id`` (16 hex: the first 8
bytes of SHA-256 of the release public key; "" unsigned), ``created``
(epoch s), ``files`` ([[path, size, sha256 hex], ...], paths relative, "/"
separated), ``payload_size`` and ``payload_sha256`` (hex). The signature
covers the header bytes exactly as they travel; the header covers every
file's hash and the whole payload's, so one Ed25519 verification of a few
hundred bytes and SHA-256 over the payload authenticate everything (a board
never runs Ed25519's SHA-512 over a whole bundle).

Refusal reasons (``UpdateRefused.reason``): ``malformed``, ``unsigned``,
``foreign_key``, ``revoked_key``, ``bad_signature``, ``tampered``,
``wrong_target``, ``wrong_board``, ``downgrade``, ``corrupt_download``.
"""

import hashlib
import json

from agent import AgentError, ed25519

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAGIC = b"WUMUPD1\n"
DOMAIN = b"wum update v1\x00"
SIG_LEN = 64
UNSIGNED = b"\x00" * SIG_LEN
MAX_HEADER = 65536
MAX_FILES = 4096
CHUNK = 2048
TARGETS = ("linux", "micropython")
REASONS = ("malformed", "unsigned", "foreign_key", "revoked_key", "bad_signature", "tampered",
           "wrong_target", "wrong_board", "downgrade", "corrupt_download")


class PackageError(AgentError):
    """Bytes that are not an update package (``reason`` malformed, ``why``)."""


class UpdateRefused(AgentError):
    """A package this device must not install; ``reason`` is one of
    ``REASONS``, the message says why in words a field engineer reads."""

    def __init__(self, reason: str, message: str, **fields: object) -> None:
        super().__init__("%s: %s" % (reason, message), reason=reason, **fields)


def _bad(why: str) -> PackageError:
    return PackageError("not an update package: %s" % why, reason="malformed", why=why)


def key_id(public: bytes) -> str:
    """16 hex: the first 8 bytes of SHA-256 of a 32-byte Ed25519 public key."""
    if len(public) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return hashlib.sha256(bytes(public)).digest()[:8].hex()


def parse_version(text: object) -> "tuple[int, ...]":
    """'1.2.0' -> (1, 2, 0); PackageError for anything but dotted integers."""
    if not isinstance(text, str) or not text or len(text) > 32:
        raise _bad("version must be dotted integers")
    parts = text.split(".")
    for p in parts:
        if not p or not p.isdigit() or (len(p) > 1 and p[0] == "0"):
            raise _bad("version %r must be dotted integers" % text)
    return tuple(int(p) for p in parts)


def newer(a: str, b: str) -> bool:
    """True when version text ``a`` is strictly newer than ``b``."""
    va, vb = list(parse_version(a)), list(parse_version(b))
    n = max(len(va), len(vb))
    va += [0] * (n - len(va))
    vb += [0] * (n - len(vb))
    return va > vb


def check_path(path: object) -> str:
    """A relative, '/'-separated path inside a bundle, or PackageError."""
    if not isinstance(path, str) or not path or len(path) > 200 or path[0] == "/" or \
            "\\" in path or "\x00" in path:
        raise _bad("bad file path %r" % (path,))
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise _bad("bad file path %r" % (path,))
    return path


def _is_hex(s: object, n: int) -> bool:
    if not isinstance(s, str) or len(s) != n:
        return False
    for c in s:
        if c not in "0123456789abcdef":
            return False
    return True


def _int(v: object, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > 0xFFFFFFFF:
        raise _bad("%s must be an integer 0..2^32-1" % what)
    return v


class Header:
    """A parsed header; ``raw`` the bytes the signature covers."""

    def __init__(self, doc: "dict[str, Any]", raw: bytes) -> None:
        self.raw = raw
        self.doc = doc
        if doc.get("format") != 1:
            raise _bad("unknown format %r" % (doc.get("format"),))
        self.target = doc.get("target")
        if self.target not in TARGETS:
            raise _bad("target must be one of %s" % ", ".join(TARGETS))
        self.board = doc.get("board")
        if not isinstance(self.board, str) or not 1 <= len(self.board) <= 64:
            raise _bad("board must be a name")
        version = doc.get("version")
        parse_version(version)
        self.version = str(version)
        self.key_id = doc.get("key_id", "")
        if self.key_id != "" and not _is_hex(self.key_id, 16):
            raise _bad("key_id must be 16 lowercase hex or empty")
        self.created = _int(doc.get("created", 0), "created")
        files = doc.get("files")
        if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
            raise _bad("files must be a list of 1..%d entries" % MAX_FILES)
        self.files = []
        seen = {}
        total = 0
        for f in files:
            if not isinstance(f, list) or len(f) != 3:
                raise _bad("a files entry is [path, size, sha256]")
            path = check_path(f[0])
            if path in seen:
                raise _bad("file %s listed twice" % path)
            seen[path] = True
            size = _int(f[1], "a file size")
            if not _is_hex(f[2], 64):
                raise _bad("the sha256 of %s must be 64 lowercase hex" % path)
            total += size
            self.files.append((path, size, f[2]))
        self.payload_size = _int(doc.get("payload_size"), "payload_size")
        if self.payload_size != total:
            raise _bad("payload_size %d is not the sum of the file sizes %d"
                       % (self.payload_size, total))
        self.payload_sha256 = doc.get("payload_sha256")
        if not _is_hex(self.payload_sha256, 64):
            raise _bad("payload_sha256 must be 64 lowercase hex")

    def __repr__(self) -> str:
        return "Header(%s %s %s, %d files, %d bytes, key %s)" % (
            self.target, self.board, self.version, len(self.files), self.payload_size,
            self.key_id or "none")

    def file(self, path: str) -> "tuple[str, int, str] | None":
        for f in self.files:
            if f[0] == path:
                return f
        return None


def encode_header(doc: "dict[str, Any]") -> bytes:
    """The header bytes for ``doc`` (sorted keys, no spaces). Tools only:
    a device never re-encodes, it verifies the bytes it received."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def assemble(header_raw: bytes, signature: bytes, payload_chunks: "Any") -> "list[bytes]":
    """The package as a list of byte strings (write them in order)."""
    if len(signature) != SIG_LEN:
        raise ValueError("a signature is 64 bytes")
    out = [MAGIC, len(header_raw).to_bytes(4, "big"), bytes(header_raw), bytes(signature)]
    out.extend(payload_chunks)
    return out


def _read(f: "Any", n: int, what: str) -> bytes:
    data = f.read(n)
    if data is None or len(data) != n:
        raise _bad("truncated in the %s" % what)
    return bytes(data)


def read_head(f: "Any") -> "tuple[Header, bytes, int]":
    """(Header, signature, offset of the payload) from a file object at its
    start; PackageError for anything malformed. Verifies nothing."""
    if _read(f, len(MAGIC), "magic") != MAGIC:
        raise _bad("wrong magic (not a wum update package)")
    n = int.from_bytes(_read(f, 4, "header length"), "big")
    if not 2 <= n <= MAX_HEADER:
        raise _bad("header length %d out of range" % n)
    raw = _read(f, n, "header")
    try:
        doc = json.loads(raw.decode())
    except (ValueError, UnicodeError, RuntimeError, MemoryError):
        raise _bad("header is not JSON") from None
    if not isinstance(doc, dict):
        raise _bad("header must be a JSON object")
    sig = _read(f, SIG_LEN, "signature")
    return Header(doc, raw), sig, len(MAGIC) + 4 + n + SIG_LEN


def check_signature(header: Header, signature: bytes, release_keys: "Any",
                    revoked: "Any" = ()) -> None:
    """The package is signed by one of ``release_keys`` (32-byte public keys)
    and that signature verifies; ``UpdateRefused`` otherwise."""
    if bytes(signature) == UNSIGNED or not header.key_id:
        raise UpdateRefused("unsigned", "package %s carries no release signature (sign it with "
                            "`wum firmware sign --key RELEASE_KEY`)" % header.version)
    if header.key_id in [r if isinstance(r, str) else key_id(r) for r in revoked]:
        raise UpdateRefused("revoked_key", "package %s is signed by release key %s, which this "
                            "device was told to distrust" % (header.version, header.key_id),
                            key_id=header.key_id)
    trusted = {}
    for k in release_keys:
        trusted[key_id(k)] = k
    public = trusted.get(header.key_id)
    if public is None:
        raise UpdateRefused("foreign_key", "package %s is signed by release key %s, which this "
                            "device does not trust (trusted: %s)" % (
                                header.version, header.key_id,
                                ", ".join(sorted(trusted)) or "none configured"),
                            key_id=header.key_id)
    if not ed25519.verify(public, DOMAIN + header.raw, bytes(signature)):
        raise UpdateRefused("bad_signature", "the signature of package %s does not verify "
                            "under release key %s: altered after signing, or forged"
                            % (header.version, header.key_id), key_id=header.key_id)


def check_fit(header: Header, target: str, board: "str | None", installed: "str | None"
              ) -> None:
    """The package is for this device and newer than ``installed``."""
    if header.target != target:
        raise UpdateRefused("wrong_target", "package %s is for %s, this device runs %s"
                            % (header.version, header.target, target))
    if board is not None and header.board != board:
        raise UpdateRefused("wrong_board", "package %s is built for board %s, this is %s"
                            % (header.version, header.board, board))
    if installed and not newer(header.version, installed):
        raise UpdateRefused("downgrade", "package version %s is not newer than the installed "
                            "%s (downgrades and reinstalls are refused)"
                            % (header.version, installed), installed=installed)


def check_payload(f: "Any", header: Header) -> None:
    """Read the payload from ``f`` (positioned at it) and compare its size,
    SHA-256 and each file's SHA-256 with the signed header."""
    total = hashlib.sha256()
    for path, size, want in header.files:
        h = hashlib.sha256()
        left = size
        while left:
            data = f.read(CHUNK if left > CHUNK else left)
            if not data:
                raise UpdateRefused("tampered", "payload ends inside %s: shorter than the signed "
                                    "header says" % path, file=path)
            h.update(data)
            total.update(data)
            left -= len(data)
        if h.digest().hex() != want:
            raise UpdateRefused("tampered", "%s differs from the hash the signature covers"
                                % path, file=path)
    if f.read(1):
        raise UpdateRefused("tampered", "bytes after the payload the signed header describes")
    if total.digest().hex() != header.payload_sha256:
        raise UpdateRefused("tampered", "the payload's SHA-256 differs from the signed header's")


def _chunks(f: "Any", size: int) -> "Any":
    left = size
    while left:
        data = f.read(CHUNK if left > CHUNK else left)
        if not data:
            raise UpdateRefused("tampered", "the payload ends early")
        left -= len(data)
        yield data


def payload_entries(f: "Any", header: Header) -> "Any":
    """The payload's files as (path, size, sha256 hex, chunks), read in order
    from ``f`` positioned at the payload (``agent.slots.Slots.install``)."""
    for path, size, sha in header.files:
        yield path, size, sha, _chunks(f, size)


def file_sha256(path: str, limit: "int | None" = None) -> "tuple[str, int]":
    """SHA-256 hex of a file's first ``limit`` bytes (all when None) and its size."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while limit is None or n < limit:
            data = f.read(CHUNK if limit is None else min(CHUNK, limit - n))
            if not data:
                break
            h.update(data)
            n += len(data)
    return h.digest().hex(), n


def verify_file(path: str, release_keys: "Any", target: str, board: "str | None",
                installed: "str | None", digest: "str | None" = None, size: "int | None" = None,
                revoked: "Any" = ()) -> Header:
    """Every check before an install, on a downloaded package file: the
    announced ``digest``/``size`` (the HES's signed command said them), the
    format, the release signature, target, board, version, payload. Returns
    the Header; raises UpdateRefused or PackageError."""
    if digest is not None:
        got, n = file_sha256(path)
        if (size is not None and n != size) or got != digest:
            raise UpdateRefused("corrupt_download", "the downloaded package (%d bytes, SHA-256 "
                                "%s...) is not the one announced (%s bytes, %s...)"
                                % (n, got[:16], size, digest[:16]))
    with open(path, "rb") as f:
        header, sig, _ = read_head(f)
        check_signature(header, sig, release_keys, revoked)
        check_fit(header, target, board, installed)
        check_payload(f, header)
    return header
