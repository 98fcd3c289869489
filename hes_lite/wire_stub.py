"""PROVISIONAL stand-in for ``agent.batch`` / ``agent.envelope`` until the
agent's wire formats land; ``hes_lite.wire`` uses it only when those modules
cannot be imported. Same shape (header with device / key epoch / counter,
AES-CCM with an HKDF-derived key, replay window, typed reasons), not the same
bytes. Delete once ``agent.envelope`` exists.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"WS"
VERSION = 1
_HEAD = struct.Struct(">2sBB")  # magic, version, device id length
_TAIL = struct.Struct(">IQI")   # key epoch, counter, ciphertext length
WINDOW = 64


class StubError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def header(data: bytes) -> tuple[str, int, int, int]:
    """-> (device, epoch, counter, header length)."""
    if len(data) < _HEAD.size:
        raise StubError("truncated")
    magic, version, dlen = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise StubError("bad_version")
    end = _HEAD.size + dlen + _TAIL.size
    if len(data) < end:
        raise StubError("truncated")
    try:
        device = data[_HEAD.size:_HEAD.size + dlen].decode("ascii")
    except UnicodeDecodeError:
        raise StubError("bad_version") from None
    epoch, counter, clen = _TAIL.unpack_from(data, _HEAD.size + dlen)
    if clen > 16 << 20:
        raise StubError("bad_length")
    if len(data) < end + clen:
        raise StubError("truncated")
    if len(data) > end + clen:
        raise StubError("bad_length")
    return device, epoch, counter, end


def _key(root: bytes, device: str, epoch: int) -> bytes:
    info = b"wum-stub batch" + device.encode() + epoch.to_bytes(4, "big")
    return HKDF(hashes.SHA256(), 16, None, info).derive(root)


def _nonce(counter: int) -> bytes:
    return b"\x00" * 5 + counter.to_bytes(8, "big")


def seal(root: bytes, device: str, epoch: int, counter: int, plaintext: bytes) -> bytes:
    dev = device.encode("ascii")
    head = _HEAD.pack(MAGIC, VERSION, len(dev)) + dev + _TAIL.pack(epoch, counter,
                                                                    len(plaintext) + 8)
    # the whole header is the associated data
    ct = AESCCM(_key(root, device, epoch), 8).encrypt(_nonce(counter), plaintext, head)
    return head + ct


def open_(root: bytes, data: bytes) -> bytes:
    device, epoch, counter, end = header(data)
    try:
        return AESCCM(_key(root, device, epoch), 8).decrypt(_nonce(counter), data[end:],
                                                            data[:end])
    except InvalidTag:
        raise StubError("bad_tag") from None


def window_check(state: bytes | None, counter: int) -> bytes:
    top, bits = struct.unpack(">QQ", state) if state else (0, 0)
    if state and counter <= top:
        off = top - counter
        if off >= WINDOW or bits >> off & 1:
            raise StubError("replay")
        bits |= 1 << off
    else:
        shift = counter - top if state else WINDOW
        bits = ((bits << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
        top = counter
    return struct.pack(">QQ", top, bits)


def encode_batch(seq: int, meters: list[dict[str, Any]], units: dict[str, str]) -> bytes:
    doc = {"seq": seq, "meters": meters, "units": units}
    return struct.pack(">I", seq) + zlib.compress(json.dumps(doc).encode(), 1)


def batch_seq(plaintext: bytes) -> int:
    if len(plaintext) < 4:
        raise StubError("truncated")
    return int(struct.unpack_from(">I", plaintext)[0])


def decode_batch(plaintext: bytes) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(zlib.decompress(plaintext[4:]))
    except (zlib.error, ValueError):
        raise StubError("bad_batch") from None
    return doc
