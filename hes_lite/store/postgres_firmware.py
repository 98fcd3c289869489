"""Update packages in the PostgreSQL store.

Owns the SQL of schema step 3's ``firmware`` table: a package is one
``bytea`` (stored out of line, uncompressed: it is compressed already)
committed synchronously; a range is read with ``substring`` so a download
never loads the whole package. Must not know the package format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hes_lite.store.firmware import FirmwareRecord
from hes_lite.store.sqlite_firmware import _COLS, _record


class PostgresFirmware:
    """Mixed into ``PostgresStore``, which provides ``_txn`` and ``_read``."""

    if TYPE_CHECKING:   # provided by PostgresStore
        def _txn(self, sync: bool) -> Any: ...
        def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def add_firmware(self, rec: FirmwareRecord, data: bytes) -> bool:
        with self._txn(sync=True) as c:
            return bool(c.execute(
                f"INSERT INTO firmware ({_COLS}, data) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (rec.id, rec.sha256, rec.size, rec.target, rec.board, rec.version, rec.key_id,
                 rec.created, rec.actor, bytes(data))).rowcount == 1)

    def firmware(self, package_id: str) -> FirmwareRecord | None:
        rows = self._read(f"SELECT {_COLS} FROM firmware WHERE id = %s", (package_id,))
        return _record(rows[0]) if rows else None

    def firmwares(self) -> list[FirmwareRecord]:
        return [_record(r) for r in self._read(
            f"SELECT {_COLS} FROM firmware ORDER BY created DESC, id")]

    def firmware_range(self, package_id: str, offset: int, length: int) -> bytes | None:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        rows = self._read("SELECT substring(data from %s for %s) FROM firmware WHERE id = %s",
                          (offset + 1, length, package_id))
        if not rows:
            return None
        return bytes(rows[0][0]) if rows[0][0] is not None else b""
