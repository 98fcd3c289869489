"""The firmware side of the store interface: signed update packages as
published, and ranges of their bytes for download. ``hes_lite.store.Store``
inherits it.

Owns ``FirmwareRecord`` and the methods' contracts. Dialect-free like the
rest of the interface: ids and digests are lowercase hex strings, times
epoch seconds (float), a package is opaque bytes (a few hundred kB: one
column value; a PostgreSQL store keeps it in a ``bytea`` and serves a range
with ``substring(data from offset+1 for length)``).
Must not know the package format (``agent.update_package``) nor HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FirmwareRecord:
    """One published package. ``id`` is the first 16 hex of ``sha256`` (the
    SHA-256 of the whole package file); the rest is what its header says
    (``key_id`` "" for an unsigned package), who published it and when."""

    id: str
    sha256: str
    size: int
    target: str
    board: str
    version: str
    key_id: str
    created: float
    actor: str

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "sha256": self.sha256, "size": self.size, "target": self.target,
                "board": self.board, "version": self.version, "key_id": self.key_id or None,
                "created": self.created, "actor": self.actor}


class FirmwareStore:
    """Package storage. Methods raise ``StoreError`` only."""

    def add_firmware(self, rec: FirmwareRecord, data: bytes) -> bool:
        """Store ``data`` under ``rec`` durably; False (and nothing changed)
        when a package with this id is stored already."""
        raise NotImplementedError

    def firmware(self, package_id: str) -> FirmwareRecord | None:
        raise NotImplementedError

    def firmwares(self) -> list[FirmwareRecord]:
        """Every published package, newest first."""
        raise NotImplementedError

    def firmware_range(self, package_id: str, offset: int, length: int) -> bytes | None:
        """Up to ``length`` bytes of the package from ``offset`` (0-based;
        fewer at its end, b"" past it); None when there is no such package."""
        raise NotImplementedError
