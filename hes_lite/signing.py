"""The HES's command signing key: Ed25519 (RFC 8032, pure), separate from
every transport key, created on first use and kept in the store.

Owns creating the pair (``cryptography``), its key id (first 8 bytes of
SHA-256 of the 32-byte public key, as ``agent.command`` names keys) and
signing. The private key never leaves: no method returns it, ``repr``
shows the key id, and nothing here logs.
Must not know the command byte format (the caller hands in what to sign)
nor HTTP.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hes_lite.audit import Auditor
from hes_lite.store import CommandKey, Store

_RAW = serialization.Encoding.Raw


def key_id(public: bytes) -> bytes:
    return hashlib.sha256(public).digest()[:8]


def _new_key(now: float) -> CommandKey:
    priv = Ed25519PrivateKey.generate()
    seed = priv.private_bytes(_RAW, serialization.PrivateFormat.Raw,
                              serialization.NoEncryption())
    public = priv.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    return CommandKey(key_id(public), public, seed, now)


class CommandSigner:
    """Signs with the store's active command key, creating it on first use
    (audited as ``command_key.create`` by ``actor``)."""

    def __init__(self, store: Store, auditor: Auditor | None = None, actor: str = "hes",
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.auditor = auditor
        self.actor = actor
        self.clock = clock
        self._key: CommandKey | None = None
        self._priv: Ed25519PrivateKey | None = None

    def __repr__(self) -> str:
        return "CommandSigner(key_id=%s)" % (self._key.key_id.hex() if self._key else None)

    def _load(self) -> CommandKey:
        if self._key is None:
            key = self.store.command_key()
            if key is None:
                fresh = _new_key(self.clock())
                key = self.store.add_command_key(fresh)
                if key.key_id == fresh.key_id and self.auditor is not None:
                    self.auditor.record(self.actor, "command_key.create", key.key_id.hex())
            self._key = key
            self._priv = Ed25519PrivateKey.from_private_bytes(key.private)
        return self._key

    @property
    def public(self) -> bytes:
        return self._load().public

    @property
    def key_id(self) -> bytes:
        return self._load().key_id

    def sign(self, message: bytes) -> bytes:
        self._load()
        assert self._priv is not None
        return self._priv.sign(message)
