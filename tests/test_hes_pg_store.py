"""The PostgreSQL store's own behaviour: versioned migrations (newer schema
refused, a failed step leaves the previous version whole, workers that start
together migrate once), monthly partitions made ahead of need and detached
for retention, values kept exactly (int64, floats, empty cells) through the
binary COPY staging rows, and the compare-and-set of replay windows and
codec states."""

from __future__ import annotations

import threading

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hes_lite.store import DecodedBatch, RawBatch, StoreConflict, StoreError, open_store
from hes_lite.store import postgres_schema as schema
from hes_lite.store.postgres_copy import COLUMNS, STAGING_DDL, StagingRows

JUNE = 1780272000          # 2026-06-01T00:00Z
AUGUST = JUNE + 61 * 86400  # 2026-08-01T00:00Z
E = "1.0.1.8.0.255"


def fresh_db(pg_cluster):
    return pg_cluster.create_database()


def sql(url, q, args=()):
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(q, args)
        return cur.fetchall() if cur.description else None


def test_fresh_database_migrates_once_and_newer_schema_refused(pg_cluster):
    url = fresh_db(pg_cluster)
    assert open_store(url).migrated_from == 0
    assert open_store(url).migrated_from == schema.LATEST
    sql(url, "INSERT INTO schema_version VALUES (%s, 0)", (schema.LATEST + 1,))
    with pytest.raises(StoreError) as e:
        open_store(url)
    assert e.value.fields["version"] == schema.LATEST + 1


def test_failed_migration_leaves_nothing_half_made(pg_cluster):
    url = fresh_db(pg_cluster)
    sql(url, "CREATE TABLE events (x int)")   # step 1 fails on its events table
    with pytest.raises(StoreError):
        open_store(url)
    assert sql(url, "SELECT count(*) FROM schema_version") == [(0,)]
    assert sql(url, "SELECT to_regclass('concentrators')") == [(None,)]  # rolled back whole


def test_workers_starting_together_migrate_once(pg_cluster):
    url = fresh_db(pg_cluster)
    found, errors = [], []

    def start():
        try:
            found.append(open_store(url).migrated_from)
        except StoreError as e:  # pragma: no cover - the failure we test against
            errors.append(e)
    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(found).count(0) == 1
    assert sql(url, "SELECT version FROM schema_version ORDER BY version") == \
        [(v,) for v in range(1, schema.LATEST + 1)]   # each step once


def test_partitions_made_for_the_data_and_ahead(pg_url):
    s = open_store(pg_url)
    rows = [("m1", JUNE + 3600, (E,), [1]), ("m1", AUGUST + 3600, (E,), [2])]
    s.store_raw([RawBatch("c", 1, b"x", 1.0, 0)])
    s.apply([DecodedBatch("c", 1, rows)])
    months = {p["month"]: p for p in s.partitions()}
    assert {"2026-06", "2026-08", "2026-09"} <= set(months)   # september: ahead of need
    assert "2026-07" not in months                            # no month without data
    assert months["2026-06"]["from"] == JUNE and months["2026-06"]["to"] == JUNE + 30 * 86400
    this = schema.month_of(int(__import__("time").time()))
    assert schema.partition_name(this + 2) in {p["table"] for p in s.partitions()}
    where = sql(pg_url, "SELECT tableoid::regclass::text, ts FROM readings ORDER BY ts")
    assert where == [("readings_y2026m06", JUNE + 3600), ("readings_y2026m08", AUGUST + 3600)]


def test_retention_detaches_old_months_and_late_data_gets_a_new_partition(pg_url):
    s = open_store(pg_url)
    s.store_raw([RawBatch("c", 1, b"x", 1.0, 0), RawBatch("c", 2, b"y", 1.0, 0)])
    s.apply([DecodedBatch("c", 1, [("m1", JUNE + 3600, (E,), [1]),
                                   ("m1", AUGUST + 3600, (E,), [2])])])
    assert s.detach_partitions(AUGUST) == ["readings_y2026m06"]
    assert [r[1] for r in s.rows()] == [AUGUST + 3600]          # june is out of the table
    kept = sql(pg_url, "SELECT relname FROM pg_class WHERE relname LIKE "
                       "'readings_y2026m06_detached_%%'")
    assert len(kept) == 1 and sql(pg_url, f"SELECT count(*) FROM {kept[0][0]}") == [(1,)]
    s.apply([DecodedBatch("c", 2, [("m1", JUNE + 7200, (E,), [3])])])  # a late june reading
    assert [r[1] for r in s.rows()] == [JUNE + 7200, AUGUST + 3600]
    # (july was made ahead of need with the new june)
    assert s.detach_partitions(AUGUST, drop=True) == ["readings_y2026m06", "readings_y2026m07"]
    assert len(sql(pg_url, "SELECT relname FROM pg_class WHERE relname LIKE "
                           "'readings_y2026m06%%' AND relkind = 'r'")) == 1  # the first, kept


