"""The archive across an update that is rolled back (agent.archive_migrate,
docs/firmware.md "The archive across an update"): a new version on trial
applies only additive schema steps, so the version before it opens the
archive it left — newer, additive — and goes on reading and writing it
with nothing lost; a breaking step waits for the commit, and after it an
older agent refuses the archive. The fake new versions here are the real
``Archive`` with steps appended to ``MIGRATIONS`` (the Linux end to end,
tests/test_update_linux.py, rolls back a version whose wheel adds one).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent import archive as archive_mod
from agent.archive import MIGRATIONS, Archive, ArchiveError
from agent.archive_migrate import NOT_ADDITIVE, is_breaking
from agent.slots import Slots
from agent.update import on_trial

OLD = list(MIGRATIONS)
ADDITIVE = """
    CREATE TABLE trial_note(id INTEGER PRIMARY KEY, text TEXT);
    ALTER TABLE batch ADD COLUMN origin TEXT
"""
BREAKING = """-- breaking: the old agents' batch table goes
    ALTER TABLE batch RENAME TO batch_v2
"""


def _open(path: Path, steps: list[str], monkeypatch: pytest.MonkeyPatch,
          contract: bool = False) -> Archive:
    monkeypatch.setattr(archive_mod, "MIGRATIONS", steps)
    return Archive(str(path)).open(contract)


def _schema(path: Path) -> int:
    return int(sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0])


def test_every_shipped_step_is_additive_or_marked_breaking() -> None:
    for n, script in enumerate(MIGRATIONS, 1):
        if is_breaking(script):
            continue
        code = " ".join(line for line in script.upper().splitlines()
                        if not line.strip().startswith("--"))
        assert not [w for w in NOT_ADDITIVE if w in code], (
            "schema step %d is not additive: mark it '-- breaking' (docs/firmware.md)" % n)


def test_the_old_version_uses_an_archive_a_trial_migrated(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    p = tmp_path / "archive.db"
    a = _open(p, OLD, monkeypatch)
    assert a.next_boot_epoch() == 1
    a.close()
    # the new version, on trial, adds a step and stores what its cycles produce
    new = _open(p, OLD + [ADDITIVE], monkeypatch)
    assert new.pending == 0 and _schema(p) == len(OLD) + 1
    assert new.next_boot_epoch() == 2
    new.conn.execute("INSERT INTO trial_note(text) VALUES ('written on trial')")
    new.close()
    # rolled back: the old version opens it as it is, reads and writes it
    old = _open(p, OLD, monkeypatch, contract=True)
    assert _schema(p) == len(OLD) + 1                     # nothing undone
    assert old.next_boot_epoch() == 3                     # the counter never goes back
    assert old.conn.execute("SELECT text FROM trial_note").fetchall() == [("written on trial",)]
    old.close()


def test_a_breaking_step_waits_for_the_commit(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "archive.db"
    _open(p, OLD, monkeypatch).close()
    new = _open(p, OLD + [ADDITIVE, BREAKING], monkeypatch, contract=False)   # on trial
    assert new.pending == 1 and _schema(p) == len(OLD) + 1
    new.close()
    # a rollback now: the old version starts
    _open(p, OLD, monkeypatch, contract=True).close()
    # the update again, committed this time: the deferred step is applied in place
    new = _open(p, OLD + [ADDITIVE, BREAKING], monkeypatch, contract=False)
    assert new.upgrade() == 1 and new.pending == 0 and _schema(p) == len(OLD) + 2
    assert new.conn.execute("SELECT count(*) FROM batch_v2").fetchone() == (0,)
    new.close()
    # past the breaking step an older agent refuses clearly (and a version that is not on
    # trial applies such a step at once)
    with pytest.raises(ArchiveError, match="newer than this agent .* breaking step"):
        _open(p, OLD + [ADDITIVE], monkeypatch)
    q = tmp_path / "fresh.db"
    _open(q, OLD + [ADDITIVE, BREAKING], monkeypatch, contract=True).close()
    assert _schema(q) == len(OLD) + 2


def test_an_archive_of_unknown_compatibility_is_refused(tmp_path: Path) -> None:
    """Newer than this agent and not saying which agents may use it."""
    p = tmp_path / "archive.db"
    Archive(str(p)).open().close()
    db = sqlite3.connect(p)
    db.execute("DELETE FROM meta WHERE key='schema_compat'")
    db.execute("PRAGMA user_version=%d" % (len(OLD) + 1))
    db.commit()
    db.close()
    with pytest.raises(ArchiveError, match="newer"):
        Archive(str(p)).open()


def test_on_trial_is_the_launchers_trial_of_this_slot(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    slots = Slots(str(tmp_path / "slots"))
    for s in ("a", "b"):
        (tmp_path / "slots" / s).mkdir(parents=True)
        (tmp_path / "slots" / s / "manifest.json").write_text('{"version": "0.1.0"}')
    monkeypatch.setenv("WUM_SLOTS", slots.base)
    monkeypatch.delenv("WUM_SLOT", raising=False)
    assert not on_trial()                                 # not started by the launcher
    monkeypatch.setenv("WUM_SLOT", "a")
    slots.save({"active": "a", "previous": None, "trial": None, "last": None})
    assert not on_trial()
    slots.switch("b", trial={"deadline": 0})
    assert not on_trial()                                 # the old slot, not the trial
    monkeypatch.setenv("WUM_SLOT", "b")
    assert on_trial()
    slots.commit()
    assert not on_trial()
