"""Fakes for the board's portable tests (CPython and MicroPython): a flash
that loses power after N bytes, a deterministic PRNG, and the power-cut
scenario the archive must survive. Imported by tests only."""

from firmware.archive import Archive, ArchiveFull, MemoryFlash


class PowerCut(Exception):
    """The fake flash lost power in the middle of a write."""


class CutFlash(MemoryFlash):
    """MemoryFlash that writes only ``budget`` more bytes, then stops in the
    middle of the write (byte-exact, front to back) and raises PowerCut."""

    def __init__(self, size):
        super().__init__(size)
        self.budget = None
        self.writes = 0

    def write(self, off, data):
        self.writes += 1
        if self.budget is None:
            MemoryFlash.write(self, off, data)
            return
        n = min(self.budget, len(data))
        MemoryFlash.write(self, off, data[:n])
        self.budget -= n
        if n < len(data):
            self.budget = None
            raise PowerCut("power cut at byte %d of a %d-byte write" % (n, len(data)))


class Lcg:
    """A small deterministic PRNG that gives the same numbers on both Pythons."""

    def __init__(self, seed):
        self.x = (seed * 2654435761 + 1) & 0xFFFFFFFF

    def below(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 7) % n

    def payload(self, n, tag):
        b = bytearray(n)
        for i in range(n):
            b[i] = (tag * 31 + i * 7 + self.below(256)) & 0xFF
        return bytes(b)


def _check(arch, sent, acked, inflight):
    """After a reboot: nothing corrupt, nothing unacknowledged lost."""
    present = set(arch.seqs())
    for seq in present:
        want = sent.get(seq)
        if want is None:
            assert inflight is not None and seq == inflight[0], "unknown batch %d" % seq
            want = inflight[1]
        assert arch.get(seq) == want, "batch %d corrupted" % seq
    for seq in sent:
        if seq not in acked:
            assert seq in present, "unacknowledged batch %d lost" % seq
    if inflight is not None and inflight[0] in present:
        sent[inflight[0]] = inflight[1]     # it made it: from now on it must stay
    for seq in list(acked):
        if seq not in present:
            del sent[seq]                   # reclaimed (it was acknowledged)
            acked.discard(seq)
        elif not arch.acked(seq):
            acked.discard(seq)              # its ack was torn or RAM-only: send again


def power_cut_run(seed, cuts, size=6144, sector=512, max_batch=1400):
    """Random appends and acks on a CutFlash, cut at random byte offsets
    ``cuts`` times, each followed by a reboot (a fresh Archive over the same
    bytes) and a check. Returns counts for the caller to assert on."""
    rnd = Lcg(seed)
    flash = CutFlash(size)
    arch = Archive(flash, sector)
    sent, acked = {}, set()
    seq = 0
    done = full = appends = 0
    must_ack = False
    while done < cuts:
        if flash.budget is None and rnd.below(3) == 0:
            flash.budget = rnd.below(2 * max_batch)
        inflight = None
        try:
            unacked = sorted(s for s in sent if s not in acked)
            if unacked and (must_ack or rnd.below(5) < 2):
                s = unacked[0 if must_ack else rnd.below(len(unacked))]
                must_ack = False
                acked.add(s)                # the HES acknowledged it: it may go
                arch.ack(s)
            else:
                seq += 1
                data = rnd.payload(1 + rnd.below(max_batch), seq)
                inflight = (seq, data)
                arch.append(seq, 1780272000 + 3600 * seq, data)
                sent[seq] = data
                appends += 1
        except ArchiveFull:
            full += 1
            must_ack = True
        except PowerCut:
            done += 1
            arch = Archive(flash, sector)
            _check(arch, sent, acked, inflight)
    return {"cuts": done, "appends": appends, "full": full, "kept": len(arch.seqs())}
