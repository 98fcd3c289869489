"""HES-lite stores: SQLite migrations from kept old schemas, URLs,
idempotent writes and key records that never show key material (both
stores: ``db_url`` runs each test on SQLite and on PostgreSQL)."""

import sqlite3
from pathlib import Path

import pytest

from hes_lite.store import DecodedBatch, RawBatch, StoreError, open_store
from hes_lite.store.migrations import LATEST

FIXTURES = Path(__file__).parent / "fixtures" / "hes"


def old_db(tmp_path, name="schema_v1.sql"):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript((FIXTURES / name).read_text())
    conn.close()
    return path


def test_migrates_v1_fixture_without_losing_rows(tmp_path):
    path = old_db(tmp_path)
    s = open_store(f"sqlite:///{path}")
    assert s.migrated_from == 1
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == LATEST
    assert list(s.rows()) == [
        ("10000001", 1780272000, {"1.0.1.8.0.255": 1234567, "1.0.32.7.0.255": 230.0}),
        ("10000001", 1780275600, {"1.0.1.8.0.255": 1234999, "1.0.32.7.0.255": 229.5})]
    assert s.rejects() == {"bad_tag": 3, "replay": 1}
    assert s.events() == [("10000001", 1780272100, 40, "cover_open")]
    (c,) = s.concentrators()
    assert (c.device, c.batches, c.pending, c.last_seq) == ("conc-old", 2, 1, 2)
    assert s.keys()[0].root_key == bytes(range(16))
    assert s.counts() == {"events": 1, "reading_rows": 2, "readings": 4}
    # the migrated schema takes new writes the same way as a fresh one
    s.count_reject("conc-old", "bad_tag", 1.0)
    assert s.rejects()["bad_tag"] == 4
    s.close()
    assert open_store(str(path)).migrated_from == LATEST


def test_fresh_database_and_newer_schema_refused(tmp_path):
    path = tmp_path / "new.db"
    assert open_store(str(path)).migrated_from == 0
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    with pytest.raises(StoreError) as e:
        open_store(str(path))
    assert e.value.fields["version"] == LATEST + 1


def test_failed_migration_leaves_old_version(tmp_path):
    path = old_db(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE rejects_new (x)")  # makes step 2 fail half-way
    conn.commit()
    conn.close()
    with pytest.raises(StoreError):
        open_store(str(path))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM rejects").fetchone()[0] == 2


@pytest.mark.parametrize("url", ["postgresql://hes:secret@db.invalid/hes",
                                 "postgres://hes:secret@127.0.0.1:1/y"])
def test_postgres_unreachable_is_a_clear_error_without_password(url):
    with pytest.raises(StoreError) as e:
        open_store(url)
    assert "cannot connect to PostgreSQL" in str(e.value)
    assert "secret" not in repr(e.value.fields) and "secret" not in str(e.value)


def test_urls(tmp_path):
    with pytest.raises(StoreError):
        open_store("mysql://x")
    s = open_store("sqlite:///:memory:")
    s.add_key("d", 1, b"k" * 16, 0.0)
    assert [k.device for k in s.keys()] == ["d"]
    assert open_store(f"sqlite:///{tmp_path}/a.db").path == f"{tmp_path}/a.db"


def test_idempotent_writes(db_url):
    s = open_store(db_url)
    raw = RawBatch("c", 1, b"payload", 10.0, 1, b"w")
    assert s.store_raw([raw, raw]) == [True, False]
    d = DecodedBatch("c", 1, [("m", 3600, ("1.0.1.8.0.255",), [5])], [("m", 3600, 1, "x")],
                     b"state", {"1.0.1.8.0.255": "Wh"})
    s.apply([d])
    s.apply([d])
    assert list(s.rows()) == [("m", 3600, {"1.0.1.8.0.255": 5})]
    assert s.counts() == {"events": 1, "reading_rows": 1, "readings": 1}
    assert s.units() == {"1.0.1.8.0.255": "Wh"}
    assert s.codec_state("c") == (1, b"state") and s.replay_state("c", 1) == b"w"
    assert s.stored_seqs("c", range(1000)) == {1}
    s.close()


def test_sqlite_runs_in_wal_mode(tmp_path):
    s = open_store(str(tmp_path / "h.db"))
    assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_key_records_hide_key_material(db_url):
    s = open_store(db_url)
    key = bytes.fromhex("00112233445566778899aabbccddeeff")
    s.add_key("d", 1, key, 0.0)
    with pytest.raises(StoreError):
        s.add_key("d", 1, key, 0.0)
    assert key.hex() not in repr(s.keys()) and key.hex() not in str(s.keys())
    assert s.revoke("d") == 1 and s.revoke("d") == 0 and s.key("d", 1).revoked


def test_migrates_v5_fixture_to_access_control_and_commands(tmp_path):
    """The last schema before issue 11: nothing lost, the new tables work."""
    from hes_lite.store import AuditEntry, NameTaken, TokenRecord

    path = old_db(tmp_path, "schema_v5.sql")
    s = open_store(str(path))
    assert s.migrated_from == 5
    assert list(s.rows()) == [("20000001", 1780272000, {"1.0.1.8.0.255": 4242})]
    assert s.meters()[0]["last_result"] == {"status": "read", "error": None, "since": 1780272000}
    assert s.keys()[0].root_key == bytes(range(32)) and s.rejects() == {"bad_tag": 1}
    s.add_token(TokenRecord("t", "viewer", b"d" * 32, 1.0))
    with pytest.raises(NameTaken):
        s.add_token(TokenRecord("t", "admin", b"e" * 32, 2.0))
    assert s.token(b"d" * 32).name == "t" and s.token(b"e" * 32) is None
    assert s.revoke_token("t", 3.0) and not s.revoke_token("t", 4.0)
    assert s.tokens()[0].revoked == 3.0
    s.add_audit([AuditEntry(5.0, "cli:x", "token.add", "t", detail={"role": "viewer"}),
                 AuditEntry(6.0, "anonymous", "auth", "/v1/meters", "unauthenticated")])
    assert [e.action for e in s.audit_log()] == ["token.add", "auth"]
    assert [e.action for e in s.audit_log(since=6.0)] == ["auth"]
    assert [e.action for e in s.audit_log(limit=1)] == ["auth"]
    assert s.audit_log()[0].detail == {"role": "viewer"}
