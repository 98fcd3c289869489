"""How the archive's schema moves between agent versions, so that an update
rolled back never leaves the version before it unable to open its archive
and never loses what is in it (docs/firmware.md, "The archive across an
update").

Owns applying the migration steps of ``agent.archive`` (one SQL script per
step n -> n + 1, each in one transaction, recorded in ``PRAGMA
user_version``) under one rule, *expand, then contract*:

- an **additive** step (every step, unless marked) only adds — tables,
  indexes, columns that may be NULL or have a default, rows. An agent that
  knows fewer steps reads and writes an archive that has it: its queries
  never name what was added. Additive steps run whenever the archive is
  opened, by a version on trial too: should it be rolled back, the version
  before it opens the archive as it is, with everything the trial stored.
- a **breaking** step (its script starts with ``-- breaking``) drops,
  renames or rewrites what older agents use. It records its own version as
  ``schema_compat`` in ``meta``; an agent that knows fewer steps refuses
  the archive. It therefore runs only when the caller says this version is
  here for good (``contract=True``: ``wum run`` not on trial; the rest are
  deferred and ``pending`` counts them). A version on trial works at the
  schema before its breaking steps and applies them when it commits.

An agent knowing N steps opens an archive at schema M > N as it is when
``schema_compat`` <= N (every step past N is additive), else refuses it
with ``ArchiveError`` ("newer"). Must not know slots or updates: the
caller decides ``contract``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from agent import AgentError

log = logging.getLogger(__name__)

BREAKING = "-- breaking"
COMPAT_KEY = "schema_compat"
# What an additive step must not contain (checked by tests for every step not marked).
NOT_ADDITIVE = ("DROP ", "RENAME ", "DELETE ")


class SchemaError(AgentError):
    """Raised as the archive's own error (``agent.archive.ArchiveError``) by the caller."""


def is_breaking(script: str) -> bool:
    return script.lstrip().upper().startswith(BREAKING.upper())


def compat(db: sqlite3.Connection, version: int) -> int:
    """The lowest number of steps an agent must know to use this archive:
    ``schema_compat`` when recorded, else ``version`` (an archive that does
    not say is not shared with older agents)."""
    try:
        r = db.execute("SELECT value FROM meta WHERE key=?", (COMPAT_KEY,)).fetchone()
    except sqlite3.OperationalError:            # no meta table: schema 0
        return version
    if r is None:
        return version
    try:
        return int(bytes(r[0]).decode())
    except (ValueError, UnicodeError):
        return version


def migrate(db: sqlite3.Connection, steps: Sequence[str], contract: bool) -> int:
    """Bring ``db`` (autocommit connection) up to ``steps``; breaking steps
    only with ``contract``. -> the number of steps left pending (0: at the
    newest schema, or at a newer compatible one). Raises ``SchemaError``
    for an archive this agent cannot use."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    known = len(steps)
    if version > known:
        need = compat(db, version)
        if need > known:
            raise SchemaError("archive schema %d is newer than this agent (%d): a breaking "
                              "step needs an agent that knows %d steps" % (version, known, need))
        log.warning("archive schema %d is newer than this agent (%d); the steps past %d are "
                    "additive: using it as it is", version, known, known)
        return 0
    for step in range(version, known):
        script = steps[step]
        hard = is_breaking(script)
        if hard and not contract:
            log.warning("archive schema step %d is breaking: deferred until this version is "
                        "committed (%d steps pending)", step + 1, known - step)
            return known - step
        old = compat(db, step) if step else 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in script.split(";"):
                if _sql(stmt):
                    db.execute(stmt)
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                       (COMPAT_KEY, str(step + 1 if hard else old).encode()))
            db.execute("PRAGMA user_version=%d" % (step + 1))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.info("archive migrated to schema %d%s", step + 1, " (breaking)" if hard else "")
    return 0


def _sql(stmt: str) -> bool:
    """A statement with something besides comments in it."""
    return any(line.strip() and not line.strip().startswith("--")
               for line in stmt.splitlines())
