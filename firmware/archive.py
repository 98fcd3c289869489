"""The board's flash archive: sealed hourly batches kept on flash until the
HES acknowledged them, crash-safe, in a ring sized to the flash.

Portable (CPython and MicroPython). Owns the on-flash layout, the boot scan
that rebuilds the index, appends, acknowledgements, reclaiming space and the
retention report. Must not know what a batch holds (opaque bytes), the
uplink, or how the flash is reached (an injected ``flash`` object: ``size``,
``read(off, n)``, ``write(off, data)``; ``MemoryFlash`` and ``FileFlash``
below are two).

Layout (little-endian). The flash is cut into sectors (``sector`` bytes, the
flash's erase unit; 4096 by default). A sector in use starts with a header::

    0  4  b"WUMA"
    4  4  lap: a number that grows with every sector opened (ring order)
    8  4  CRC-32 of bytes 0..8

then records, back to back, never crossing the sector's end::

    0  1  0x57 ("W")
    1  1  kind: 1 = part of a batch, 2 = acknowledgement
    2  2  n = payload length
    4  4  seq (the batch's sequence number; for an ack: the acknowledged seq)
    8  4  ts (the batch's hour, epoch seconds; 0 for an ack)
    12 1  part (0-based) of a batch split over sectors
    13 1  parts
    14 n  payload
    14+n 4 CRC-32 of bytes 0..14+n

Erased flash reads 0xFF: a record position whose header is all 0xFF is the
clean end of a sector. Anything else that does not verify is a torn write:
the sector is closed (the rest of it is never written again), so a record is
never written over old bytes — the same rule NOR flash imposes.

Rules that make it crash-safe: (1) a record is written once, at the end of
the log, into erased space; (2) a sector is erased (its header first) only
when every batch with a part in it is acknowledged — nothing unacknowledged
is ever overwritten; (3) the boot scan keeps exactly the batches whose parts
all verify and the acks that verify. A power cut at any byte of a write
therefore loses at most the record being written (a batch whose last part
is torn is dropped whole; an ack that is torn leaves its batch unacked, to
be sent again — the HES takes duplicates).

A full ring: an append that would need a sector still holding an
unacknowledged batch is refused with ``ArchiveFull`` and nothing is written
(the newest hour is the one lost, never an older unacknowledged one);
acknowledged batches are dropped oldest sector first as space is needed. An
ack that cannot be written for lack of space is kept in RAM and written with
the next record that fits (lost on a reboot before that: its batch is sent
again).
"""

import struct

from firmware import FirmwareError

try:
    from binascii import crc32 as _crc32
except ImportError:             # a port built without it: a table-driven CRC-32
    _crc32 = None  # type: ignore[assignment]

SECTOR_MAGIC = b"WUMA"
SECTOR_HEAD = 12
REC_MAGIC = 0x57
REC_HEAD = 14
REC_TAIL = 4
BATCH = 1
ACK = 2
_HEAD_FMT = "<BBHIIBB"
_ERASED_HEAD = b"\xff" * REC_HEAD
_TABLE = None


def crc32(data, crc=0):
    """CRC-32 (IEEE 802.3, as zlib/binascii), incremental like binascii.crc32."""
    if _crc32 is not None:
        return _crc32(data, crc) & 0xFFFFFFFF
    global _TABLE
    if _TABLE is None:
        _TABLE = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
            _TABLE.append(c)
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class ArchiveError(FirmwareError):
    """The archive cannot do what was asked (fields say why)."""


class ArchiveFull(ArchiveError):
    """No space without overwriting an unacknowledged batch (fields: seq,
    needed sectors, unacked count). Nothing was written."""


class MemoryFlash:
    """Flash in RAM (tests, benchmarks): ``size`` bytes, erased (0xFF)."""

    def __init__(self, size):
        self.size = size
        self.data = bytearray(b"\xff" * size)

    def read(self, off, n):
        return bytes(self.data[off:off + n])

    def write(self, off, data):
        self.data[off:off + len(data)] = data


class FileFlash:
    """Flash as one preallocated file on the board's filesystem (littlefs/FAT
    on a real board): created erased (0xFF) at ``size`` bytes."""

    def __init__(self, path, size):
        self.path = path
        self.size = size
        try:
            f = open(path, "r+b")
        except OSError:
            f = open(path, "w+b")
        f.seek(0, 2)
        have = f.tell()
        chunk = b"\xff" * 256
        while have < size:
            n = min(256, size - have)
            f.write(chunk[:n])
            have += n
        f.flush()
        self._f = f

    def read(self, off, n):
        self._f.seek(off)
        return self._f.read(n)

    def write(self, off, data):
        self._f.seek(off)
        self._f.write(data)
        self._f.flush()

    def close(self):
        self._f.close()


def _sector_header(lap):
    head = SECTOR_MAGIC + struct.pack("<I", lap)
    return head + struct.pack("<I", crc32(head))


