"""Update packages in the SQLite store.

Owns the SQL of migration 8's ``firmware`` table: a package is one BLOB
written with ``synchronous=FULL``; a range is read with ``substr`` (1-based
on a BLOB, it returns bytes) so a download never loads the whole package.
Must not know the package format.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from hes_lite.store.firmware import FirmwareRecord

_COLS = "id, sha256, size, target, board, version, key_id, created, actor"


def _record(r: Sequence[Any]) -> FirmwareRecord:
    return FirmwareRecord(str(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]),
                          str(r[6]), float(r[7]), str(r[8]))


class SqliteFirmware:
    """Mixed into ``SqliteStore``, which provides the connection, lock and
    ``_write`` transactions."""

    _conn: sqlite3.Connection
    _lock: threading.RLock

    def _write(self, sync: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    def add_firmware(self, rec: FirmwareRecord, data: bytes) -> bool:
        with self._write("FULL"):
            cur = self._conn.execute(
                f"INSERT OR IGNORE INTO firmware ({_COLS}, data) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (rec.id, rec.sha256, rec.size, rec.target, rec.board, rec.version, rec.key_id,
                 rec.created, rec.actor, bytes(data)))
            return cur.rowcount == 1

    def firmware(self, package_id: str) -> FirmwareRecord | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLS} FROM firmware WHERE id = ?",
                                     (package_id,)).fetchone()
        return None if row is None else _record(row)

    def firmwares(self) -> list[FirmwareRecord]:
        with self._lock:
            return [_record(r) for r in self._conn.execute(
                f"SELECT {_COLS} FROM firmware ORDER BY created DESC, id")]

    def firmware_range(self, package_id: str, offset: int, length: int) -> bytes | None:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        with self._lock:
            row = self._conn.execute("SELECT substr(data, ?, ?) FROM firmware WHERE id = ?",
                                     (offset + 1, length, package_id)).fetchone()
        if row is None:
            return None
        return bytes(row[0]) if row[0] is not None else b""
