"""API tokens and the audit log in the SQLite store.

Owns the SQL of the ``api_tokens`` and ``audit`` tables (migration 6). Token
changes are written with ``synchronous=FULL`` (a revocation that a power cut
could undo is no revocation); audit entries with ``NORMAL`` (WAL: a crash of
the process loses nothing, a power cut at most the last moments).
Must not know how tokens are made or checked (``hes_lite.auth``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager

from hes_lite.store import AuditEntry, NameTaken, StoreError, TokenRecord


class SqliteAuth:
    """Mixed into ``SqliteStore``, which provides the connection, lock and
    ``_write`` transactions."""

    path: str
    _conn: sqlite3.Connection
    _lock: threading.RLock

    def _write(self, sync: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    # -- tokens ------------------------------------------------------------------
    def add_token(self, token: TokenRecord) -> None:
        try:
            with self._write("FULL"):
                self._conn.execute(
                    "INSERT INTO api_tokens (name, role, digest, created, revoked) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (token.name, token.role, token.digest, token.created, token.revoked))
        except StoreError as e:
            if isinstance(e.__cause__, sqlite3.IntegrityError):
                raise NameTaken("a token with this name exists (names are never reused)",
                                name=token.name) from None
            raise

    def token(self, digest: bytes) -> TokenRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT name, role, digest, created, revoked FROM api_tokens WHERE digest = ?",
                (digest,)).fetchone()
        return None if row is None else _token(row)

    def tokens(self) -> list[TokenRecord]:
        with self._lock:
            return [_token(r) for r in self._conn.execute(
                "SELECT name, role, digest, created, revoked FROM api_tokens ORDER BY name")]

    def revoke_token(self, name: str, now: float) -> bool:
        with self._write("FULL"):
            cur = self._conn.execute(
                "UPDATE api_tokens SET revoked = ? WHERE name = ? AND revoked IS NULL",
                (now, name))
            return cur.rowcount == 1

    # -- audit -------------------------------------------------------------------
    def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        rows = [(e.ts, e.actor, e.action, e.target, e.outcome, e.remote,
                 json.dumps(e.detail, sort_keys=True, separators=(",", ":"), default=str))
                for e in entries]
        with self._write("NORMAL"):
            self._conn.executemany(
                "INSERT INTO audit (ts, actor, action, target, outcome, remote, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def audit_log(self, since: float | None = None, limit: int | None = None,
                  ) -> list[AuditEntry]:
        sql = ("SELECT ts, actor, action, target, outcome, remote, detail FROM audit "
               "WHERE ts >= ? ORDER BY id DESC LIMIT ?")
        with self._lock:
            rows = self._conn.execute(sql, (-1e18 if since is None else since,
                                            -1 if limit is None else limit)).fetchall()
        return [AuditEntry(float(r[0]), r[1], r[2], r[3], r[4], r[5], json.loads(r[6]))
                for r in reversed(rows)]


def _token(row: tuple[object, ...]) -> TokenRecord:
    return TokenRecord(str(row[0]), str(row[1]), bytes(row[2]),  # type: ignore[call-overload]
                       float(str(row[3])), None if row[4] is None else float(str(row[4])))
