"""The archive's upload queue: batches and the backlog they are built from,
and the counters that must never go back (``agent.epochs``).

Owns the ``batch`` table and the ``batch`` column of readings and events:
the backlog in the order a constrained uplink sends it (events, then the
energy parts of rows, then their instantaneous parts, each oldest first),
sealed batches stored with the items they carry and their mesh priority,
acknowledgements, and the boot/mesh epochs and last seq kept in the archive
and in ``<archive>.epochs`` (the larger wins). A mixin of
``agent.archive.Archive``; must not know codecs, envelopes or transports.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from agent.archive_schema import INSTANT, SNAPSHOT, ArchiveError, Row
from agent.epochs import NAMES as EPOCHS
from agent.epochs import EpochFile
from agent.rowcodec import Value

T = TypeVar("T")


class BatchQueue:
    if TYPE_CHECKING:               # provided by agent.archive.Archive
        path: str
        epochs: EpochFile

        @property
        def conn(self) -> sqlite3.Connection: ...
        def meta(self, key: str) -> bytes | None: ...
        def set_meta(self, key: str, value: bytes) -> None: ...
        def _write(self, fn: Callable[..., T], *args: object) -> T: ...
        def _values(self, payload: bytes) -> dict[str, Value]: ...

    # -- counters that never go back (agent.epochs) ---------------------------
    def high_water(self, name: str) -> int:
        """The larger of the archive's and the epoch file's value of ``name``
        (``boot_epoch``, ``mesh_epoch``, ``last_seq``); 0 when neither has one."""
        return max(self._meta_int(name), self.epochs.load().get(name, 0))

    def raise_high_water(self, name: str, value: int) -> None:
        """Make ``name`` at least ``value``: the epoch file first (durable, with
        every counter at its high-water mark), then the archive."""
        self._save_epochs({name: value})
        self.set_meta(name, str(max(value, self._meta_int(name))).encode())

    def next_boot_epoch(self) -> int:
        """Increment and persist the boot epoch (the envelope's counter prefix)."""
        n = self.high_water("boot_epoch") + 1
        self.raise_high_water("boot_epoch", n)
        return n

    def _meta_int(self, name: str) -> int:
        raw = self.meta(name)
        try:
            return int(raw.decode()) if raw else 0
        except ValueError:
            raise ArchiveError("meta %s is not a number" % name, path=self.path,
                               reason="corrupt") from None

    def _save_epochs(self, values: dict[str, int]) -> None:
        have = self.epochs.load()
        out = {k: max(have.get(k, 0), self._meta_int(k), values.get(k, 0)) for k in EPOCHS}
        out["last_seq"] = max(out["last_seq"], self._max_seq())
        if out != have:
            self.epochs.save(out)

    def _max_seq(self) -> int:
        r = self.conn.execute("SELECT MAX(seq) FROM batch").fetchone()
        return int(r[0]) if r[0] is not None else 0

    # -- batches -------------------------------------------------------------
    def pending_batch(self) -> tuple[int, bytes] | None:
        r = self.conn.execute(
            "SELECT seq, payload FROM batch WHERE acked IS NULL ORDER BY seq LIMIT 1").fetchone()
        return None if r is None else (int(r[0]), bytes(r[1]))

    def next_seq(self) -> int:
        """One above every seq this concentrator used (epoch file included: a
        recreated archive does not reuse a seq the HES holds)."""
        return max(self._max_seq(), self.high_water("last_seq")) + 1

    def unbatched(self, limit: int) -> tuple[list[Row], list[tuple[int, int, int]]]:
        """The first ``limit`` items not yet in a batch, in the order a
        constrained uplink sends them: events, then the energy parts of rows,
        then their instantaneous parts, each oldest first (ts, meter, kind).
        Returns (row parts in that order, events)."""
        db = self.conn
        events = [(int(m), int(t), int(c)) for m, t, c in db.execute(
            "SELECT meter, ts, code FROM event WHERE batch IS NULL ORDER BY ts, meter, code "
            "LIMIT ?", (limit,))]
        rows: list[Row] = []
        for tier in ("kind < %d" % INSTANT, "kind >= %d" % INSTANT):
            left = limit - len(events) - len(rows)
            if left <= 0:
                break
            rows.extend(Row(m, k, ts, self._values(bytes(p)), slot) for m, k, slot, ts, p in
                        db.execute("SELECT meter, kind, slot, ts, payload FROM reading "
                                   "WHERE batch IS NULL AND " + tier +
                                   " ORDER BY ts, meter, kind LIMIT ?", (left,)))
        return rows, events

    def store_batch(self, seq: int, payload: bytes, rows: list[Row],
                    events: list[tuple[int, int, int]], created: float,
                    priority: int | None = None) -> None:
        """Store a sealed batch and mark its row parts and events as carried,
        atomically; ``seq`` is in the epoch file before (agent.epochs)."""
        self._save_epochs({"last_seq": seq})

        def tx(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO batch(seq, created, payload, rows, events, priority) "
                       "VALUES (?,?,?,?,?,?)",
                       (seq, created, payload, len(rows), len(events), priority))
            db.executemany("UPDATE reading SET batch=? WHERE meter=? AND kind=? AND slot=?",
                           [(seq, r.meter, r.kind, r.ts if r.slot is None else r.slot)
                            for r in rows if r.slot is not None or not r.kind & SNAPSHOT])
            db.executemany("UPDATE reading SET batch=? WHERE meter=? AND kind=? AND ts=?",
                           [(seq, r.meter, r.kind, r.ts) for r in rows
                            if r.slot is None and r.kind & SNAPSHOT])
            db.executemany("UPDATE event SET batch=? WHERE meter=? AND ts=? AND code=?",
                           [(seq, m, t, c) for m, t, c in events])
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_seq', ?)",
                       (str(seq).encode(),))
        self._write(tx)

    def batch_priority(self, seq: int) -> int:
        """The mesh priority of batch ``seq``'s content (agent.priority): 0
        events, 1 energy registers, 2 instantaneous values only; a batch stored
        before priorities were kept: 0 with events, else 1."""
        r = self.conn.execute("SELECT priority, events FROM batch WHERE seq=?",
                              (seq,)).fetchone()
        if r is None:
            return 1
        if r[0] is not None:
            return int(r[0])
        return 0 if r[1] else 1

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
            "rows_unbatched": db.execute(    # rows with a part not yet in a batch
                "SELECT COUNT(*) FROM (SELECT DISTINCT meter, kind & 1, slot FROM reading "
                "WHERE batch IS NULL)").fetchone()[0],
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
