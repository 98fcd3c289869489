"""Read queries of the PostgreSQL store (the API's and the exports' side),
kept apart from the write path in ``hes_lite.store.postgres``.

Owns SELECTs only. The API's reads share one connection of their own; an
export streams on a fresh connection through a server-side cursor inside a
read-only REPEATABLE READ transaction, so it sees one snapshot, holds no
writer's lock and never has every row in memory. Must not know HTTP or
file formats.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from hes_lite.store import Cell, ConcentratorInfo, Event, StoreError
from hes_lite.store import postgres_schema as schema

FETCH = 20_000   # rows per round trip of an export's cursor
_FAR = 1 << 62


class PostgresQueries:
    """Mixed into ``PostgresStore``, which provides the connections."""

    url: str
    _rlock: threading.RLock
    _wlock: threading.RLock

    if TYPE_CHECKING:   # provided by PostgresStore
        def _reader(self) -> Any: ...
        def _writer(self) -> Any: ...
        def _connect(self) -> Any: ...

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        import psycopg
        with self._rlock:
            try:
                return list(self._reader().execute(sql, args).fetchall())
            except psycopg.Error as e:
                raise StoreError(f"query failed: {str(e).strip().splitlines()[0]}",
                                 url=self.url) from None

    def backlog(self) -> list[str]:
        return [r[0] for r in self._read(
            "SELECT DISTINCT c.device FROM raw_batches r JOIN concentrators c "
            "ON c.id = r.concentrator_id WHERE NOT r.decoded ORDER BY c.device")]

    def concentrators(self) -> list[ConcentratorInfo]:
        rows = self._read(
            "SELECT c.device, c.first_seen, c.last_seen, c.last_seq, c.batches, "
            "coalesce(b.p, 0), coalesce(m.n, 0) FROM concentrators c "
            "LEFT JOIN (SELECT concentrator_id, count(*) AS p FROM raw_batches "
            "WHERE NOT decoded GROUP BY 1) b ON b.concentrator_id = c.id "
            "LEFT JOIN (SELECT concentrator_id, count(*) AS n FROM meters GROUP BY 1) m "
            "ON m.concentrator_id = c.id ORDER BY c.device")
        return [ConcentratorInfo(r[0], r[1], r[2], None if r[3] is None else int(r[3]),
                                 int(r[4]), int(r[5]), int(r[6])) for r in rows]

    def meters(self, limit: int | None = None, after: str = "") -> list[dict[str, object]]:
        rows = self._read(
            "SELECT m.meter, c.device, (SELECT max(ts) FROM readings r WHERE r.meter_id = m.id), "
            "m.result, m.result_error, m.result_since FROM meters m LEFT JOIN concentrators c "
            "ON c.id = m.concentrator_id WHERE m.meter > %s ORDER BY m.meter LIMIT %s",
            (after, limit))
        return [{"meter": r[0], "concentrator": r[1],
                 "last_reading": None if r[2] is None else int(r[2]),
                 "last_result": None if r[3] is None else
                 {"status": r[3], "error": r[4], "since": int(r[5])}} for r in rows]

    def units(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self._read("SELECT obis, unit FROM obis_codes ORDER BY obis")}

    def readings(self, meter: str, start: int | None = None,
                 end: int | None = None) -> Iterator[tuple[str, int, Cell, str]]:
        codes = {int(r[0]): (str(r[1]), str(r[2])) for r in
                 self._read("SELECT id, obis, unit FROM obis_codes")}
        for _, ts, oid, i, f in self._stream(meter, start, end):
            obis, unit = codes[oid]
            yield obis, ts, i if i is not None else f, unit

    def rows(self, meter: str | None = None, start: int | None = None,
             end: int | None = None) -> Iterator[tuple[str, int, dict[str, Cell]]]:
        codes = {int(r[0]): str(r[1]) for r in self._read("SELECT id, obis FROM obis_codes")}
        rank = {oid: n for n, oid in enumerate(sorted(codes, key=codes.__getitem__))}
        in_order = sorted(codes) == sorted(codes, key=codes.__getitem__)
        for (name, ts), group in groupby(self._stream(meter, start, end), key=itemgetter(0, 1)):
            cells = list(group)
            if not in_order:
                cells.sort(key=lambda g: rank[g[2]])
            yield name, ts, {codes[oid]: i if i is not None else f for _, _, oid, i, f in cells}

    def _stream(self, meter: str | None, start: int | None, end: int | None
                ) -> Iterator[tuple[str, int, int, int | None, float | None]]:
        """(meter, ts, OBIS id, i, f) by meter name, ts, OBIS id, fetched as
        the consumer asks, from one snapshot."""
        import psycopg
        lo = -_FAR if start is None else int(start)
        hi = _FAR if end is None else int(end)
        # meter by meter (an index scan each, merged across partitions), so
        # the rows stream without one big sort of the whole selection
        sql = ("SELECT m.meter, r.ts, r.obis_id, r.i, r.f FROM meters m CROSS JOIN LATERAL "
               "(SELECT ts, obis_id, i, f FROM readings WHERE meter_id = m.id "
               "AND ts >= %s::bigint AND ts <= %s::bigint ORDER BY ts, obis_id) r")
        args: list[object] = [lo, hi]
        if meter is not None:
            sql += " WHERE m.meter = %s"
            args.append(meter)
        conn = self._connect()
        try:
            conn.autocommit = False
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            with conn.cursor(name="hes_export", binary=True) as cur:
                cur.itersize = FETCH
                cur.execute(sql + " ORDER BY m.meter, r.ts, r.obis_id", args)
                yield from cur
        except psycopg.Error as e:
            raise StoreError(f"export query failed: {str(e).strip().splitlines()[0]}",
                             url=self.url) from None
        finally:
            conn.close()

    def events(self, meter: str | None = None, start: int | None = None,
               end: int | None = None, limit: int = 1000) -> list[Event]:
        sql = ("SELECT m.meter, e.ts, e.code, e.name FROM events e JOIN meters m "
               "ON m.id = e.meter_id WHERE e.ts >= %s AND e.ts <= %s")
        args: list[object] = [-_FAR if start is None else start, _FAR if end is None else end]
        if meter is not None:
            sql += " AND m.meter = %s"
            args.append(meter)
        sql += " ORDER BY e.ts, m.meter LIMIT %s"
        args.append(limit)
        return [(r[0], int(r[1]), int(r[2]), r[3]) for r in self._read(sql, args)]

    def counts(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self._read(
            "SELECT name, sum(value)::bigint FROM counters GROUP BY name ORDER BY name")}

    def rejects(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self._read(
            "SELECT reason, sum(count)::bigint FROM rejects GROUP BY reason ORDER BY reason")}

    def partitions(self) -> list[dict[str, object]]:
        with self._rlock:
            import psycopg
            try:
                found = schema.partitions(self._reader())
            except psycopg.Error as e:
                raise StoreError(f"query failed: {e}", url=self.url) from None
        return [{"table": name, "month": "%04d-%02d" % (m // 12, m % 12 + 1),
                 "from": schema.month_start(m), "to": schema.month_start(m + 1), "rows": n}
                for m, (name, n) in sorted(found.items())]
