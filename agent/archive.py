"""The concentrator's archive: the upload buffer and the 30–45 day history.

Owns the SQLite (WAL) file: meters, load-profile rows and register snapshots
(compact rows, ``agent.rowcodec``), meter events, cycle results, batches and
their acknowledgements, and small persistent values (codec state, …).
Versioned with ``PRAGMA user_version``: one migration per step
(``agent.archive_schema``), each in one transaction.

A reading row is stored as up to two parts of one key: its energy and
status registers under its kind, its instantaneous values under
``kind | INSTANT`` (``agent.priority`` classes them), so the uplink can send
every hour's energy before any hour's instantaneous values; ``rows()`` joins
them again. The counters that must never go back (boot and mesh epochs, the
last batch seq) are also kept in ``<archive>.epochs`` (``agent.epochs``),
written before use, so a quarantined archive cannot make them repeat.

Rules it enforces: a reading row is identified by (meter, kind, slot) and
stored once (a key stored already is left as it is); nothing is deleted before the HES acknowledged it and
it aged out of the retention window; unacknowledged rows past the window are
kept and counted as ``overdue``. Must not know protocols or transports.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from agent.archive_batches import BatchQueue
from agent.archive_schema import (
    INSTANT,
    MIGRATIONS,
    PROFILE,
    SNAPSHOT,
    ArchiveError,
    Row,
)
from agent.epochs import SUFFIX as EPOCHS_SUFFIX
from agent.epochs import EpochFile
from agent.priority import split
from agent.rowcodec import RowCodecError, Value, decode_row, encode_row
from drivers.meter import meter_id

log = logging.getLogger(__name__)
T = TypeVar("T")
__all__ = ["MIGRATIONS", "PROFILE", "SNAPSHOT", "INSTANT", "Archive", "ArchiveError", "Row"]


class Archive(BatchQueue):
    def __init__(self, path: str) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        self._obis: dict[str, int] = {}
        self._obis_code: dict[int, str] = {}
        self.epochs = EpochFile(path + EPOCHS_SUFFIX)

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> Archive:
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self.db = db
            self._migrate()
            for oid, code in db.execute("SELECT id, code FROM obis"):
                self._obis[code] = oid
                self._obis_code[oid] = code
        except sqlite3.DatabaseError as e:
            raise ArchiveError("archive %s is unusable: %s" % (self.path, e), path=self.path) from e
        return self

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self.db is None:
            raise ArchiveError("archive is not open")
        return self.db

    def _migrate(self) -> None:
        db = self.conn
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise ArchiveError("archive schema %d is newer than this agent (%d)"
                               % (version, len(MIGRATIONS)), path=self.path)
        for step in range(version, len(MIGRATIONS)):
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[step].split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute("PRAGMA user_version=%d" % (step + 1))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            log.info("archive migrated to schema %d", step + 1)

    def integrity_check(self) -> list[str]:
        return [r[0] for r in self.conn.execute("PRAGMA integrity_check")]

    def write(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(db, *args)`` in one IMMEDIATE transaction, for modules that own
        tables of this file (``agent.commands``): durable when it returns."""
        return self._write(fn, *args)

    def _write(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` in one IMMEDIATE transaction; disk-full becomes ArchiveError."""
        db = self.conn
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db, *args)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:
            if "full" in str(e).lower():
                raise ArchiveError("archive disk is full; readings stay in the meters' memory "
                                   "and will be backfilled: %s" % e, path=self.path,
                                   reason="disk_full") from e
            raise ArchiveError("archive write failed: %s" % e, path=self.path) from e
        except sqlite3.DatabaseError as e:
            raise ArchiveError("archive is corrupt: %s" % e, path=self.path,
                               reason="corrupt") from e
        return out

    # -- meta ----------------------------------------------------------------
    def meta(self, key: str) -> bytes | None:
        r = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if r is None else bytes(r[0])

    def set_meta(self, key: str, value: bytes) -> None:
        self._write(lambda db: db.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value)))

    # -- meters --------------------------------------------------------------
    def meter_id(self, bus: str, protocol: str, address: str) -> int:
        db = self.conn
        r = db.execute("SELECT id FROM meter WHERE bus=? AND protocol=? AND address=?",
                       (bus, protocol, address)).fetchone()
        if r:
            return int(r[0])
        self._write(lambda d: d.execute(
            "INSERT OR IGNORE INTO meter(bus, protocol, address) VALUES (?, ?, ?)",
            (bus, protocol, address)))
        return self.meter_id(bus, protocol, address)

    def set_identity(self, meter: int, serial: str, manufacturer: str, model: str) -> None:
        self._write(lambda db: db.execute(
            "UPDATE meter SET serial=?, manufacturer=?, model=? WHERE id=?",
            (serial, manufacturer, model, meter)))

    def meters(self) -> list[dict[str, object]]:
        cur = self.conn.execute(
            "SELECT id, bus, protocol, address, serial, manufacturer, model FROM meter ORDER BY id")
        keys = ("id", "bus", "protocol", "address", "serial", "manufacturer", "model")
        return [dict(zip(keys, r, strict=True)) for r in cur]

    def serial(self, meter: int) -> str:
        """The meter's id: the one ``identify()`` gave (serial number, else logical
        device name), else ``<bus>:<protocol>:<address>`` (``drivers.meter.meter_id``)."""
        r = self.conn.execute("SELECT serial, bus, protocol, address FROM meter WHERE id=?",
                              (meter,)).fetchone()
        if r is None:
            raise ArchiveError("no meter %d" % meter)
        return meter_id(str(r[0] or ""), fallback="%s:%s:%s" % (r[1], r[2], r[3]))

    # -- obis ids ----------------------------------------------------------
    def _obis_id(self, db: sqlite3.Connection, code: str) -> int:
        oid = self._obis.get(code)
        if oid is None:
            db.execute("INSERT OR IGNORE INTO obis(code) VALUES (?)", (code,))
            oid = int(db.execute("SELECT id FROM obis WHERE code=?", (code,)).fetchone()[0])
            self._obis[code] = oid
            self._obis_code[oid] = code
        return oid

    # -- readings ----------------------------------------------------------
    def store_meter_read(self, meter: int, period: int, snapshot: tuple[int, dict[str, Value]] | None,
                         profile: Iterable[tuple[int, dict[str, Value]]],
                         events: Iterable[tuple[int, int]]) -> int:
        """Store one meter's cycle in one transaction; returns new rows stored.
        A row whose key (meter, kind, slot) is stored already is left as it is."""
        def tx(db: sqlite3.Connection) -> int:
            n = 0
            rows = []
            if snapshot is not None:
                ts, vals = snapshot
                rows.append((SNAPSHOT, ts // period, ts, vals))
            rows.extend((PROFILE, ts, ts, vals) for ts, vals in profile)
            for kind, slot, ts, vals in rows:
                if db.execute("SELECT 1 FROM reading WHERE meter=? AND kind IN (?, ?) AND slot=?",
                              (meter, kind, kind | INSTANT, slot)).fetchone():
                    continue
                energy, instant = split(vals)
                parts = [(kind, energy)] if energy or not instant else []
                if instant:
                    parts.append((kind | INSTANT, instant))
                db.executemany("INSERT INTO reading(meter, kind, slot, ts, payload) "
                               "VALUES (?, ?, ?, ?, ?)",
                               [(meter, k, slot, ts, self._payload(db, part)) for k, part in parts])
                n += 1
            for ts, code in events:
                cur = db.execute("INSERT OR IGNORE INTO event(meter, ts, code) VALUES (?, ?, ?)",
                                 (meter, ts, code))
                n += cur.rowcount
            return n
        n: int = self._write(tx)
        return n

    def _payload(self, db: sqlite3.Connection, vals: dict[str, Value]) -> bytes:
        return encode_row(sorted((self._obis_id(db, k), v) for k, v in vals.items()))

    def _values(self, payload: bytes) -> dict[str, Value]:
        try:
            items = decode_row(payload)
        except RowCodecError as e:
            raise ArchiveError("corrupt archived row: %s" % e, reason="corrupt") from e
        return {self._obis_code[oid]: v for oid, v in items}

    def last_profile_ts(self, meter: int) -> int | None:
        r = self.conn.execute("SELECT MAX(slot) FROM reading WHERE meter=? AND kind IN (?, ?)",
                              (meter, PROFILE, PROFILE | INSTANT)).fetchone()
        return None if r[0] is None else int(r[0])

    def last_event_ts(self, meter: int) -> int | None:
        r = self.conn.execute("SELECT MAX(ts) FROM event WHERE meter=?", (meter,)).fetchone()
        return None if r[0] is None else int(r[0])

    def rows(self, meter: int | None = None, start: int | None = None, end: int | None = None,
             kind: int | None = None) -> Iterator[Row]:
        """Whole rows (a row's energy and instantaneous parts joined), by meter
        and ts; ``kind`` is PROFILE or SNAPSHOT."""
        q = "SELECT meter, kind, ts, payload FROM reading WHERE 1=1"
        args: list[object] = []
        for cond, val in (("meter=?", meter), ("ts>=?", start), ("ts<=?", end),
                          ("kind & 1=?", kind)):
            if val is not None:
                q += " AND " + cond
                args.append(val)
        q += " ORDER BY meter, ts, kind & 1, kind"
        row: Row | None = None
        for m, k, ts, payload in self.conn.execute(q, args):
            vals = self._values(bytes(payload))
            if row is not None and (row.meter, row.ts, row.kind) == (m, ts, k & 1):
                row.values.update(vals)
                continue
            if row is not None:
                yield row
            row = Row(m, k & 1, ts, vals)
        if row is not None:
            yield row

    def events(self, meter: int | None = None) -> list[tuple[int, int, int]]:
        q = "SELECT meter, ts, code FROM event"
        args: tuple[object, ...] = ()
        if meter is not None:
            q += " WHERE meter=?"
            args = (meter,)
        return [(int(a), int(b), int(c)) for a, b, c in self.conn.execute(q + " ORDER BY ts", args)]

    # -- cycles --------------------------------------------------------------
    def begin_cycle(self, started: float) -> int:
        cid: int = self._write(lambda db: db.execute(
            "INSERT INTO cycle(started) VALUES (?)", (started,)).lastrowid)
        return cid

    def record_result(self, cycle: int, meter: int, status: str, error: str | None,
                      duration: float, clock_offset: float | None, rows: int) -> None:
        self._write(lambda db: db.execute(
            "INSERT OR REPLACE INTO cycle_result(cycle, meter, status, error, duration, "
            "clock_offset, rows) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cycle, meter, status, error, duration, clock_offset, rows)))

    def end_cycle(self, cycle: int, finished: float) -> None:
        def tx(db: sqlite3.Connection) -> None:
            counts = dict(db.execute("SELECT status, COUNT(*) FROM cycle_result WHERE cycle=? "
                                     "GROUP BY status", (cycle,)).fetchall())
            db.execute("UPDATE cycle SET finished=?, ok=?, partial=?, failed=? WHERE id=?",
                       (finished, counts.get("read", 0), counts.get("partial", 0),
                        counts.get("failed", 0), cycle))
        self._write(tx)

    def last_results(self) -> list[dict[str, object]]:
        """The latest result of every meter (its most recent cycle)."""
        q = """SELECT m.id, m.bus, m.protocol, m.address, m.serial, r.cycle, c.started,
                      r.status, r.error, r.duration, r.clock_offset, r.rows
               FROM meter m LEFT JOIN cycle_result r ON r.meter = m.id AND r.cycle =
                   (SELECT MAX(cycle) FROM cycle_result WHERE meter = m.id)
               LEFT JOIN cycle c ON c.id = r.cycle ORDER BY m.id"""
        keys = ("meter", "bus", "protocol", "address", "serial", "cycle", "started", "status",
                "error", "duration", "clock_offset", "rows")
        return [dict(zip(keys, r, strict=True)) for r in self.conn.execute(q)]

    # -- retention -----------------------------------------------------------
    def apply_retention(self, now: float, days: int) -> dict[str, int]:
        """Delete whole days older than the window whose data the HES acknowledged.
        Unacknowledged rows past the window are kept and reported as overdue."""
        cutoff = (int(now) // 86400 - days) * 86400

        def tx(db: sqlite3.Connection) -> dict[str, int]:
            acked = "(SELECT seq FROM batch WHERE acked IS NOT NULL)"
            n1 = db.execute("DELETE FROM reading WHERE ts < ? AND batch IN " + acked,
                            (cutoff,)).rowcount
            n2 = db.execute("DELETE FROM event WHERE ts < ? AND batch IN " + acked,
                            (cutoff,)).rowcount
            db.execute("DELETE FROM batch WHERE acked IS NOT NULL AND created < ? AND seq NOT IN "
                       "(SELECT DISTINCT batch FROM reading WHERE batch IS NOT NULL) AND seq NOT IN"
                       " (SELECT DISTINCT batch FROM event WHERE batch IS NOT NULL)", (cutoff,))
            db.execute("DELETE FROM cycle_result WHERE cycle IN (SELECT id FROM cycle "
                       "WHERE started < ?)", (cutoff,))
            db.execute("DELETE FROM cycle WHERE started < ?", (cutoff,))
            overdue = db.execute("SELECT COUNT(*) FROM reading WHERE ts < ?",
                                 (cutoff,)).fetchone()[0]
            return {"deleted_rows": n1, "deleted_events": n2, "overdue_rows": overdue}
        out: dict[str, int] = self._write(tx)
        if out["overdue_rows"]:
            log.warning("%d rows are past the retention window but not acknowledged by the HES; "
                        "kept", out["overdue_rows"])
        return out

    def stats(self) -> dict[str, object]:
        db = self.conn
        r = db.execute("SELECT COUNT(*), MIN(ts), MAX(ts) FROM reading r WHERE kind < ? OR NOT "
                       "EXISTS (SELECT 1 FROM reading t WHERE t.meter = r.meter AND "
                       "t.kind = r.kind - ? AND t.slot = r.slot)", (INSTANT, INSTANT)).fetchone()
        size = sum(os.path.getsize(p) for p in (self.path, self.path + "-wal")
                   if os.path.exists(p))
        return {"path": self.path, "bytes": size, "rows": r[0], "oldest": r[1], "newest": r[2],
                "events": db.execute("SELECT COUNT(*) FROM event").fetchone()[0],
                "meters": db.execute("SELECT COUNT(*) FROM meter").fetchone()[0],
                "schema": db.execute("PRAGMA user_version").fetchone()[0]}

