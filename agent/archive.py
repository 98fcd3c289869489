"""The concentrator's archive: the upload buffer and the 30–45 day history.

Owns the SQLite (WAL) file: meters, load-profile rows and register snapshots
(compact rows, ``agent.rowcodec``), meter events, cycle results, batches and
their acknowledgements, and small persistent values (boot epoch, codec
state). Versioned with ``PRAGMA user_version``: one migration per step, each in
one transaction; old schemas are kept as test fixtures.

Rules it enforces: a reading is identified by (meter, kind, slot) and stored
once (INSERT OR IGNORE); nothing is deleted before the HES acknowledged it and
it aged out of the retention window; unacknowledged rows past the window are
kept and counted as ``overdue``. Must not know protocols or transports.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from agent import AgentError
from agent.rowcodec import RowCodecError, Value, decode_row, encode_row
from drivers.meter import meter_id

log = logging.getLogger(__name__)
T = TypeVar("T")

PROFILE = 0   # a load-profile row: slot = ts (an interval boundary)
SNAPSHOT = 1  # a register snapshot: slot = ts // period (one per meter per cycle)


class ArchiveError(AgentError):
    """The archive cannot be opened, is corrupt, or the disk is full."""


MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
    CREATE TABLE meter(
        id INTEGER PRIMARY KEY, bus TEXT NOT NULL, protocol TEXT NOT NULL,
        address TEXT NOT NULL, serial TEXT, manufacturer TEXT, model TEXT,
        UNIQUE(bus, protocol, address));
    CREATE TABLE obis(id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, unit TEXT);
    CREATE TABLE reading(
        meter INTEGER NOT NULL, kind INTEGER NOT NULL, slot INTEGER NOT NULL,
        ts INTEGER NOT NULL, payload BLOB NOT NULL, batch INTEGER,
        PRIMARY KEY(meter, kind, slot)) WITHOUT ROWID;
    CREATE INDEX reading_unbatched ON reading(batch, ts);
    CREATE TABLE event(
        meter INTEGER NOT NULL, ts INTEGER NOT NULL, code INTEGER NOT NULL,
        batch INTEGER, PRIMARY KEY(meter, ts, code)) WITHOUT ROWID;
    CREATE TABLE cycle(
        id INTEGER PRIMARY KEY, started REAL NOT NULL, finished REAL,
        ok INTEGER DEFAULT 0, partial INTEGER DEFAULT 0, failed INTEGER DEFAULT 0);
    CREATE TABLE cycle_result(
        cycle INTEGER NOT NULL, meter INTEGER NOT NULL, status TEXT NOT NULL,
        error TEXT, duration REAL, clock_offset REAL, rows INTEGER,
        PRIMARY KEY(cycle, meter)) WITHOUT ROWID;
    CREATE TABLE batch(
        seq INTEGER PRIMARY KEY, created REAL NOT NULL, payload BLOB NOT NULL,
        rows INTEGER NOT NULL, events INTEGER NOT NULL, acked REAL);
    """,
    # 1 -> 2: signed commands (agent/commands.py owns these tables)
    """
    CREATE TABLE command(
        counter INTEGER PRIMARY KEY, id TEXT NOT NULL, op TEXT NOT NULL, meter TEXT NOT NULL,
        digest BLOB NOT NULL, body BLOB NOT NULL, received REAL NOT NULL, state TEXT NOT NULL,
        reason TEXT, result TEXT, throttled INTEGER NOT NULL DEFAULT 0, started REAL,
        finished REAL, acked REAL);
    CREATE INDEX command_unacked ON command(acked, state);
    CREATE TABLE command_refusal(
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, reason TEXT NOT NULL, detail TEXT);
    CREATE TABLE command_stat(key TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
    """,
]


@dataclass(frozen=True)
class Row:
    meter: int
    kind: int
    ts: int
    values: dict[str, Value]


