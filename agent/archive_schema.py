"""The archive's schema: one SQL script per migration step (``PRAGMA
user_version`` n -> n + 1), run by ``agent.archive.Archive`` in one
transaction each (old steps never change; a new step is appended), the kinds
of reading rows, the ``Row`` value and the archive's error.

Must not know anything but the archive's tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent import AgentError
from agent.rowcodec import Value

PROFILE = 0   # a load-profile row: slot = ts (an interval boundary)
SNAPSHOT = 1  # a register snapshot: slot = ts // period (one per meter per cycle)
INSTANT = 2   # bit: the instantaneous part of a row (kind | INSTANT, same slot and ts)


class ArchiveError(AgentError):
    """The archive cannot be opened, is corrupt, or the disk is full."""


@dataclass(frozen=True)
class Row:
    """A reading row (``rows()``: whole) or one part of it (``unbatched()``:
    kind may carry INSTANT, and ``slot`` is its key)."""
    meter: int
    kind: int
    ts: int
    values: dict[str, Value]
    slot: int | None = None


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
    # 2 -> 3: the mesh priority of a batch's content (agent.priority): 0 events,
    # 1 energy registers, 2 instantaneous values only (NULL: built before this).
    # Readings need no change: a row's instantaneous part is stored as its own
    # row with kind | 2 (agent.archive.INSTANT); rows stored before stay whole.
    """
    ALTER TABLE batch ADD COLUMN priority INTEGER;
    """,
]