def record_bytes(kind, seq, ts, part, parts, payload):
    head = struct.pack(_HEAD_FMT, REC_MAGIC, kind, len(payload), seq, ts, part, parts)
    crc = crc32(payload, crc32(head))
    return head + payload + struct.pack("<I", crc)


class Archive:
    """Sealed batches on flash until acknowledged. ``append(seq, ts, data)``,
    ``ack(seq)``, ``get(seq)``, ``unacked()``, ``retention()``."""

    def __init__(self, flash, sector=4096):
        if sector < 64 or flash.size // sector < 2:
            raise ArchiveError("need at least 2 sectors of at least 64 bytes",
                               size=flash.size, sector=sector)
        self.flash = flash
        self.sector = sector
        self.count = flash.size // sector
        self.lost = 0            # torn records / incomplete batches found at boot
        self.scan()

    # -- boot scan ---------------------------------------------------------------
    def scan(self):
        """Rebuild the index from flash (called at boot)."""
        n = self.count
        self._lap = [-1] * n        # -1: free (erased, or a header that does not verify)
        self._end = [0] * n         # where the next record goes; == sector when closed
        self._batches = {}          # seq -> [ts, size, first location, acked]
        self._ram_acks = []
        order = []
        for i in range(n):
            head = self.flash.read(i * self.sector, SECTOR_HEAD)
            if head[:4] == SECTOR_MAGIC and struct.unpack("<I", head[8:12])[0] == crc32(head[:8]):
                self._lap[i] = struct.unpack("<I", head[4:8])[0]
                order.append((self._lap[i], i))
        order.sort()
        self._next_lap = order[-1][0] + 1 if order else 1
        self._head = order[-1][1] if order else -1
        pending = None              # [seq, ts, parts, next part, size, first location]
        for _, i in order:
            pending = self._scan_sector(i, pending)
        if pending is not None:
            self.lost += 1

    def _scan_sector(self, i, pending):
        base = i * self.sector
        pos = SECTOR_HEAD
        while pos + REC_HEAD + REC_TAIL <= self.sector:
            head = self.flash.read(base + pos, REC_HEAD)
            if head == _ERASED_HEAD:
                break
            magic, kind, size, seq, ts, part, parts = struct.unpack(_HEAD_FMT, head)
            end = pos + REC_HEAD + size + REC_TAIL
            ok = magic == REC_MAGIC and kind in (BATCH, ACK) and end <= self.sector
            if ok:
                body = self.flash.read(base + pos + REC_HEAD, size + REC_TAIL)
                ok = struct.unpack("<I", body[size:])[0] == crc32(body[:size], crc32(head))
            if not ok:
                self.lost += 1
                pos = self.sector           # torn: close the sector
                break
            pending = self._index(kind, seq, ts, part, parts, size, i * self.sector + pos,
                                  pending)
            pos = end
        self._end[i] = pos
        return pending

    def _index(self, kind, seq, ts, part, parts, size, loc, pending):
        if kind == ACK:
            b = self._batches.get(seq)
            if b is not None:
                b[3] = True
            return pending
        if part == 0:
            if pending is not None:
                self.lost += 1              # a batch cut before its last part
            pending = [seq, ts, parts, 0, 0, loc]
        elif pending is None or pending[0] != seq or pending[3] != part:
            if pending is not None:
                self.lost += 1
            return None                     # the tail of a batch whose start is gone
        pending[3] += 1
        pending[4] += size
        if pending[3] < parts:
            return pending
        self._batches[seq] = [ts, pending[4], pending[5], False]
        return None

    # -- space ---------------------------------------------------------------------
    def _room(self, i):
        return self.sector - self._end[i] if self._head >= 0 else 0

    def _holds_unacked(self, i):
        lo, hi = i * self.sector, (i + 1) * self.sector
        for b in self._batches.values():
            if not b[3] and lo <= b[2] < hi:
                return True
        return False

    def _plan(self, size):
        """Payload sizes of the parts for ``size`` bytes, and new sectors needed."""
        per = self.sector - SECTOR_HEAD - REC_HEAD - REC_TAIL
        parts = []
        room = self._room(self._head) - REC_HEAD - REC_TAIL if self._head >= 0 else -1
        left = size
        if room > 0 and (room >= left or left > per):
            take = min(room, left)
            parts.append(take)
            left -= take
        fresh = 0
        while left > 0 or not parts:
            take = min(per, left)
            parts.append(take)
            left -= take
            fresh += 1
        return parts, fresh

    def _check_room(self, fresh, seq):
        if fresh > self.count - 1:
            raise ArchiveError("record larger than the archive", seq=seq,
                               sectors=fresh, capacity=self.count)
        i = self._head
        for _ in range(fresh):
            i = (i + 1) % self.count
            if self._lap[i] >= 0 and self._holds_unacked(i):
                raise ArchiveFull("archive full of unacknowledged batches", seq=seq,
                                  needed=fresh, unacked=len(self.unacked()))

    def _open_next(self):
        i = (self._head + 1) % self.count
        lo, hi = i * self.sector, (i + 1) * self.sector
        for seq in [s for s, b in self._batches.items() if lo <= b[2] < hi]:
            del self._batches[seq]          # acknowledged (checked): dropped with the sector
            if seq in self._ram_acks:
                self._ram_acks.remove(seq)
        self._lap[i] = -1
        blank = b"\xff" * 256
        for off in range(0, self.sector, 256):  # erase, header first
            self.flash.write(lo + off, blank[:min(256, self.sector - off)])
        self.flash.write(lo, _sector_header(self._next_lap))
        self._lap[i] = self._next_lap
        self._next_lap += 1
        self._end[i] = SECTOR_HEAD
        self._head = i

    def _put(self, rec, fresh_sector):
        if fresh_sector:
            self._open_next()
        i = self._head
        loc = i * self.sector + self._end[i]
        self._end[i] += len(rec)            # advanced first: a cut mid-write closes it anyway
        self.flash.write(loc, rec)
        return loc

    # -- the API -------------------------------------------------------------------
    def append(self, seq, ts, data):
        """Store one sealed batch; durable when this returns. ArchiveFull when
        only an unacknowledged batch's sector could make room."""
        if seq in self._batches:
            raise ArchiveError("batch already archived", seq=seq)
        sizes, fresh = self._plan(len(data))
        if len(sizes) > 255:
            raise ArchiveError("record larger than the archive", seq=seq, parts=len(sizes))
        self._check_room(fresh, seq)
        first = -1
        off = 0
        for part, n in enumerate(sizes):
            rec = record_bytes(BATCH, seq, ts, part, len(sizes), data[off:off + n])
            need_new = self._head < 0 or self._room(self._head) < len(rec)
            loc = self._put(rec, need_new)
            if part == 0:
                first = loc
            off += n
        self._batches[seq] = [ts, len(data), first, False]
        self._flush_acks()

    def ack(self, seq):
        """The HES acknowledged ``seq``: persist it (or keep it in RAM when the
        ring has no room for even an ack). Unknown or repeated seqs are ignored."""
        b = self._batches.get(seq)
        if b is None or b[3]:
            return
        b[3] = True
        self._ram_acks.append(seq)
        self._flush_acks()

    def _flush_acks(self):
        while self._ram_acks:
            rec = record_bytes(ACK, self._ram_acks[0], 0, 0, 1, b"")
            if self._head < 0 or self._room(self._head) < len(rec):
                nxt = (self._head + 1) % self.count
                if self._lap[nxt] >= 0 and self._holds_unacked(nxt):
                    return                  # no room: stays in RAM for now
                self._open_next()           # may drop acked batches (and their RAM acks)
                continue
            self._put(rec, False)
            self._ram_acks.pop(0)

    def get(self, seq):
        """The batch's bytes (ArchiveError if it is not in the archive)."""
        b = self._batches.get(seq)
        if b is None:
            raise ArchiveError("no such batch", seq=seq)
        out = bytearray()
        loc = b[2]
        while True:
            head = self.flash.read(loc, REC_HEAD)
            _, _, size, _, _, part, parts = struct.unpack(_HEAD_FMT, head)
            out += self.flash.read(loc + REC_HEAD, size)
            if part + 1 >= parts:
                return bytes(out)
            loc = self._next_record(loc, loc + REC_HEAD + size + REC_TAIL)

    def _next_record(self, loc, after):
        """Where the record after the one at ``loc`` (ending at ``after``) is."""
        i = loc // self.sector
        if after < i * self.sector + self._end[i]:
            return after
        return ((i + 1) % self.count) * self.sector + SECTOR_HEAD

    def acked(self, seq):
        b = self._batches.get(seq)
        return b is not None and b[3]

    def unacked(self):
        """Sequence numbers of unacknowledged batches, oldest first."""
        return sorted(s for s, b in self._batches.items() if not b[3])

    def seqs(self):
        return sorted(self._batches)

    def max_seq(self):
        return max(self._batches) if self._batches else 0

    def retention(self):
        """What the archive holds and how long it can hold it (reported at boot)."""
        bs = self._batches
        used = sum(self._end[i] for i in range(self.count) if self._lap[i] >= 0)
        stored = sum(b[1] for b in bs.values())
        ts = [b[0] for b in bs.values()]
        per = (self.sector - SECTOR_HEAD) * self.count
        avg = stored // len(bs) + REC_HEAD + REC_TAIL if bs else 0
        return {"capacity": per, "sector": self.sector, "sectors": self.count,
                "used": used, "batches": len(bs), "unacked": len(self.unacked()),
                "oldest": min(ts) if ts else None, "newest": max(ts) if ts else None,
                "hours": per // avg if avg else None, "lost_at_boot": self.lost}
