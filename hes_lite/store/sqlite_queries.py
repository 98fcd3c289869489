"""Read queries of the SQLite store (the API's and the exports' side), kept
apart from the write path in ``hes_lite.store.sqlite``.

Owns SELECTs only. Exports stream on a connection of their own, so a long
export neither holds the writer's lock nor loads everything into memory.
Must not know HTTP or file formats.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from itertools import groupby
from operator import itemgetter

from hes_lite.store import Cell, ConcentratorInfo, Event, StoreError


def connect(path: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
    except sqlite3.Error as e:
        raise StoreError(f"cannot open SQLite database: {e}", path=path) from e
    return conn


class SqliteWriting:
    """What the ``SqliteStore`` mixins rely on: the store provides the
    connection, its lock and ``_write`` transactions."""

    path: str
    _conn: sqlite3.Connection
    _lock: threading.RLock

    def _write(self, sync: str) -> AbstractContextManager[None]:
        raise NotImplementedError


class SqliteQueries:
    """Mixed into ``SqliteStore``, which provides the connection and lock."""

    path: str
    _conn: sqlite3.Connection
    _lock: threading.RLock

    # -- queries ---------------------------------------------------------------
    def backlog(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute(
                "SELECT DISTINCT c.device FROM raw_batches r JOIN concentrators c "
                "ON c.id = r.concentrator_id WHERE r.decoded = 0 ORDER BY c.device")]

    def concentrators(self) -> list[ConcentratorInfo]:
        sql = ("SELECT c.device, c.first_seen, c.last_seen, c.last_seq, "
               "(SELECT count(*) FROM raw_batches r WHERE r.concentrator_id = c.id), "
               "(SELECT count(*) FROM raw_batches r WHERE r.concentrator_id = c.id "
               "AND r.decoded = 0), "
               "(SELECT count(*) FROM meters m WHERE m.concentrator_id = c.id) "
               "FROM concentrators c ORDER BY c.device")
        with self._lock:
            rows = self._conn.execute(sql).fetchall()
        return [ConcentratorInfo(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def meters(self, limit: int | None = None, after: str = "") -> list[dict[str, object]]:
        sql = ("SELECT m.meter, c.device, (SELECT max(ts) FROM readings r WHERE r.meter_id = m.id), "
               "m.result, m.result_error, m.result_since "
               "FROM meters m LEFT JOIN concentrators c ON c.id = m.concentrator_id "
               "WHERE m.meter > ? ORDER BY m.meter LIMIT ?")
        with self._lock:
            rows = self._conn.execute(sql, (after, -1 if limit is None else limit)).fetchall()
        return [{"meter": r[0], "concentrator": r[1], "last_reading": r[2],
                 "last_result": None if r[3] is None else
                 {"status": r[3], "error": r[4], "since": r[5]}} for r in rows]

    def units(self) -> dict[str, str]:
        with self._lock:
            return {r[0]: r[1] for r in self._conn.execute(
                "SELECT obis, unit FROM obis_codes ORDER BY obis")}

    def readings(self, meter: str, start: int | None = None,
                 end: int | None = None) -> Iterator[tuple[str, int, Cell, str]]:
        for _name, cur, codes in self._per_meter(meter, start, end):
            for ts, oid, value in cur:
                obis, unit = codes[oid]
                yield obis, ts, value, unit

    def rows(self, meter: str | None = None, start: int | None = None,
             end: int | None = None) -> Iterator[tuple[str, int, dict[str, Cell]]]:
        obis: dict[int, str] = {}
        rank: dict[int, int] = {}
        in_order = True
        for name, cur, codes in self._per_meter(meter, start, end):
            if len(obis) != len(codes):
                obis = {oid: code for oid, (code, _) in codes.items()}
                rank = {oid: i for i, oid in enumerate(sorted(obis, key=obis.__getitem__))}
                in_order = sorted(obis) == sorted(obis, key=obis.__getitem__)
            for ts, group in groupby(cur, key=itemgetter(0)):
                if in_order:  # ids were handed out in OBIS order: the usual case
                    yield name, ts, {obis[oid]: value for _, oid, value in group}
                else:
                    cells = sorted(group, key=lambda g: rank[g[1]])
                    yield name, ts, {obis[oid]: value for _, oid, value in cells}

    def _per_meter(self, meter: str | None, start: int | None, end: int | None
                   ) -> Iterator[tuple[str, Iterator[tuple[int, int, Cell]],
                                       dict[int, tuple[str, str]]]]:
        """Per meter (name order) a cursor over (ts, OBIS id, value) by ts, on a
        connection of its own so a long export neither holds the write lock
        nor loads everything: rows are fetched as the consumer asks."""
        conn = connect(self.path) if self.path != ":memory:" else self._conn
        try:
            codes = {int(r[0]): (str(r[1]), str(r[2])) for r in
                     conn.execute("SELECT id, obis, unit FROM obis_codes")}
            msql = "SELECT id, meter FROM meters"
            margs: tuple[object, ...] = ()
            if meter is not None:
                msql, margs = msql + " WHERE meter = ?", (meter,)
            meters = conn.execute(msql + " ORDER BY meter", margs).fetchall()
            lo = -(1 << 62) if start is None else int(start)
            hi = (1 << 62) if end is None else int(end)
            q = ("SELECT ts, obis_id, value FROM readings WHERE meter_id = ? "
                 "AND ts >= ? AND ts <= ? ORDER BY ts, obis_id")
            for mid, name in meters:
                yield name, conn.execute(q, (mid, lo, hi)), codes
        finally:
            if conn is not self._conn:
                conn.close()

    def events(self, meter: str | None = None, start: int | None = None,
               end: int | None = None, limit: int = 1000) -> list[Event]:
        sql = ("SELECT m.meter, e.ts, e.code, e.name FROM events e JOIN meters m "
               "ON m.id = e.meter_id WHERE e.ts >= ? AND e.ts <= ?")
        args: list[object] = [-(1 << 62) if start is None else start,
                              (1 << 62) if end is None else end]
        if meter is not None:
            sql += " AND m.meter = ?"
            args.append(meter)
        sql += " ORDER BY e.ts, m.meter LIMIT ?"
        args.append(limit)
        with self._lock:
            return [(r[0], r[1], r[2], r[3]) for r in self._conn.execute(sql, args)]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {r[0]: int(r[1]) for r in
                    self._conn.execute("SELECT name, value FROM counters ORDER BY name")}

    def rejects(self) -> dict[str, int]:
        with self._lock:
            return {r[0]: int(r[1]) for r in self._conn.execute(
                "SELECT reason, sum(count) FROM rejects GROUP BY reason ORDER BY reason")}


