"""The command queue, command keys and downlink nonces in the SQLite store.

Owns the SQL of migration 7's tables. Everything that another party relies
on — a key, a counter handed out, a nonce reserved, a result acknowledged —
is written with ``synchronous=FULL`` before the call returns; the
``delivered`` mark (bookkeeping only) with ``NORMAL``.
Must not know the command byte format or how commands travel.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from hes_lite.store import StoreError
from hes_lite.store.commands import CommandKey, CommandRecord

MAX_COUNTER = 0xFFFFFFFF
_COLS = ("id, device, counter, meter, op, args, created, expires, signed, actor, state, "
         "reason, result, updated")
_OPEN = "state IN ('queued', 'delivered')"


def _json(value: object) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _record(r: Sequence[Any]) -> CommandRecord:
    return CommandRecord(str(r[0]), str(r[1]), int(r[2]), r[3], str(r[4]), json.loads(r[5]),
                         float(r[6]), float(r[7]), bytes(r[8]), str(r[9]), str(r[10]), r[11],
                         None if r[12] is None else json.loads(r[12]), float(r[13]))


class SqliteCommands:
    """Mixed into ``SqliteStore``, which provides the connection, lock and
    ``_write`` transactions."""

    path: str
    _conn: sqlite3.Connection
    _lock: threading.RLock

    def _write(self, sync: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    # -- the signing key ------------------------------------------------------
    def command_key(self) -> CommandKey | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT key_id, public, private, created, revoked FROM command_keys "
                "WHERE revoked IS NULL ORDER BY created DESC, key_id LIMIT 1").fetchone()
        return None if row is None else CommandKey(bytes(row[0]), bytes(row[1]), bytes(row[2]),
                                                   float(row[3]), row[4])

    def add_command_key(self, key: CommandKey) -> CommandKey:
        with self._write("FULL"):
            have = self._conn.execute(
                "SELECT count(*) FROM command_keys WHERE revoked IS NULL").fetchone()[0]
            if not have:
                self._conn.execute(
                    "INSERT INTO command_keys (key_id, public, private, created, revoked) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (key.key_id, key.public, key.private, key.created, key.revoked))
        active = self.command_key()
        if active is None:
            raise StoreError("no active command key after adding one")
        return active

    # -- the queue ------------------------------------------------------------
    def meter_concentrator(self, meter: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT c.device FROM meters m JOIN concentrators c "
                "ON c.id = m.concentrator_id WHERE m.meter = ?", (meter,)).fetchone()
        return None if row is None else str(row[0])

    def queue_command(self, device: str,
                      build: Callable[[int], CommandRecord]) -> CommandRecord:
        with self._write("FULL"):
            c = self._conn
            row = c.execute("SELECT last FROM command_counters WHERE device = ?",
                            (device,)).fetchone()
            counter = 1 if row is None else int(row[0]) + 1
            c.execute("INSERT INTO command_counters (device, last) VALUES (?, ?) "
                      "ON CONFLICT (device) DO UPDATE SET last = excluded.last",
                      (device, counter))
            rec = build(counter)
            if rec.device != device or rec.counter != counter:
                raise StoreError("a built command does not match its counter", device=device)
            rec.updated = rec.created
            c.execute(f"INSERT INTO commands ({_COLS}) VALUES "
                      "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (rec.id, rec.device, rec.counter, rec.meter, rec.op, _json(rec.args),
                       rec.created, rec.expires, rec.signed, rec.actor, rec.state, rec.reason,
                       _json(rec.result), rec.updated))
        return rec

    def _select(self, where: str, args: Sequence[object]) -> list[CommandRecord]:
        with self._lock:
            return [_record(r) for r in self._conn.execute(
                f"SELECT {_COLS} FROM commands WHERE {where}", args)]

    def command(self, command_id: str) -> CommandRecord | None:
        found = self._select("id = ?", (command_id,))
        return found[0] if found else None

    def command_at(self, device: str, counter: int) -> CommandRecord | None:
        found = self._select("device = ? AND counter = ?", (device, counter))
        return found[0] if found else None

    def commands(self, meter: str | None = None, device: str | None = None,
                 limit: int = 100) -> list[CommandRecord]:
        where, args = ["1 = 1"], []
        if meter is not None:
            where.append("meter = ?")
            args.append(meter)
        if device is not None:
            where.append("device = ?")
            args.append(device)
        return self._select(" AND ".join(where) + " ORDER BY created DESC, counter DESC "
                            "LIMIT ?", (*args, limit))

    def open_commands(self, device: str | None, now: float,
                      limit: int = 16) -> list[CommandRecord]:
        if device is None:
            return self._select(f"{_OPEN} AND expires > ? ORDER BY device, counter LIMIT ?",
                                (now, limit))
        return self._select(f"{_OPEN} AND device = ? AND expires > ? ORDER BY counter LIMIT ?",
                            (device, now, limit))

    def mark_delivered(self, ids: Sequence[str], now: float) -> list[str]:
        done = []
        with self._write("NORMAL"):
            for i in ids:
                cur = self._conn.execute("UPDATE commands SET state = 'delivered', updated = ? "
                                         "WHERE id = ? AND state = 'queued'", (now, i))
                if cur.rowcount:
                    done.append(i)
        return done

    def finish_command(self, device: str, counter: int, state: str, reason: str | None,
                       result: dict[str, Any] | None, now: float,
                       ) -> tuple[str, CommandRecord | None]:
        if state not in ("executed", "failed"):
            raise StoreError("a result is executed or failed", state=state)
        with self._write("FULL"):
            cur = self._conn.execute(
                "UPDATE commands SET state = ?, reason = ?, result = ?, updated = ? "
                "WHERE device = ? AND counter = ? AND state IN ('queued', 'delivered', "
                "'expired')", (state, reason, _json(result), now, device, counter))
            changed = cur.rowcount == 1
        rec = self.command_at(device, counter)
        if rec is None:
            return "unknown", None
        return ("accepted" if changed else "duplicate"), rec

    def expire_commands(self, before: float, now: float) -> list[CommandRecord]:
        with self._write("NORMAL"):
            due = [_record(r) for r in self._conn.execute(
                f"SELECT {_COLS} FROM commands WHERE {_OPEN} AND expires < ?", (before,))]
            self._conn.executemany(
                f"UPDATE commands SET state = 'expired', reason = 'expired', updated = ? "
                f"WHERE id = ? AND {_OPEN}", [(now, r.id) for r in due])
        for r in due:
            r.state, r.reason, r.updated = "expired", "expired", now
        return due

    # -- downlink nonces --------------------------------------------------------
    def reserve_nonces(self, device: str, n: int) -> tuple[int, int]:
        if not 1 <= n <= MAX_COUNTER:
            raise StoreError("cannot reserve that many nonces", n=n)
        with self._write("FULL"):
            c = self._conn
            row = c.execute("SELECT boot, next FROM downlink_nonces WHERE device = ?",
                            (device,)).fetchone()
            boot, first = (1, 0) if row is None else (int(row[0]), int(row[1]))
            if first + n - 1 > MAX_COUNTER:
                boot, first = boot + 1, 0
            if boot > MAX_COUNTER:
                raise StoreError("downlink boot epochs exhausted", device=device)
            c.execute("INSERT INTO downlink_nonces (device, boot, next) VALUES (?, ?, ?) "
                      "ON CONFLICT (device) DO UPDATE SET boot = excluded.boot, "
                      "next = excluded.next", (device, boot, first + n))
        return boot, first
