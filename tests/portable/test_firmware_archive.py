"""The board's flash archive (firmware.archive), portable: records survive
reboots, a full ring refuses, acknowledged data is reclaimed, and power cuts
at random byte offsets never corrupt or lose an unacknowledged batch (a short
run here; tests/test_firmware_archive.py runs hundreds of cuts on CPython)."""

from firmware_fakes import CutFlash, Lcg, PowerCut, power_cut_run

from firmware.archive import Archive, ArchiveError, ArchiveFull, MemoryFlash, crc32

T0 = 1780272000


def test_crc32_matches_zlib_value():
    assert crc32(b"123456789") == 0xCBF43926
    assert crc32(b"6789", crc32(b"12345")) == 0xCBF43926


def test_batches_survive_a_reboot_and_keep_their_ack_state():
    flash = MemoryFlash(4096)
    a = Archive(flash, 512)
    a.append(1, T0, b"one")
    a.append(2, T0 + 3600, b"two" * 300)         # 900 bytes: split over sectors
    a.ack(1)
    b = Archive(flash, 512)
    assert b.seqs() == [1, 2]
    assert b.get(1) == b"one" and b.get(2) == b"two" * 300
    assert b.unacked() == [2] and b.acked(1)
    r = b.retention()
    assert r["batches"] == 2 and r["unacked"] == 1 and r["oldest"] == T0
    assert r["newest"] == T0 + 3600 and r["lost_at_boot"] == 0


def test_a_full_ring_refuses_and_writes_nothing():
    flash = MemoryFlash(2048)
    a = Archive(flash, 512)
    seq = 0
    try:
        while True:
            seq += 1
            a.append(seq, T0 + seq, bytes([seq]) * 300)
    except ArchiveFull as e:
        assert e.seq == seq and e.unacked == seq - 1
    before = bytes(flash.data)
    try:
        a.append(seq, T0, b"x" * 300)
    except ArchiveFull:
        pass
    else:
        raise AssertionError("a full archive took a batch")
    assert bytes(flash.data) == before
    assert a.unacked() == list(range(1, seq))


def test_acknowledged_batches_are_reclaimed_oldest_first():
    a = Archive(MemoryFlash(2048), 512)
    for seq in range(1, 40):
        a.append(seq, T0 + seq, bytes([seq]) * 200)
        a.ack(seq)
    assert a.unacked() == []
    kept = a.seqs()
    assert kept[-1] == 39 and kept == list(range(kept[0], 40))
    assert Archive(a.flash, 512).seqs() == kept


def test_too_large_a_batch_is_an_archive_error():
    a = Archive(MemoryFlash(2048), 512)
    try:
        a.append(1, T0, b"x" * 4000)
    except ArchiveFull:
        raise AssertionError("not a full ring: a record too large") from None
    except ArchiveError as e:
        assert e.seq == 1
    else:
        raise AssertionError("accepted a batch larger than the flash")


def test_a_torn_record_closes_its_sector_and_loses_only_itself():
    flash = CutFlash(4096)
    a = Archive(flash, 512)
    a.append(1, T0, b"a" * 100)
    flash.budget = 50
    try:
        a.append(2, T0, b"b" * 100)
    except PowerCut:
        pass
    else:
        raise AssertionError("no cut")
    b = Archive(flash, 512)
    assert b.seqs() == [1] and b.retention()["lost_at_boot"] == 1
    b.append(3, T0, b"c" * 100)
    c = Archive(flash, 512)
    assert c.seqs() == [1, 3] and c.get(3) == b"c" * 100


def test_power_cuts_short_run():
    out = power_cut_run(seed=7, cuts=30)
    assert out["cuts"] == 30 and out["appends"] > 30


def test_lcg_is_the_same_on_both_pythons():
    r = Lcg(1)
    assert [r.below(1000) for _ in range(4)] == [346, 529, 805, 333]
