"""The archive: exactly-once storage, compact rows, retention that never
drops unacknowledged data, migrations from old schemas, corrupt files."""

from __future__ import annotations

import math
import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.archive import MIGRATIONS, PROFILE, SNAPSHOT, Archive, ArchiveError
from agent.rowcodec import RowCodecError, decode_row, encode_row
from hil.model import MeterModel

values = st.one_of(
    st.none(), st.integers(min_value=-(2**62), max_value=2**62),
    st.floats(allow_nan=False),
    st.builds(lambda m, k: m / 10**k, st.integers(-(10**12), 10**12), st.integers(0, 6)))


@given(st.lists(st.tuples(st.integers(0, 5000), values), max_size=40))
def test_rowcodec_round_trip(items):
    out = decode_row(encode_row(items))
    assert len(out) == len(items)
    for (a, va), (b, vb) in zip(items, out, strict=True):
        assert a == b
        assert va == vb and type(va) is type(vb) or (isinstance(va, float) and math.isnan(va))


@given(st.binary(max_size=64))
def test_rowcodec_any_bytes_typed_error(data):
    try:
        decode_row(data)
    except RowCodecError:
        pass


def test_rowcodec_is_compact():
    m = MeterModel(1)
    regs = m.registers(1790000000)
    row = encode_row([(i, v) for i, v in enumerate(regs.values())])
    assert len(row) / len(regs) < 5.0


@pytest.fixture
def arc(tmp_path):
    a = Archive(str(tmp_path / "a.db")).open()
    yield a
    a.close()


def test_store_is_idempotent(arc):
    mid = arc.meter_id("bus1", "modbus", "3")
    m = MeterModel(3)
    prof = m.profile(1790000000, 1790000000 + 5 * 3600)
    snap = (1790000007, m.registers(1790000007))
    n1 = arc.store_meter_read(mid, 3600, snap, prof, [(1790000100, 40)])
    n2 = arc.store_meter_read(mid, 3600, snap, prof, [(1790000100, 40)])
    assert n1 == 1 + len(prof) + 1 and n2 == 0
    rows = list(arc.rows(mid, kind=PROFILE))
    assert [(r.ts, r.values) for r in rows] == prof
    (s,) = arc.rows(mid, kind=SNAPSHOT)
    assert s.values == snap[1] and s.ts == snap[0]
    assert arc.last_profile_ts(mid) == prof[-1][0]


def test_batches_and_retention_keep_unacked(arc):
    mid = arc.meter_id("bus1", "modbus", "1")
    m = MeterModel(1)
    day = 86400
    t0 = 1790000000 - 1790000000 % day
    arc.store_meter_read(mid, 3600, None, m.profile(t0, t0 + 50 * day), [])
    rows, events = arc.unbatched(24)
    assert len(rows) == 24 and rows[0].ts == t0
    arc.store_batch(1, b"sealed", rows, events, created=t0)
    assert arc.pending_batch() == (1, b"sealed")
    # Nothing acknowledged yet: retention deletes nothing and reports overdue rows.
    out = arc.apply_retention(t0 + 50 * day, 45)
    assert out["deleted_rows"] == 0 and out["overdue_rows"] > 0
    arc.ack_batch(1, when=t0 + 50 * day)
    out = arc.apply_retention(t0 + 50 * day, 45)
    assert out["deleted_rows"] == 24
    assert arc.pending_batch() is None
    assert next(arc.rows(mid)).ts == t0 + 24 * 3600


def test_boot_epoch_never_repeats(tmp_path):
    p = str(tmp_path / "b.db")
    seen = []
    for _ in range(3):
        a = Archive(p).open()
        seen.append(a.next_boot_epoch())
        a.close()
    assert seen == [1, 2, 3]


def test_migrates_from_empty_and_refuses_newer(tmp_path):
    p = tmp_path / "new.db"
    db = sqlite3.connect(p)
    db.execute("PRAGMA user_version=%d" % (len(MIGRATIONS) + 1))
    db.close()
    with pytest.raises(ArchiveError, match="newer"):
        Archive(str(p)).open()


def test_corrupt_archive_gives_clear_error(tmp_path):
    p = tmp_path / "c.db"
    p.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ArchiveError, match="unusable"):
        Archive(str(p)).open()
