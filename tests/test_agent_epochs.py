"""Counters that must never go back survive an archive that is quarantined and
recreated (issue 10): the envelope's boot epoch, the mesh frame-counter epoch
and the batch seq are also kept in ``<archive>.epochs``, written before use,
and loaded as the larger of both stores. Otherwise a fresh archive would
restart them: AES-CCM nonces would repeat under the same keys, neighbours
would refuse the node's frames as replays, and the HES would take the next
batch for a ``duplicate`` of one it holds (and drop its readings)."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from agent.archive import Archive
from agent.daemon import open_archive
from agent.envelope import Sealer, peek
from agent.epochs import EpochError, EpochFile
from agent.mesh_io import ArchiveCounterStore
from agent.uplink import ArchiveBootStore
from hes_lite.store import open_store
from mesh.packet import ACK, Header
from mesh.secure import LinkSecurity, MemoryCounterStore
from tests.agent_rig import District, HesProcess, run_agent

NET = bytes(range(32))


def corrupt(path) -> None:
    """What a dying SD card does to the archive's first page."""
    with open(path, "r+b") as f:
        f.write(b"\xde\xad\xbe\xef" * 64)


# -- the file ---------------------------------------------------------------------

def test_epoch_file_round_trip_owner_only(tmp_path):
    f = EpochFile(str(tmp_path / "a.db.epochs"))
    assert f.load() == {}
    f.save({"boot_epoch": 7, "mesh_epoch": 3, "last_seq": 120})
    assert f.load() == {"boot_epoch": 7, "mesh_epoch": 3, "last_seq": 120}
    assert stat.S_IMODE(os.stat(f.path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["a.db.epochs"]          # no temporary file left


def test_epoch_file_that_does_not_parse_is_set_aside(tmp_path, caplog):
    f = EpochFile(str(tmp_path / "a.db.epochs"))
    (tmp_path / "a.db.epochs").write_bytes(b"boot_epoch seven\n")
    assert f.load() == {}
    assert [p.name.startswith("a.db.epochs.corrupt-") for p in tmp_path.iterdir()] == [True]
    assert "does not parse" in caplog.text


def test_epoch_file_that_cannot_be_written_is_an_error(tmp_path):
    f = EpochFile(str(tmp_path / "no-such-dir" / "a.db.epochs"))
    with pytest.raises(EpochError):
        f.save({"boot_epoch": 1})


def test_the_larger_store_wins(tmp_path):
    p = str(tmp_path / "a.db")
    arc = Archive(p).open()
    assert arc.next_boot_epoch() == 1 and arc.next_boot_epoch() == 2
    assert EpochFile(p + ".epochs").load()["boot_epoch"] == 2
    EpochFile(p + ".epochs").save({"boot_epoch": 40, "mesh_epoch": 0, "last_seq": 9})
    assert arc.high_water("boot_epoch") == 40 and arc.next_seq() == 10
    arc.set_meta("boot_epoch", b"55")                    # the archive ahead of the file
    assert arc.next_boot_epoch() == 56
    arc.close()


# -- a recreated archive ------------------------------------------------------------

def test_quarantined_archive_does_not_restart_envelope_or_mesh_epochs(tmp_path):
    p = str(tmp_path / "archive.db")
    lock = threading.Lock()
    neighbour = LinkSecurity(NET, 0x002, MemoryCounterStore())
    boots, frames = [], []
    arc = open_archive(p)
    for _ in range(3):                                   # three starts on the old archive
        sealer = Sealer("DC-EPOCH", bytes(32), ArchiveBootStore(arc, lock))
        boots.append(peek(sealer.seal(b"x")).boot)
        link = LinkSecurity(NET, 0x001, ArchiveCounterStore(arc, lock))
        frames.append(link.seal(Header(ACK, 0x001, 0x002, acked=7), b""))   # ACKs carry the epoch
        neighbour.open(frames[-1])
    arc.close()
    corrupt(p)
    arc = open_archive(p)                                # quarantined, a fresh one
    assert any(n.startswith("archive.db.corrupt-") for n in os.listdir(tmp_path))
    assert arc.meta("boot_epoch") is None and arc.meta("mesh_epoch") is None
    sealer = Sealer("DC-EPOCH", bytes(32), ArchiveBootStore(arc, lock))
    assert peek(sealer.seal(b"y")).boot > max(boots) == 3
    link = LinkSecurity(NET, 0x001, ArchiveCounterStore(arc, lock))
    frame = link.seal(Header(ACK, 0x001, 0x002, acked=8), b"")
    used = [Header.from_bytes(f)[0].epoch for f in frames]
    assert Header.from_bytes(frame)[0].epoch > max(used) == 3
    header, payload = neighbour.open(frame)              # not refused as a replay
    assert (header.acked, payload) == (8, b"")
    arc.close()


@pytest.mark.slow
def test_hes_accepts_the_next_batch_after_the_archive_is_recreated(tmp_path):
    key = os.urandom(32).hex()
    hes = HesProcess(tmp_path / "hes.db", "DC-TEST", key).start()
    d = District([["modbus"] * 2], t0=1795910400 + 1200, speed=1800).start()
    archive = tmp_path / "archive.db"
    try:
        cfg = d.config(tmp_path / "agent.toml", archive, uplink=hes.url, key=key,
                       transport="http")
        done = run_agent(cfg, d.clock, cycles=1)
        assert done.returncode == 0, done.stderr[-2000:]
        before = _hes_batches(tmp_path / "hes.db")
        assert before, "nothing reached the HES"
        corrupt(archive)
        done = run_agent(cfg, d.clock, cycles=0)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "is corrupt" in done.stderr
        after = _hes_batches(tmp_path / "hes.db")
        new = {s: b for s, b in after.items() if s not in before}
        assert new, "the recreated archive's batches were taken for duplicates"
        assert min(new) > max(before)
        assert min(peek(b).boot for b in new.values()) > max(peek(b).boot for b in
                                                              before.values())
        # what the fresh archive sent is what the HES stored, and nothing was refused
        arc = Archive(str(archive)).open()
        mine = {s: bytes(p) for s, p in arc.conn.execute(
            "SELECT seq, payload FROM batch WHERE acked IS NOT NULL")}
        arc.close()
        assert mine and all(new.get(s) == p for s, p in mine.items())
        assert hes.get("/v1/health").get("rejects", {}) == {}
    finally:
        d.stop()
        hes.stop()


def _hes_batches(db) -> dict[int, bytes]:
    store = open_store(str(db))
    try:
        return {b.seq: bytes(b.payload) for b in store.raw_range("DC-TEST", 0, 1 << 31)}
    finally:
        store.close()
