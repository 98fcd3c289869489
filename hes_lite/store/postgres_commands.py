"""The command queue, command keys and downlink nonces in the PostgreSQL
store.

Owns the SQL of schema step 2's command tables. What another party relies
on — a key, a counter handed out, a nonce reserved, a result acknowledged —
commits synchronously before the call returns; the ``delivered`` mark and
expiry (bookkeeping) asynchronously. Several workers: the command key is
created under an advisory lock (one active key however many start at once),
counters and nonces are taken under their row's lock, and each state change
is one conditional UPDATE, so a result is accepted once and an expiry
happens once whichever worker gets there first.
Must not know the command byte format or how commands travel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hes_lite.store import StoreError
from hes_lite.store import postgres_schema as schema
from hes_lite.store.commands import CommandKey, CommandRecord
from hes_lite.store.sqlite_commands import MAX_COUNTER, _json, _record

_COLS = ("id, device, counter, meter, op, args, created, expires, signed, actor, state, "
         "reason, result, updated")
_OPEN = "state IN ('queued', 'delivered')"


class PostgresCommands:
    """Mixed into ``PostgresStore``, which provides ``_txn`` and ``_read``."""

    if TYPE_CHECKING:   # provided by PostgresStore
        def _txn(self, sync: bool) -> Any: ...
        def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...


    # -- the signing key ------------------------------------------------------
    def command_key(self) -> CommandKey | None:
        rows = self._read("SELECT key_id, public, private, created, revoked FROM command_keys "
                          "WHERE revoked IS NULL ORDER BY created DESC, key_id LIMIT 1")
        if not rows:
            return None
        r = rows[0]
        return CommandKey(bytes(r[0]), bytes(r[1]), bytes(r[2]), float(r[3]), r[4])

    def add_command_key(self, key: CommandKey) -> CommandKey:
        with self._txn(sync=True) as c:
            c.execute("SELECT pg_advisory_xact_lock(%s)", (schema.LOCK_COMMAND_KEY,))
            c.execute("INSERT INTO command_keys (key_id, public, private, created, revoked) "
                      "SELECT %s, %s, %s, %s, %s WHERE NOT EXISTS "
                      "(SELECT 1 FROM command_keys WHERE revoked IS NULL)",
                      (key.key_id, key.public, key.private, key.created, key.revoked))
        active = self.command_key()
        if active is None:
            raise StoreError("no active command key after adding one")
        return active

    # -- the queue ------------------------------------------------------------
    def meter_concentrator(self, meter: str) -> str | None:
        rows = self._read("SELECT c.device FROM meters m JOIN concentrators c "
                          "ON c.id = m.concentrator_id WHERE m.meter = %s", (meter,))
        return str(rows[0][0]) if rows else None

    def queue_command(self, device: str,
                      build: Callable[[int], CommandRecord]) -> CommandRecord:
        with self._txn(sync=True) as c:
            (counter,) = c.execute(
                "INSERT INTO command_counters AS k (device, last) VALUES (%s, 1) "
                "ON CONFLICT (device) DO UPDATE SET last = k.last + 1 RETURNING last",
                (device,)).fetchone()
            rec = build(int(counter))
            if rec.device != device or rec.counter != counter:
                raise StoreError("a built command does not match its counter", device=device)
            rec.updated = rec.created
            c.execute(f"INSERT INTO commands ({_COLS}) VALUES "
                      "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                      (rec.id, rec.device, rec.counter, rec.meter, rec.op, _json(rec.args),
                       rec.created, rec.expires, rec.signed, rec.actor, rec.state, rec.reason,
                       _json(rec.result), rec.updated))
        return rec

    def _select(self, where: str, args: Sequence[object]) -> list[CommandRecord]:
        return [_record(r) for r in self._read(f"SELECT {_COLS} FROM commands WHERE {where}",
                                               args)]

    def command(self, command_id: str) -> CommandRecord | None:
        found = self._select("id = %s", (command_id,))
        return found[0] if found else None

    def command_at(self, device: str, counter: int) -> CommandRecord | None:
        found = self._select("device = %s AND counter = %s", (device, counter))
        return found[0] if found else None

    def commands(self, meter: str | None = None, device: str | None = None,
                 limit: int = 100) -> list[CommandRecord]:
        where, args = ["true"], []
        if meter is not None:
            where.append("meter = %s")
            args.append(meter)
        if device is not None:
            where.append("device = %s")
            args.append(device)
        return self._select(" AND ".join(where) + " ORDER BY created DESC, counter DESC "
                            "LIMIT %s", (*args, limit))

    def open_commands(self, device: str | None, now: float,
                      limit: int = 16) -> list[CommandRecord]:
        if device is None:
            return self._select(f"{_OPEN} AND expires > %s ORDER BY device, counter LIMIT %s",
                                (now, limit))
        return self._select(f"{_OPEN} AND device = %s AND expires > %s ORDER BY counter "
                            "LIMIT %s", (device, now, limit))

    def mark_delivered(self, ids: Sequence[str], now: float) -> list[str]:
        if not ids:
            return []
        with self._txn(sync=False) as c:
            done = {str(r[0]) for r in c.execute(
                "UPDATE commands SET state = 'delivered', updated = %s "
                "WHERE id = ANY(%s) AND state = 'queued' RETURNING id", (now, list(ids)))}
        return [i for i in ids if i in done]

    def finish_command(self, device: str, counter: int, state: str, reason: str | None,
                       result: dict[str, Any] | None, now: float,
                       ) -> tuple[str, CommandRecord | None]:
        if state not in ("executed", "failed"):
            raise StoreError("a result is executed or failed", state=state)
        with self._txn(sync=True) as c:
            changed = c.execute(
                "UPDATE commands SET state = %s, reason = %s, result = %s, updated = %s "
                "WHERE device = %s AND counter = %s AND state IN ('queued', 'delivered', "
                "'expired')", (state, reason, _json(result), now, device, counter)).rowcount == 1
        rec = self.command_at(device, counter)
        if rec is None:
            return "unknown", None
        return ("accepted" if changed else "duplicate"), rec

    def expire_commands(self, before: float, now: float) -> list[CommandRecord]:
        with self._txn(sync=False) as c:
            rows = c.execute(
                f"UPDATE commands SET state = 'expired', reason = 'expired', updated = %s "
                f"WHERE {_OPEN} AND expires < %s RETURNING {_COLS}", (now, before)).fetchall()
        return sorted((_record(r) for r in rows), key=lambda r: (r.device, r.counter))

    # -- downlink nonces --------------------------------------------------------
    def reserve_nonces(self, device: str, n: int) -> tuple[int, int]:
        if not 1 <= n <= MAX_COUNTER:
            raise StoreError("cannot reserve that many nonces", n=n)
        with self._txn(sync=True) as c:
            c.execute("INSERT INTO downlink_nonces (device, boot, next) VALUES (%s, 1, 0) "
                      "ON CONFLICT (device) DO NOTHING", (device,))
            boot, first = c.execute("SELECT boot, next FROM downlink_nonces WHERE device = %s "
                                    "FOR UPDATE", (device,)).fetchone()
            boot, first = int(boot), int(first)
            if first + n - 1 > MAX_COUNTER:
                boot, first = boot + 1, 0
            if boot > MAX_COUNTER:
                raise StoreError("downlink boot epochs exhausted", device=device)
            c.execute("UPDATE downlink_nonces SET boot = %s, next = %s WHERE device = %s",
                      (boot, first + n, device))
        return boot, first
