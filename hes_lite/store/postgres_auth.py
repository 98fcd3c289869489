"""API tokens and the audit log in the PostgreSQL store.

Owns the SQL of the ``api_tokens`` and ``audit`` tables (schema step 2).
Token changes commit synchronously (a revocation that a crash could undo is
no revocation); audit entries asynchronously, like the SQLite store's
``NORMAL``. Must not know how tokens are made or checked (``hes_lite.auth``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hes_lite.store import AuditEntry, NameTaken, TokenRecord


class PostgresAuth:
    """Mixed into ``PostgresStore``, which provides ``_txn`` and ``_read``."""

    if TYPE_CHECKING:   # provided by PostgresStore
        def _txn(self, sync: bool) -> Any: ...
        def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...


    # -- tokens ------------------------------------------------------------------
    def add_token(self, token: TokenRecord) -> None:
        from hes_lite.store.postgres import _Duplicate
        try:
            with self._txn(sync=True) as c:
                c.execute("INSERT INTO api_tokens (name, role, digest, created, revoked) "
                          "VALUES (%s, %s, %s, %s, %s)",
                          (token.name, token.role, token.digest, token.created, token.revoked))
        except _Duplicate:
            raise NameTaken("a token with this name exists (names are never reused)",
                            name=token.name) from None

    def token(self, digest: bytes) -> TokenRecord | None:
        rows = self._read("SELECT name, role, digest, created, revoked FROM api_tokens "
                          "WHERE digest = %s", (digest,))
        return _token(rows[0]) if rows else None

    def tokens(self) -> list[TokenRecord]:
        return [_token(r) for r in self._read(
            "SELECT name, role, digest, created, revoked FROM api_tokens ORDER BY name")]

    def revoke_token(self, name: str, now: float) -> bool:
        with self._txn(sync=True) as c:
            return bool(c.execute("UPDATE api_tokens SET revoked = %s WHERE name = %s "
                                  "AND revoked IS NULL", (now, name)).rowcount == 1)

    # -- audit -------------------------------------------------------------------
    def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        cols: list[list[object]] = [[] for _ in range(7)]
        for e in entries:
            for i, v in enumerate((e.ts, e.actor, e.action, e.target, e.outcome, e.remote,
                                   json.dumps(e.detail, sort_keys=True, separators=(",", ":"),
                                              default=str))):
                cols[i].append(v)
        with self._txn(sync=False) as c:
            c.execute("INSERT INTO audit (ts, actor, action, target, outcome, remote, detail) "
                      "SELECT a, b, c, d, e, f, g FROM unnest(%s::float8[], %s::text[], %s::text[], %s::text[], "
                      "%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS u "
                      "(a, b, c, d, e, f, g, n) ORDER BY n", cols)

    def audit_log(self, since: float | None = None, limit: int | None = None,
                  ) -> list[AuditEntry]:
        rows = self._read(
            "SELECT ts, actor, action, target, outcome, remote, detail FROM audit "
            "WHERE ts >= %s ORDER BY id DESC LIMIT %s",
            (-1e18 if since is None else since, limit))
        return [AuditEntry(float(r[0]), r[1], r[2], r[3], r[4], r[5], json.loads(r[6]))
                for r in reversed(rows)]


def _token(row: Sequence[Any]) -> TokenRecord:
    return TokenRecord(str(row[0]), str(row[1]), bytes(row[2]), float(row[3]),
                       None if row[4] is None else float(row[4]))
