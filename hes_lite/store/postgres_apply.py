"""The PostgreSQL store's merge of decoded batches: readings, events, cycle
results, codec states and the "decoded" marks in one transaction.

Readings go by binary ``COPY`` straight into their month's partition,
inside a savepoint: when no reading of the group exists yet (the steady
state: an hour nobody has sent before) that is all the server does. Before
it the transaction locks the ``readings`` parent (so a concurrent DETACH
waits for this commit) and checks that the partitions are attached. A
unique violation (a resent reading, or another worker's) or a partition not
attached rolls back to the savepoint, and the rows go the general way: a
binary ``COPY`` into the connection's temporary staging table
(``postgres_copy``) and ``INSERT … SELECT … ON CONFLICT DO NOTHING`` keyed
``(meter, obis, ts)`` into ``readings``. Either way the outcome is the
same rows.

Codec states are compare-and-set: with ``bases`` the transaction takes an
advisory lock per concentrator (in id order, so workers cannot deadlock on
them), skips every concentrator whose stored state is not the base its
batches were decoded from, and reports what is still undecoded.
Must not know envelopes or codecs.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hes_lite.store import Applied, Cell, DecodedBatch, StoreError
from hes_lite.store import postgres_schema as schema
from hes_lite.store.postgres_copy import (
    COLUMNS,
    READING_COLUMNS,
    CopyError,
    ReadingRows,
    StagingRows,
)

LOCK_CODEC = 0x68657303   # pg_advisory_xact_lock(LOCK_CODEC, concentrator id)

_SELECT = (
    "SELECT s.meter_id, s.ts, u.o, u.v, NULL::float8 FROM readings_in s, "
    "unnest(s.io, s.iv) AS u(o, v) "
    "UNION ALL SELECT s.meter_id, s.ts, u.o, NULL, u.v FROM readings_in s, "
    "unnest(s.fo, s.fv) AS u(o, v) "
    "UNION ALL SELECT s.meter_id, s.ts, u.o, NULL, NULL FROM readings_in s, "
    "unnest(s.no) AS u(o)")
MERGE = "INSERT INTO readings (meter_id, ts, obis_id, i, f) " + _SELECT + \
    " ON CONFLICT DO NOTHING"
ATTACHED = ("SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'readings'::regclass AND NOT i.inhdetachpending "
            "AND c.relname = ANY(%s)")


class PostgresApply:
    """Mixed into ``PostgresStore``, which provides ``_txn``, ``_retrying``,
    the id caches and ``ensure_months``."""

    _conc_ids: dict[str, int]
    _meter_ids: dict[str, int]
    _obis_ids: dict[str, int]
    _shard: int
    _wlock: threading.RLock
    url: str

    if TYPE_CHECKING:   # provided by PostgresStore
        def _txn(self, sync: bool) -> Any: ...
        def _retrying(self, body: Any, *args: Any) -> Any: ...
        def ensure_months(self, months: set[int]) -> None: ...

    def apply(self, decoded: Sequence[DecodedBatch],
              bases: Mapping[str, int | None] | None = None) -> Applied:
        if not decoded and not bases:
            return Applied()
        months = {schema.month_of(ts) for ts in {row[1] for d in decoded for row in d.rows}}
        out: Applied = self._retrying(self._apply_in, decoded, bases, months)
        return out

    def _apply_in(self, decoded: Sequence[DecodedBatch],
                  bases: Mapping[str, int | None] | None, months: set[int]) -> Applied:
        self.ensure_months(months)   # again on a retry: the months may have been detached
        return self._apply(decoded, bases)

    def _apply(self, decoded: Sequence[DecodedBatch],
               bases: Mapping[str, int | None] | None) -> Applied:
        with self._txn(sync=False) as c:
            devices = {d.device for d in decoded} | set(bases or ())
            cids = self._concentrator_ids(c, devices)
            out = Applied()
            if bases is not None:
                out.conflicts = self._compare_states(c, cids, bases)
                decoded = [d for d in decoded if d.device not in out.conflicts]
            self._meter_ids_for(c, decoded, cids)
            new_values = self._merge_readings(c, decoded)
            new_events = self._insert_events(c, decoded)
            self._write_results(c, decoded)
            self._write_states(c, decoded, cids)
            marks = [(cids[d.device], d.seq) for d in decoded]
            if marks:
                c.execute("UPDATE raw_batches r SET decoded = true FROM unnest(%s::int[], "
                          "%s::bigint[]) AS u(c, s) WHERE r.concentrator_id = u.c "
                          "AND r.seq = u.s AND NOT r.decoded",
                          ([m[0] for m in marks], [m[1] for m in marks]))
            if bases:
                names = {cids[d]: d for d in bases}
                for cid, seq in c.execute(
                        "SELECT concentrator_id, seq FROM raw_batches WHERE NOT decoded "
                        "AND concentrator_id = ANY(%s)", (sorted(names),)):
                    out.pending.setdefault(names[cid], set()).add(int(seq))
            new_rows = sum(len(d.rows) for d in decoded) if new_values > 0 else 0
            if new_values or new_rows or new_events:   # last: the shard row is held to commit
                c.execute("INSERT INTO counters AS k (name, shard, value) SELECT n, %s, v "
                          "FROM unnest(%s::text[], %s::bigint[]) AS u(n, v) "
                          "ON CONFLICT (name, shard) DO UPDATE SET value = k.value + excluded.value",
                          (self._shard, ["readings", "reading_rows", "events"],
                           [new_values, new_rows, new_events]))
        return out

    # -- ids -----------------------------------------------------------------------
    def _concentrator_ids(self, c: Any, devices: set[str]) -> dict[str, int]:
        missing = sorted(devices - set(self._conc_ids))
        if missing:
            c.execute("INSERT INTO concentrators (device, first_seen, last_seen) "
                      "SELECT d, 0, 0 FROM unnest(%s::text[]) AS u(d) "
                      "ON CONFLICT (device) DO NOTHING", (missing,))
            for d, i in c.execute("SELECT device, id FROM concentrators WHERE device = ANY(%s)",
                                  (missing,)):
                self._conc_ids[d] = int(i)
        return {d: self._conc_ids[d] for d in devices}

    def _compare_states(self, c: Any, cids: dict[str, int],
                        bases: Mapping[str, int | None]) -> set[str]:
        ids = sorted(cids[d] for d in bases)
        c.execute("SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int[]) "
                  "WITH ORDINALITY AS u(k, n) ORDER BY n", (LOCK_CODEC, ids))
        held = {int(r[0]): int(r[1]) for r in c.execute(
            "SELECT concentrator_id, seq FROM codec_states WHERE concentrator_id = ANY(%s)",
            (ids,))}
        return {d for d, base in bases.items() if held.get(cids[d]) != base}

    def _meter_ids_for(self, c: Any, decoded: Sequence[DecodedBatch],
                       cids: dict[str, int]) -> None:
        """Give every new meter of these batches an id (in name order, so
        workers adding the same meters cannot deadlock), and file each meter
        read under the concentrator that read it last (a meter moved to
        another bus follows; commands go where it is now). The move is
        decided by the database, not a cache: another worker may have moved
        the meter meanwhile."""
        known = self._meter_ids
        new: dict[str, int] = {}
        reader: dict[str, int] = {}
        for d in decoded:
            cid = cids[d.device]
            for r in d.rows:
                reader[r[0]] = cid
            for name in [r[0] for r in d.rows] + [e[0] for e in d.events] + \
                    [r[0] for r in d.results]:
                if name not in known:
                    new.setdefault(name, cid)
        if new:
            # mostly meters the database knows (another worker's: a shared
            # subscription spreads the concentrators): look them up (an index
            # scan), insert only the rest (new meters, once each). A lookup
            # is cheaper on the server than upserting known rows
            names = sorted(new)
            for mid, name in c.execute("SELECT id, meter FROM meters WHERE meter = ANY(%s)",
                                       (names,)):
                known[name] = int(mid)
            names = [n for n in names if n not in known]
            if names:
                c.execute("INSERT INTO meters (meter, concentrator_id) SELECT * FROM "
                          "unnest(%s::text[], %s::int[]) ON CONFLICT (meter) DO NOTHING",
                          (names, [new[n] for n in names]))
                for mid, name in c.execute("SELECT id, meter FROM meters WHERE meter = ANY(%s)",
                                           (names,)):
                    known[name] = int(mid)
        if reader:
            ids = sorted((known[m], cid) for m, cid in reader.items())
            c.execute("UPDATE meters m SET concentrator_id = u.c FROM unnest(%s::int[], "
                      "%s::int[]) AS u(id, c) WHERE m.id = u.id "
                      "AND m.concentrator_id IS DISTINCT FROM u.c",
                      ([i for i, _ in ids], [cid for _, cid in ids]))

    def _obis_codes(self, c: Any, codes: set[str], units: dict[str, str]) -> None:
        missing = sorted(codes - set(self._obis_ids))
        if not missing:
            return
        c.execute("INSERT INTO obis_codes (obis, unit) SELECT * FROM unnest(%s::text[], "
                  "%s::text[]) ON CONFLICT (obis) DO NOTHING",
                  (missing, [units.get(o, "") for o in missing]))
        for oid, code in c.execute("SELECT id, obis FROM obis_codes WHERE obis = ANY(%s)",
                                   (missing,)):
            self._obis_ids[code] = int(oid)

    # -- the merges ------------------------------------------------------------------
    def _merge_readings(self, c: Any, decoded: Sequence[DecodedBatch]) -> int:
        """COPY the rows into their partitions (or, when that does not go
        through, into staging and merge); returns how many readings were new."""
        shapes: dict[tuple[str, ...], tuple[int, ...]] = {}
        units: dict[str, str] = {}
        for d in decoded:
            for row in d.rows:
                if row[2] not in shapes:
                    shapes[row[2]] = ()
            units.update(d.units)
        if not shapes:
            return 0
        self._obis_codes(c, {o for codes in shapes for o in codes}, units)
        ids = self._obis_ids
        for codes in shapes:
            shapes[codes] = tuple(ids[o] for o in codes)
        meter_ids = self._meter_ids
        by_month: dict[int, ReadingRows] = {}
        month_of: dict[int, int] = {}
        try:
            for d in decoded:
                for meter, ts, codes, values in d.rows:
                    if len(values) != len(codes):
                        raise StoreError("a row's values and OBIS codes differ in number",
                                         meter=meter)
                    month = month_of.get(ts)
                    if month is None:
                        month = month_of[ts] = schema.month_of(ts)
                    rows = by_month.get(month)
                    if rows is None:
                        rows = by_month[month] = ReadingRows()
                    rows.add(meter_ids[meter], ts, shapes[codes], values)
        except CopyError as e:
            raise StoreError(str(e)) from None
        new = self._copy_direct(c, by_month)
        if new is not None:
            return new
        staging = StagingRows()
        for d in decoded:
            for meter, ts, codes, values in d.rows:
                staging.add(meter_ids[meter], ts, shapes[codes], values)
        with c.cursor().copy(f"COPY readings_in ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(staging.data())
        return int(c.execute(MERGE).rowcount)

    def _copy_direct(self, c: Any, by_month: dict[int, ReadingRows]) -> int | None:
        """COPY each month's rows into its partition in a savepoint; None
        (rolled back) on a reading already stored or a partition not attached."""
        import psycopg
        months = sorted(by_month)
        names = [schema.partition_name(m) for m in months]
        try:
            with c.transaction():   # a savepoint
                c.execute("LOCK TABLE ONLY readings IN ROW EXCLUSIVE MODE")
                if c.execute(ATTACHED, (names,)).fetchone()[0] != len(names):
                    raise _NotAttached
                for month, name in zip(months, names, strict=True):
                    with c.cursor().copy(f"COPY {name} ({READING_COLUMNS}) FROM STDIN "
                                         "(FORMAT BINARY)") as cp:
                        cp.write(by_month[month].data())
        except (psycopg.errors.UniqueViolation, _NotAttached):
            return None
        return sum(r.rows for r in by_month.values())

    def _insert_events(self, c: Any, decoded: Sequence[DecodedBatch]) -> int:
        ev = [(self._meter_ids[m], ts, code, name) for d in decoded for m, ts, code, name
              in d.events]
        if not ev:
            return 0
        cols = list(zip(*ev, strict=True))
        return int(c.execute(
            "INSERT INTO events (meter_id, ts, code, name) SELECT * FROM unnest(%s::int[], "
            "%s::bigint[], %s::int[], %s::text[]) ON CONFLICT DO NOTHING",
            [list(col) for col in cols]).rowcount)

    def _write_results(self, c: Any, decoded: Sequence[DecodedBatch]) -> None:
        """Each meter's latest result (later batches win a tie, as applied in
        order): one UPDATE may touch a row once."""
        last: dict[int, tuple[int, str, str | None]] = {}
        for d in decoded:
            for meter, since, status, error in d.results:
                mid = self._meter_ids[meter]
                if mid not in last or last[mid][0] <= since:
                    last[mid] = (since, status, error)
        if not last:
            return
        mids = sorted(last)
        c.execute("UPDATE meters m SET result_since = u.s, result = u.r, result_error = u.e "
                  "FROM unnest(%s::int[], %s::bigint[], %s::text[], %s::text[]) AS u(id, s, r, e) "
                  "WHERE m.id = u.id AND (m.result_since IS NULL OR m.result_since <= u.s)",
                  (mids, [last[m][0] for m in mids], [last[m][1] for m in mids],
                   [last[m][2] for m in mids]))

    def _write_states(self, c: Any, decoded: Sequence[DecodedBatch],
                      cids: dict[str, int]) -> None:
        states: dict[int, tuple[int, bytes]] = {}
        for d in decoded:
            if d.codec_state is not None:
                states[cids[d.device]] = (d.seq, d.codec_state)
        if not states:
            return
        ids = sorted(states)
        c.execute("INSERT INTO codec_states (concentrator_id, seq, state) SELECT * FROM "
                  "unnest(%s::int[], %s::bigint[], %s::bytea[]) ON CONFLICT (concentrator_id) "
                  "DO UPDATE SET seq = excluded.seq, state = excluded.state",
                  (ids, [states[i][0] for i in ids], [states[i][1] for i in ids]))


class _NotAttached(Exception):
    """A month's partition is not (or no longer) attached to ``readings``."""


def value_of(i: int | None, f: float | None) -> Cell:
    return i if i is not None else f
