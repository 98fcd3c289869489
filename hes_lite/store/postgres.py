"""PostgreSQL implementation of the HES-lite store: several HES workers on
one database.

Owns the connections, transactions and the write path's SQL (keys, raw
batches, replay windows, rejects); the decoded-batch merge is in
``postgres_apply``, the reads in ``postgres_queries``, tokens and audit in
``postgres_auth``, the command queue in ``postgres_commands``, update
packages in ``postgres_firmware``, the DDL and partitions in
``postgres_schema``. psycopg 3 (LGPL-3.0, used by import only).

Durability: a transaction that an acknowledgement promises (raw batches,
keys) commits with ``synchronous_commit = on``; the derived tables
(readings, events, codec states) with ``off``, because they are rebuilt
from undecoded raw batches after a crash and a later synchronous commit
flushes them anyway (a lost asynchronous commit loses the rows and the
"decoded" mark together). ``durable=False`` makes every commit
asynchronous (bulk loads and benchmarks only).

Workers: raw batches of one concentrator are serialised by its row in
``concentrators`` (every ``store_raw`` upserts it first, in device order),
and its replay windows are compared with what the caller checked against
before anything is written. Threads: one connection for writes and the
ingest path's reads, one for the API's reads, one per export.
Must not know envelopes, codecs or HTTP.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from hes_lite.store import (
    KeyRecord,
    PendingBatch,
    RawBatch,
    Store,
    StoreConflict,
    StoreError,
    redact,
)
from hes_lite.store import postgres_schema as schema
from hes_lite.store.postgres_apply import PostgresApply
from hes_lite.store.postgres_auth import PostgresAuth
from hes_lite.store.postgres_commands import PostgresCommands
from hes_lite.store.postgres_copy import STAGING_DDL
from hes_lite.store.postgres_firmware import PostgresFirmware
from hes_lite.store.postgres_queries import PostgresQueries

try:
    import psycopg
except ImportError:  # pragma: no cover - the postgresql extra is not installed
    psycopg = None  # type: ignore[assignment]

log = logging.getLogger("hes_lite.store.postgres")
# Deadlocks between workers (PostgreSQL aborts one) and a lost connection
# (made again) are retried by the idempotent writes (raw batches, merges).
RETRIES = 8


class PostgresStore(PostgresQueries, PostgresApply, PostgresAuth, PostgresCommands,
                    PostgresFirmware, schema.PostgresPartitions, Store):
    def __init__(self, url: str, durable: bool = True) -> None:
        if psycopg is None:
            raise StoreError("the PostgreSQL store needs psycopg 3: pip install "
                             "'wum[postgresql]'", url=redact(url))
        self.url = redact(url)
        self._dsn = url
        self.durable = durable
        self._wlock = threading.RLock()
        self._rlock = threading.RLock()
        self._shard = random.randrange(schema.COUNTER_SHARDS)
        self._conc_ids: dict[str, int] = {}
        self._meter_ids: dict[str, int] = {}
        self._obis_ids: dict[str, int] = {}
        self._months: set[int] = set()
        self._w: Any = None
        self._r: Any = None
        conn = self._connect()
        try:
            self.migrated_from = schema.migrate(conn)
        except ValueError as e:
            conn.close()
            raise StoreError("database schema is newer than this hes-lite",
                             version=e.args[0], supported=schema.LATEST) from None
        except psycopg.Error as e:
            conn.close()
            raise StoreError(f"migration failed: {e}", url=self.url) from None
        conn.execute(STAGING_DDL)
        self._w = conn
        self.ensure_months_ahead()

    # -- connections -------------------------------------------------------------
    def _connect(self) -> Any:
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10,
                                   application_name="hes-lite")
            conn.execute("SET jit = off")   # compiling big merges costs more than it saves
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to PostgreSQL: {_first_line(e)}",
                             url=self.url) from None
        return conn

    def _writer(self) -> Any:
        if self._w is None or self._w.closed or self._w.broken:
            self._forget_ids()
            self._w = self._connect()
            self._w.execute(STAGING_DDL)
        return self._w

    def _reader(self) -> Any:
        if self._r is None or self._r.closed or self._r.broken:
            self._r = self._connect()
        return self._r

    def close(self) -> None:
        with self._wlock, self._rlock:
            for c in (self._w, self._r):
                if c is not None:
                    c.close()
            self._w = self._r = None

    def _forget_ids(self) -> None:
        self._conc_ids.clear()
        self._meter_ids.clear()
        self._obis_ids.clear()

    @contextmanager
    def _txn(self, sync: bool) -> Iterator[Any]:
        """One write transaction on the writer connection; psycopg errors
        become ``StoreError`` (the id caches are dropped: ids handed out in a
        rolled-back transaction do not exist)."""
        with self._wlock:
            conn = self._writer()
            try:
                with conn.transaction():
                    if not (sync and self.durable):
                        conn.execute("SET LOCAL synchronous_commit = off")
                    yield conn
            except psycopg.Error as e:
                self._forget_ids()
                lost = isinstance(e, psycopg.OperationalError) and (conn.broken or conn.closed)
                if lost or isinstance(e, (psycopg.errors.DeadlockDetected,
                                          psycopg.errors.SerializationFailure)):
                    raise _Retry(f"write failed: {_first_line(e)}", url=self.url) from e
                if isinstance(e, psycopg.errors.UniqueViolation):
                    raise _Duplicate(f"write failed: {_first_line(e)}", url=self.url) from None
                if isinstance(e, psycopg.errors.CheckViolation) and "partition" in str(e):
                    # another worker detached a month this one thought it had
                    self._months.clear()
                    raise _Retry(f"write failed: {_first_line(e)}", url=self.url) from None
                raise StoreError(f"write failed: {_first_line(e)}", url=self.url) from None
            except BaseException:
                self._forget_ids()
                raise

    def _retrying(self, body: Any, *args: Any) -> Any:
        for attempt in range(RETRIES):
            try:
                return body(*args)
            except _Retry as r:
                log.info("transaction retried after %s (attempt %d)", r.__cause__, attempt + 1)
        raise StoreError("write failed: deadlocks persisted", url=self.url)

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """A read on the writer connection (the ingest path's look-ups)."""
        with self._wlock:
            try:
                return list(self._writer().execute(sql, args).fetchall())
            except psycopg.Error as e:
                raise StoreError(f"query failed: {_first_line(e)}", url=self.url) from None

    # -- keys ------------------------------------------------------------------------
    def add_key(self, device: str, epoch: int, root_key: bytes, now: float) -> None:
        self.add_keys([(device, epoch, root_key)], now)

    def add_keys(self, keys: Sequence[tuple[str, int, bytes]], now: float) -> None:
        try:
            with self._txn(sync=True) as c:
                c.execute("INSERT INTO keys (device, epoch, root_key, revoked, created) "
                          "SELECT d, e, k, false, %s FROM unnest(%s::text[], %s::int[], "
                          "%s::bytea[]) AS u(d, e, k)",
                          (now, [k[0] for k in keys], [k[1] for k in keys],
                           [k[2] for k in keys]))
        except _Duplicate:
            one = keys[0] if len(keys) == 1 else (None, None, b"")
            raise StoreError("key epoch already exists", device=one[0], epoch=one[1]) from None

    def key(self, device: str, epoch: int) -> KeyRecord | None:
        return self.key_records([(device, epoch)])[(device, epoch)]

    def key_records(self, pairs: Iterable[tuple[str, int]]
                    ) -> dict[tuple[str, int], KeyRecord | None]:
        want = set(pairs)
        out: dict[tuple[str, int], KeyRecord | None] = dict.fromkeys(want)
        rows = self._query("SELECT device, epoch, root_key, revoked, created FROM keys "
                           "WHERE device = ANY(%s)", (sorted({d for d, _ in want}),))
        for r in rows:
            if (r[0], r[1]) in want:
                out[(r[0], r[1])] = _key(r)
        return out

    def keys(self, device: str | None = None) -> list[KeyRecord]:
        sql = "SELECT device, epoch, root_key, revoked, created FROM keys"
        args: tuple[object, ...] = ()
        if device is not None:
            sql, args = sql + " WHERE device = %s", (device,)
        return [_key(r) for r in self._query(sql + " ORDER BY device, epoch", args)]

    def revoke(self, device: str) -> int:
        with self._txn(sync=True) as c:
            return int(c.execute("UPDATE keys SET revoked = true WHERE device = %s "
                                 "AND NOT revoked", (device,)).rowcount)

    # -- batches -----------------------------------------------------------------------
    def stored_seqs(self, device: str, seqs: Iterable[int]) -> set[int]:
        return self.stored_seqs_of({device: seqs})[device]

    def stored_seqs_of(self, wanted: Mapping[str, Iterable[int]]) -> dict[str, set[int]]:
        out: dict[str, set[int]] = {d: set() for d in wanted}
        devs, seqs = [], []
        for d, ss in wanted.items():
            for s in ss:
                devs.append(d)
                seqs.append(s)
        if devs:
            for d, s in self._query(
                    "SELECT c.device, r.seq FROM unnest(%s::text[], %s::bigint[]) AS w(d, s) "
                    "JOIN concentrators c ON c.device = w.d JOIN raw_batches r "
                    "ON r.concentrator_id = c.id AND r.seq = w.s", (devs, seqs)):
                out[d].add(int(s))
        return out

    def replay_state(self, device: str, epoch: int) -> bytes | None:
        return self.replay_states([(device, epoch)])[(device, epoch)]

    def replay_states(self, pairs: Iterable[tuple[str, int]]
                      ) -> dict[tuple[str, int], bytes | None]:
        want = set(pairs)
        out: dict[tuple[str, int], bytes | None] = dict.fromkeys(want)
        for d, e, state in self._query(
                "SELECT c.device, w.key_epoch, w.state FROM replay_windows w JOIN concentrators c "
                "ON c.id = w.concentrator_id WHERE c.device = ANY(%s)",
                (sorted({d for d, _ in want}),)):
            if (d, e) in want:
                out[(d, e)] = bytes(state)
        return out

    def store_raw(self, batches: Sequence[RawBatch],
                  windows: Mapping[tuple[str, int], bytes | None] | None = None) -> list[bool]:
        if not batches:
            return []
        return list(self._retrying(self._store_raw, batches, windows))

    def _store_raw(self, batches: Sequence[RawBatch],
                   windows: Mapping[tuple[str, int], bytes | None] | None) -> list[bool]:
        with self._txn(sync=True) as c:
            ids = self._lock_concentrators(c, batches)
            if windows is not None:
                self._compare_windows(c, ids, windows)
            rows = c.execute(
                "INSERT INTO raw_batches (concentrator_id, seq, key_epoch, payload, received) "
                "SELECT * FROM unnest(%s::int[], %s::bigint[], %s::int[], %s::bytea[], "
                "%s::float8[]) ON CONFLICT DO NOTHING RETURNING concentrator_id, seq",
                ([ids[b.device] for b in batches], [b.seq for b in batches],
                 [b.key_epoch for b in batches], [b.payload for b in batches],
                 [b.received for b in batches])).fetchall()
            new = {(int(r[0]), int(r[1])) for r in rows}
            if new:   # a running count, so health never counts the raw batches
                per: dict[int, int] = {}
                for cid, _ in new:
                    per[cid] = per.get(cid, 0) + 1
                c.execute("UPDATE concentrators k SET batches = k.batches + u.n FROM "
                          "unnest(%s::int[], %s::int[]) AS u(id, n) WHERE k.id = u.id",
                          (list(per), list(per.values())))
            out: list[bool] = []
            states: dict[tuple[int, int], bytes] = {}
            for b in batches:
                k = (ids[b.device], b.seq)
                out.append(k in new)
                new.discard(k)
                if out[-1] and b.replay_state is not None:
                    states[(k[0], b.key_epoch)] = b.replay_state
            if states:
                c.execute("INSERT INTO replay_windows (concentrator_id, key_epoch, state) "
                          "SELECT * FROM unnest(%s::int[], %s::int[], %s::bytea[]) "
                          "ON CONFLICT (concentrator_id, key_epoch) DO UPDATE "
                          "SET state = excluded.state",
                          ([k[0] for k in states], [k[1] for k in states], list(states.values())))
        return out

    def _lock_concentrators(self, c: Any, batches: Sequence[RawBatch]) -> dict[str, int]:
        """Upsert the batches' concentrators in device order (the row locks
        serialise workers storing batches of one concentrator, without
        deadlocks); their ids."""
        agg: dict[str, tuple[float, float, int]] = {}
        for b in batches:
            lo, hi, seq = agg.get(b.device, (b.received, b.received, b.seq))
            agg[b.device] = (min(lo, b.received), max(hi, b.received), max(seq, b.seq))
        devs = sorted(agg)
        rows = c.execute(
            "INSERT INTO concentrators AS k (device, first_seen, last_seen, last_seq) "
            "SELECT * FROM unnest(%s::text[], %s::float8[], %s::float8[], %s::bigint[]) "
            "ON CONFLICT (device) DO UPDATE SET last_seen = greatest(k.last_seen, "
            "excluded.last_seen), last_seq = greatest(k.last_seq, excluded.last_seq) "
            "RETURNING device, id",
            (devs, [agg[d][0] for d in devs], [agg[d][1] for d in devs],
             [agg[d][2] for d in devs])).fetchall()
        ids = {str(d): int(i) for d, i in rows}
        self._conc_ids.update(ids)   # spares the decode's transaction looking them up
        return ids

    def _compare_windows(self, c: Any, ids: dict[str, int],
                         windows: Mapping[tuple[str, int], bytes | None]) -> None:
        held = {(int(r[0]), int(r[1])): bytes(r[2]) for r in c.execute(
            "SELECT concentrator_id, key_epoch, state FROM replay_windows "
            "WHERE concentrator_id = ANY(%s)", ([ids[d] for d, _ in windows if d in ids],))}
        moved = sorted({d for (d, e), state in windows.items()
                        if d in ids and held.get((ids[d], e)) != state})
        if moved:
            raise StoreConflict("replay window changed by another worker", devices=moved)

    def codec_state(self, device: str) -> tuple[int, bytes] | None:
        return self.codec_states([device])[device]

    def codec_states(self, devices: Iterable[str]) -> dict[str, tuple[int, bytes] | None]:
        want = set(devices)
        out: dict[str, tuple[int, bytes] | None] = dict.fromkeys(want)
        for d, seq, state in self._query(
                "SELECT c.device, s.seq, s.state FROM codec_states s JOIN concentrators c "
                "ON c.id = s.concentrator_id WHERE c.device = ANY(%s)", (sorted(want),)):
            out[d] = (int(seq), bytes(state))
        return out

    def raw_range(self, device: str, first: int, last: int) -> list[PendingBatch]:
        rows = self._query(
            "SELECT r.seq, r.key_epoch, r.payload, r.decoded FROM raw_batches r "
            "JOIN concentrators c ON c.id = r.concentrator_id WHERE c.device = %s "
            "AND r.seq >= %s AND r.seq <= %s ORDER BY r.seq", (device, first, last))
        return [PendingBatch(device, int(r[0]), int(r[1]), bytes(r[2]), bool(r[3]))
                for r in rows]

    def pending(self, device: str | None = None) -> list[PendingBatch]:
        sql = ("SELECT c.device, r.seq, r.key_epoch, r.payload FROM raw_batches r "
               "JOIN concentrators c ON c.id = r.concentrator_id WHERE NOT r.decoded")
        args: tuple[object, ...] = ()
        if device is not None:
            sql, args = sql + " AND c.device = %s", (device,)
        rows = self._query(sql + " ORDER BY c.device, r.seq", args)
        return [PendingBatch(r[0], int(r[1]), int(r[2]), bytes(r[3])) for r in rows]

    def count_reject(self, device: str, reason: str, now: float) -> None:
        with self._txn(sync=False) as c:
            c.execute("INSERT INTO rejects AS r (device, reason, count, last_seen) "
                      "VALUES (%s, %s, 1, %s) ON CONFLICT (device, reason) DO UPDATE "
                      "SET count = r.count + 1, last_seen = excluded.last_seen",
                      (device, reason, now))

class _Retry(StoreError):
    """A transaction PostgreSQL aborted to break a deadlock, or whose
    connection was lost: run it again (on a new connection)."""


class _Duplicate(StoreError):
    """A unique key was violated."""


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _key(row: tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(str(row[0]), int(row[1]), bytes(row[2]), bool(row[3]), float(row[4]))