class Archive:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        self._obis: dict[str, int] = {}
        self._obis_code: dict[int, str] = {}

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

    def next_boot_epoch(self) -> int:
        """Increment and persist the boot epoch (the envelope's counter prefix)."""
        def step(db: sqlite3.Connection) -> int:
            r = db.execute("SELECT value FROM meta WHERE key='boot_epoch'").fetchone()
            n = int(bytes(r[0]).decode()) + 1 if r else 1
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('boot_epoch', ?)",
                       (str(n).encode(),))
            return n
        n: int = self._write(step)
        return n

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
        """Store one meter's cycle in one transaction; returns new rows stored."""
        def tx(db: sqlite3.Connection) -> int:
            n = 0
            rows = []
            if snapshot is not None:
                ts, vals = snapshot
                rows.append((meter, SNAPSHOT, ts // period, ts, self._payload(db, vals)))
            for ts, vals in profile:
                rows.append((meter, PROFILE, ts, ts, self._payload(db, vals)))
            for r in rows:
                cur = db.execute("INSERT OR IGNORE INTO reading(meter, kind, slot, ts, payload) "
                                 "VALUES (?, ?, ?, ?, ?)", r)
                n += cur.rowcount
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
        r = self.conn.execute("SELECT MAX(slot) FROM reading WHERE meter=? AND kind=0",
                              (meter,)).fetchone()
        return None if r[0] is None else int(r[0])

    def last_event_ts(self, meter: int) -> int | None:
        r = self.conn.execute("SELECT MAX(ts) FROM event WHERE meter=?", (meter,)).fetchone()
        return None if r[0] is None else int(r[0])

    def rows(self, meter: int | None = None, start: int | None = None, end: int | None = None,
             kind: int | None = None) -> Iterator[Row]:
        q = "SELECT meter, kind, ts, payload FROM reading WHERE 1=1"
        args: list[object] = []
        for cond, val in (("meter=?", meter), ("ts>=?", start), ("ts<=?", end), ("kind=?", kind)):
            if val is not None:
                q += " AND " + cond
                args.append(val)
        q += " ORDER BY meter, ts, kind"
        for m, k, ts, payload in self.conn.execute(q, args):
            yield Row(m, k, ts, self._values(bytes(payload)))

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

    # -- batches -------------------------------------------------------------
    def pending_batch(self) -> tuple[int, bytes] | None:
        r = self.conn.execute(
            "SELECT seq, payload FROM batch WHERE acked IS NULL ORDER BY seq LIMIT 1").fetchone()
        return None if r is None else (int(r[0]), bytes(r[1]))

    def next_seq(self) -> int:
        r = self.conn.execute("SELECT MAX(seq) FROM batch").fetchone()
        stored = int(r[0]) if r[0] is not None else 0
        m = self.meta("last_seq")
        return max(stored, int(m.decode()) if m else 0) + 1

    def unbatched(self, limit_rows: int) -> tuple[list[Row], list[tuple[int, int, int]]]:
        """Rows and events not yet in a batch: all events first (they jump the
        queue), then the oldest rows."""
        db = self.conn
        events = [(int(m), int(t), int(c)) for m, t, c in db.execute(
            "SELECT meter, ts, code FROM event WHERE batch IS NULL ORDER BY ts LIMIT ?",
            (limit_rows * 4,))]
        rows = [Row(m, k, ts, self._values(bytes(p))) for m, k, ts, p in db.execute(
            "SELECT meter, kind, ts, payload FROM reading WHERE batch IS NULL "
            "ORDER BY ts, meter, kind LIMIT ?", (limit_rows,))]
        return rows, events

    def store_batch(self, seq: int, payload: bytes, rows: list[Row],
                    events: list[tuple[int, int, int]], created: float) -> None:
        """Store a sealed batch and mark its rows as carried, atomically."""
        def tx(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO batch(seq, created, payload, rows, events) VALUES (?,?,?,?,?)",
                       (seq, created, payload, len(rows), len(events)))
            db.executemany("UPDATE reading SET batch=? WHERE meter=? AND kind=0 AND slot=?",
                           [(seq, r.meter, r.ts) for r in rows if r.kind == PROFILE])
            db.executemany("UPDATE reading SET batch=? WHERE meter=? AND kind=1 AND ts=?",
                           [(seq, r.meter, r.ts) for r in rows if r.kind == SNAPSHOT])
            db.executemany("UPDATE event SET batch=? WHERE meter=? AND ts=? AND code=?",
                           [(seq, m, t, c) for m, t, c in events])
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_seq', ?)",
                       (str(seq).encode(),))
        self._write(tx)

    def ack_batch(self, seq: int, when: float, state_key: str = "", state: bytes = b"") -> None:
        """Mark ``seq`` acknowledged, and persist the codec state in the same transaction."""
        def tx(db: sqlite3.Connection) -> None:
            db.execute("UPDATE batch SET acked=? WHERE seq=?", (when, seq))
            if state_key:
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                           (state_key, state))
        self._write(tx)

    def backlog(self) -> dict[str, int]:
        db = self.conn
        return {
            "batches_pending": db.execute(
                "SELECT COUNT(*) FROM batch WHERE acked IS NULL").fetchone()[0],
            "rows_unbatched": db.execute(
                "SELECT COUNT(*) FROM reading WHERE batch IS NULL").fetchone()[0],
            "events_unbatched": db.execute(
                "SELECT COUNT(*) FROM event WHERE batch IS NULL").fetchone()[0],
            "bytes_pending": db.execute(
                "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM batch WHERE acked IS NULL"
            ).fetchone()[0],
        }

    def unbatch(self, seq: int) -> None:
        """Forget an unacknowledged batch: its rows become unbatched again."""
        def tx(db: sqlite3.Connection) -> None:
            db.execute("UPDATE reading SET batch=NULL WHERE batch=?", (seq,))
            db.execute("UPDATE event SET batch=NULL WHERE batch=?", (seq,))
            db.execute("DELETE FROM batch WHERE seq=? AND acked IS NULL", (seq,))
        self._write(tx)

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
        r = db.execute("SELECT COUNT(*), MIN(ts), MAX(ts) FROM reading").fetchone()
        size = sum(os.path.getsize(p) for p in (self.path, self.path + "-wal")
                   if os.path.exists(p))
        return {"path": self.path, "bytes": size, "rows": r[0], "oldest": r[1], "newest": r[2],
                "events": db.execute("SELECT COUNT(*) FROM event").fetchone()[0],
                "meters": db.execute("SELECT COUNT(*) FROM meter").fetchone()[0],
                "schema": db.execute("PRAGMA user_version").fetchone()[0]}

