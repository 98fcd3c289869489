"""The board's flash archive on CPython: hundreds of power cuts at random
byte offsets (the issue's "must show"), and the boot scan as a parser: any
flash contents give an archive (or ArchiveError), never another exception."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.archive import Archive, ArchiveError, MemoryFlash, record_bytes
from tests.portable.firmware_fakes import power_cut_run


def test_power_cuts_at_random_bytes_never_corrupt_or_lose_unacked() -> None:
    t0 = time.monotonic()
    total = 0
    for seed, sector in ((1, 512), (2, 256), (3, 1024)):
        out = power_cut_run(seed=seed, cuts=90, sector=sector)
        assert out["cuts"] == 90 and out["appends"] > 90 and out["full"] > 0, out
        total += out["cuts"]
    assert total >= 200
    assert time.monotonic() - t0 < 30


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1024, max_size=1024))
def test_any_flash_contents_boot(data: bytes) -> None:
    flash = MemoryFlash(1024)
    flash.data[:] = data
    try:
        a = Archive(flash, 256)
    except ArchiveError:
        return
    for seq in a.seqs():
        a.get(seq)
    a.retention()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1023), st.binary(min_size=1, max_size=40)),
                max_size=8))
def test_garbled_records_boot_and_keep_good_ones(edits: list[tuple[int, bytes]]) -> None:
    """Valid records, then random overwrites: the scan never raises, and every
    batch it keeps still reads back with a verifying CRC (its exact bytes)."""
    flash = MemoryFlash(1024)
    a = Archive(flash, 256)
    payloads = {s: bytes([s]) * (20 * s) for s in range(1, 6)}
    for s, p in payloads.items():
        a.append(s, s, p)
    for off, junk in edits:
        flash.data[off:off + len(junk)] = junk[:1024 - off]
    b = Archive(flash, 256)
    for seq in b.seqs():
        assert b.get(seq) == payloads[seq]


def test_record_layout_is_the_documented_one() -> None:
    rec = record_bytes(1, 0x01020304, 0x0A0B0C0D, 0, 1, b"xy")
    assert rec[:14] == bytes([0x57, 1, 2, 0, 4, 3, 2, 1, 0x0D, 0x0C, 0x0B, 0x0A, 0, 1])
    assert rec[14:16] == b"xy" and len(rec) == 20