def test_values_keep_type_and_precision(pg_url):
    s = open_store(pg_url)
    codes = ("0.0.1.0.0.255", "1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.32.7.0.255")
    big = (1 << 62) + 12345   # beyond a double's 53 bits
    s.store_raw([RawBatch("c", 1, b"x", 1.0, 0)])
    s.apply([DecodedBatch("c", 1, [("m", JUNE, codes, [big, -7, None, 230.0])])])
    ((_, _, got),) = list(s.rows())
    assert got == {codes[0]: big, codes[1]: -7, codes[2]: None, codes[3]: 230.0}
    assert [type(v) for v in got.values()] == [int, int, type(None), float]
    with pytest.raises(StoreError):
        s.apply([DecodedBatch("c", 1, [("m", JUNE + 1, codes[:1], [1 << 64])])])
    assert s.counts()["readings"] == 4   # the refused batch wrote nothing


cells = st.one_of(st.none(), st.integers(-(1 << 63), (1 << 63) - 1),
                  st.floats(allow_nan=False, width=64))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(1, 2**31 - 1), st.integers(-(1 << 62), 1 << 62),
                               st.lists(cells, max_size=40)), max_size=20))
def test_staging_rows_round_trip_through_copy(pg_url, rows):
    """Whatever cells a row holds, the COPY bytes give them back exactly
    (PostgreSQL itself parses them)."""
    enc = StagingRows()
    for mid, ts, values in rows:
        enc.add(mid, ts, tuple(range(1, len(values) + 1)), values)
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(STAGING_DDL)
        with c.transaction():
            with c.cursor().copy(f"COPY readings_in ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(enc.data())
            got = c.execute(f"SELECT {COLUMNS} FROM readings_in").fetchall()
    want = []
    for mid, ts, values in rows:
        ids = range(1, len(values) + 1)
        want.append((mid, ts, [o for o, v in zip(ids, values, strict=True) if type(v) is int],
                     [v for v in values if type(v) is int],
                     [o for o, v in zip(ids, values, strict=True) if type(v) is float],
                     [v for v in values if type(v) is float],
                     [o for o, v in zip(ids, values, strict=True) if v is None]))
    assert got == want


def test_stale_replay_window_refused_and_nothing_stored(db_url):
    s = open_store(db_url)
    s.store_raw([RawBatch("c", 1, b"a", 1.0, 0, b"w1")], {("c", 0): None})
    with pytest.raises(StoreConflict) as e:   # checked against no window: another wrote one
        s.store_raw([RawBatch("c", 2, b"b", 1.0, 0, b"w2")], {("c", 0): None})
    assert e.value.fields["devices"] == ["c"]
    assert s.stored_seqs("c", [1, 2]) == {1} and s.replay_state("c", 0) == b"w1"
    assert s.store_raw([RawBatch("c", 2, b"b", 1.0, 0, b"w2")], {("c", 0): b"w1"}) == [True]
    assert s.replay_state("c", 0) == b"w2"


def test_codec_state_compare_and_set(db_url):
    s = open_store(db_url)
    s.store_raw([RawBatch("c", n, b"p", 1.0, 0) for n in (1, 2, 3)] +
                [RawBatch("d", 1, b"p", 1.0, 0)])
    row = lambda n: [("m", JUNE + 3600 * n, (E,), [n])]  # noqa: E731
    out = s.apply([DecodedBatch("c", 1, row(1), codec_state=b"s1")], {"c": None})
    assert not out.conflicts and out.pending == {"c": {2, 3}}
    # a worker that decoded 2 and 3 from "no state" is too late: nothing of c written,
    # d (whose base holds) is written in the same transaction
    out = s.apply([DecodedBatch("c", 2, row(2), codec_state=b"s2-stale"),
                   DecodedBatch("d", 1, [("n", JUNE, (E,), [9])], codec_state=b"d1")],
                  {"c": None, "d": None})
    assert out.conflicts == {"c"} and out.pending == {"c": {2, 3}}
    assert s.codec_state("c") == (1, b"s1") and s.codec_state("d") == (1, b"d1")
    assert sorted(r[0] for r in s.rows()) == ["m", "n"]
    out = s.apply([DecodedBatch("c", 2, row(2), codec_state=b"s2"),
                   DecodedBatch("c", 3, row(3), codec_state=b"s3")], {"c": 1})
    assert not out.conflicts and not out.pending and s.codec_state("c") == (3, b"s3")
    assert s.counts()["readings"] == 4


def test_partitions_command_and_serve_retention_option(pg_url, tmp_path, capsys):
    import json

    from hes_lite.cli import main
    s = open_store(pg_url)
    s.store_raw([RawBatch("c", 1, b"x", 1.0, 0)])
    s.apply([DecodedBatch("c", 1, [("m1", JUNE + 3600, (E,), [1])])])
    now = schema.month_start(schema.month_of(int(__import__("time").time())))
    capsys.readouterr()
    assert main(["partitions", "--db", pg_url, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["detached"] == [] and "2026-06" in [p["month"] for p in listed["partitions"]]
    assert main(["partitions", "--db", pg_url, "--keep-months", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "readings_y2026m06" in doc["detached"]
    assert all(p["to"] > now for p in doc["partitions"])       # only this month and later
    assert list(s.rows()) == []
    assert [e.action for e in s.audit_log()] == ["partitions.detach"]
    sqlite = "sqlite:///%s" % (tmp_path / "h.db")
    assert main(["partitions", "--db", sqlite]) == 2           # PostgreSQL only, said so
    assert "PostgreSQL only" in capsys.readouterr().err
    assert main(["serve", "--db", sqlite, "--retention-months", "3"]) == 2


def test_a_database_owner_without_superuser_is_enough(pg_cluster):
    """What the README asks a DBA for: a login role owning the database."""
    from hes_lite.ingest import Ingestor
    from hes_lite.wire import seal_batch
    sql(pg_cluster.url(), "DROP ROLE IF EXISTS hes_app")
    sql(pg_cluster.url(), "CREATE ROLE hes_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
    sql(pg_cluster.url(), "CREATE DATABASE hes_owned OWNER hes_app")
    url = pg_cluster.url("hes_owned").replace("postgres@", "hes_app@")
    try:
        s = open_store(url)
        key = bytes(32)
        s.add_key("c", 0, key, 0.0)
        env = seal_batch(key, "c", 0, 1, 1, {"m": [(JUNE, {E: 5})]})
        assert Ingestor(s).submit(env).status == "accepted"
        assert list(s.rows()) == [("m", JUNE, {E: 5})]
        assert s.detach_partitions(AUGUST) == ["readings_y2026m06", "readings_y2026m07"]
        s.close()
    finally:
        pg_cluster.drop_database("hes_owned")
        sql(pg_cluster.url(), "DROP ROLE hes_app")


def test_a_lost_connection_is_made_again(pg_url):
    s = open_store(pg_url)
    s.store_raw([RawBatch("c", 1, b"x", 1.0, 0)])
    kill = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'hes-lite' AND pid <> pg_backend_pid()")
    sql(pg_url, kill)
    assert s.store_raw([RawBatch("c", 2, b"y", 1.0, 0)]) == [True]   # retried, reconnected
    sql(pg_url, kill)
    with pytest.raises(StoreError):   # not an idempotent write: one error, then all is well
        s.revoke("c")
    assert s.revoke("c") == 0
    s.apply([DecodedBatch("c", 2, [("m", JUNE, (E,), [1])])])         # staging made again
    assert s.stored_seqs("c", [1, 2]) == {1, 2} and len(list(s.rows())) == 1


def test_a_month_another_worker_detached_is_made_again(pg_url):
    a, b = open_store(pg_url), open_store(pg_url)
    a.store_raw([RawBatch("c", n, b"x", 1.0, 0) for n in (1, 2)])
    a.apply([DecodedBatch("c", 1, [("m", JUNE, (E,), [1])])])
    assert "readings_y2026m06" in b.detach_partitions(AUGUST)
    a.apply([DecodedBatch("c", 2, [("m", JUNE + 3600, (E,), [2])])])  # a thought june was there
    assert list(a.rows()) == [("m", JUNE + 3600, {E: 2})]
