"""The ingest pipeline: envelope bytes in, an acknowledgement out.

verify + decrypt → duplicate check → replay window → raw batch stored durably
(fsync'd) → ack-able; then decode into readings/events (idempotent inserts)
and advance the concentrator's codec state. A duplicate ``(device, seq)`` is
acknowledged again as ``duplicate`` (at-least-once transport, exactly-once
effect). Every refusal is counted by reason and logged without key material;
refusing never touches what is already stored.

Several workers (``hes-lite serve`` processes on one PostgreSQL, fed by one
broker's shared subscription or a load balancer) may see consecutive batches
of one concentrator. The database is the arbiter: the raw write is refused
if the replay window it was checked against has moved (screened again and
retried), and decoded rows are written only if the codec state they were
decoded from is still the stored one. A concentrator whose state moved, or
that still has undecoded batches after a write, is drained: its stored
batches decoded from the state as it is now, until a write goes through
with nothing left but batches that truly wait for a base. So no batch
decodes against a state another worker has moved past, and none is left
behind because two workers each thought the other would decode it.

Owns ordering and bookkeeping; must not know SQL (the store) nor byte layouts
(``hes_lite.wire``) nor HTTP (the receivers call ``submit``).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

# The ack document is the uplink's wire format: one definition for both ends.
from agent.transport import Ack as Ack
from hes_lite import HesError, wire
from hes_lite.ingest_decode import Run, RunResult, decode_runs, plaintexts, replay_chain
from hes_lite.store import (
    DecodedBatch,
    KeyRecord,
    RawBatch,
    Store,
    StoreConflict,
    StoreError,
)

log = logging.getLogger("hes_lite.ingest")


class Rejected(HesError):
    """A batch was refused; ``reason`` is one of ``wire.REASONS``."""

    reason: str
    device: str
    seq: int | None

    def __init__(self, reason: str, device: str = "", seq: int | None = None) -> None:
        super().__init__(reason, reason=reason, device=device, seq=seq)


@dataclass
class _Opened:
    index: int
    header: wire.Header
    plaintext: bytes
    envelope: bytes
    seq: int


Item = tuple[bytes, str | None, int | None]  # envelope, device from URL, seq from URL


class Ingestor:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._backlog: set[str] = set(store.backlog())

    def submit(self, envelope: bytes, device: str | None = None,
               seq: int | None = None) -> Ack:
        """One batch; returns the ack or raises ``Rejected``."""
        out = self.submit_many([(envelope, device, seq)])[0]
        if isinstance(out, Rejected):
            raise out
        return out

    def submit_many(self, items: Sequence[Item]) -> list[Ack | Rejected]:
        """Many batches with one durable transaction for the raw batches and
        one for the decoded rows (the bulk path)."""
        with self._lock:
            return self._submit_many(items)

    def _submit_many(self, items: Sequence[Item]) -> list[Ack | Rejected]:
        results, fresh = self._admit(items)
        if fresh:
            waiting = self._finish([decode_runs(self._runs(fresh))], fresh)
            for i, r in enumerate(results):
                if isinstance(r, Ack) and r.device in waiting and r.status == "accepted":
                    results[i] = Ack(r.device, r.seq, r.status, r.server_time, True)
        self._heal(results, fresh)
        return results

    def _heal(self, results: Sequence[Ack | Rejected], fresh: Sequence[_Opened]) -> None:
        """A duplicate of a batch still undecoded — a worker died between its
        raw write and its decode, and the agent sent the batch again: drain
        its device now rather than at the next batch or restart."""
        dup = {r.device for r in results if isinstance(r, Ack) and r.status == "duplicate"}
        for device in sorted(dup - {o.header.device for o in fresh}):
            if self.store.pending(device):
                self._recover(device)

    def _admit(self, items: Sequence[Item]) -> tuple[list[Ack | Rejected], list[_Opened]]:
        """Verify, screen and durably store; the acks, and what is to decode."""
        now = self.clock()
        results: list[Ack | Rejected | None] = [None] * len(items)
        keys = self.store.key_records(_key_pairs(items))
        opened: list[_Opened] = []
        for i, (env, url_device, url_seq) in enumerate(items):
            try:
                opened.append(self._open(i, env, url_device, url_seq, keys))
            except Rejected as r:
                results[i] = self._reject(r, env, now)
        fresh = self._store(opened, results, now)
        for o in fresh:
            results[o.index] = Ack(o.header.device, o.seq, "accepted", now)
        return [r for r in results if r is not None], fresh

    def _store(self, opened: list[_Opened], results: list[Ack | Rejected | None],
               now: float) -> list[_Opened]:
        """Screen and store durably; when another worker moved a replay window
        meanwhile, screen the same batches again against the new one."""
        todo = opened
        for _ in range(CONFLICT_ROUNDS):
            fresh, windows = self._screen(todo, results, now)
            if not fresh:
                return []
            raws = [RawBatch(o.header.device, o.seq, o.envelope, now, o.header.epoch, state)
                    for o, state in fresh]
            try:
                new = self.store.store_raw(raws, windows)
            except StoreConflict as e:
                log.info("replay windows of %s moved meanwhile: screening again",
                         e.fields.get("devices"))
                todo = [o for o, _ in fresh]
                continue
            out = []
            for (o, _), is_new in zip(fresh, new, strict=True):
                if is_new:
                    out.append(o)
                else:   # stored by another worker since the screen
                    results[o.index] = Ack(o.header.device, o.seq, "duplicate", now)
            return out
        raise StoreError("replay windows kept changing under this batch", rounds=CONFLICT_ROUNDS)

    def ingest_stream(self, groups: Iterable[Sequence[Item]],
                      workers: int = 0) -> Iterator[list[Ack | Rejected]]:
        """The bulk path: per group, verify + store durably (here) while the
        previous group's batches decode in ``workers`` processes; decoded rows
        are written here, so SQLite has one writer. Yields each group's acks
        once its raw batches are durable. ``workers=0`` decodes inline."""
        if workers <= 0:
            for items in groups:
                yield self.submit_many(items)
            return
        ctx = multiprocessing.get_context("spawn")
        inflight: tuple[set[str], list[Future[list[RunResult]]], list[_Opened]] | None = None
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool, self._lock:
            for items in groups:
                # a device of the previous group: write that group first, so a
                # batch is decoded from the state its predecessor left
                devices = {d for d, _ in _key_pairs(items)}
                if inflight is not None and inflight[0] & devices:
                    self._finish([f.result() for f in inflight[1]], inflight[2])
                    inflight = None
                results, fresh = self._admit(items)
                runs = self._runs(fresh)
                step = max(1, -(-len(runs) // (2 * workers)))
                futures = [pool.submit(decode_runs, runs[i:i + step])
                           for i in range(0, len(runs), step)]
                if inflight is not None:
                    self._finish([f.result() for f in inflight[1]], inflight[2])
                inflight = (devices, futures, fresh)
                self._heal(results, fresh)
                yield results
            if inflight is not None:
                self._finish([f.result() for f in inflight[1]], inflight[2])

    def _open(self, index: int, env: bytes, url_device: str | None, url_seq: int | None,
              keys: dict[tuple[str, int], KeyRecord | None]) -> _Opened:
        try:
            h = wire.header(env)
        except wire.WireError as e:
            raise Rejected(e.reason, url_device or "", url_seq) from None
        if url_device is not None and url_device != h.device:
            raise Rejected("device_mismatch", url_device, url_seq)
        k = (h.device, h.epoch)
        if k not in keys:
            keys[k] = self.store.key(h.device, h.epoch)
        rec = keys[k]
        if rec is None:
            raise Rejected("unknown_key", h.device, url_seq)
        if rec.revoked:
            raise Rejected("revoked_key", h.device, url_seq)
        try:
            plaintext = wire.open_envelope(env, rec.root_key)
            seq, named = wire.batch_ident(plaintext)
        except wire.WireError as e:
            raise Rejected(e.reason, h.device, url_seq) from None
        if url_seq is not None and url_seq != seq:
            raise Rejected("seq_mismatch", h.device, url_seq)
        if named is not None and named != h.device:
            # a keyframe sealed by one concentrator naming another: its codec
            # state would be filed under the sealer, its rows under a lie
            raise Rejected("device_mismatch", h.device, seq)
        return _Opened(index, h, plaintext, env, seq)

    def _screen(self, opened: list[_Opened], results: list[Ack | Rejected | None],
                now: float) -> tuple[list[tuple[_Opened, bytes]],
                                     dict[tuple[str, int], bytes | None]]:
        """Duplicates are acked again; the rest pass the replay window. Also
        the windows as read, for the store to compare."""
        by_device: dict[str, list[_Opened]] = {}
        for o in opened:
            by_device.setdefault(o.header.device, []).append(o)
        # windows first: a batch another worker stores meanwhile is then either
        # in the seqs (a duplicate) or not yet in the window read (and the
        # store's comparison catches it), never refused as a replay of itself
        read = self.store.replay_states({(o.header.device, o.header.epoch) for o in opened})
        stored = self.store.stored_seqs_of({d: [o.seq for o in g] for d, g in by_device.items()})
        windows = dict(read)
        fresh: list[tuple[_Opened, bytes]] = []
        for device, group in by_device.items():
            seen = stored[device]
            for o in group:
                if o.seq in seen:
                    results[o.index] = Ack(device, o.seq, "duplicate", now)
                    continue
                k = (device, o.header.epoch)
                try:
                    state = wire.check_replay(windows[k], o.header)
                except wire.WireError as e:
                    results[o.index] = self._reject(Rejected(e.reason, device, o.seq),
                                                    o.envelope, now)
                    continue
                windows[k] = state
                seen.add(o.seq)
                fresh.append((o, state))
        return fresh, {k: read[k] for k in {(o.header.device, o.header.epoch) for o, _ in fresh}}

    def _reject(self, r: Rejected, env: bytes, now: float) -> Rejected:
        log.warning("rejected batch: reason=%s device=%r seq=%s len=%d head=%s", r.reason,
                    r.device, r.seq, len(env), env[:48].hex())
        self.store.count_reject(r.device, r.reason, now)
        return r

    # -- decoding ---------------------------------------------------------------
    def _runs(self, fresh: Iterable[_Opened]) -> list[Run]:
        """Per device not waiting for a codec base: its new batches and state."""
        by_device: dict[str, list[tuple[int, bytes]]] = {}
        for o in fresh:
            by_device.setdefault(o.header.device, []).append((o.seq, o.plaintext))
        devices = [d for d in by_device if d not in self._backlog]
        held = self.store.codec_states(devices)
        return [(device, by_device[device], held[device]) for device in devices]

    def _finish(self, parts: Iterable[list[RunResult]], fresh: Iterable[_Opened]) -> set[str]:
        """Write decoded runs in one transaction (each device's only if its
        codec state is still the one decoded from), then drain the devices
        that need it; returns the devices whose new batches wait."""
        done: list[DecodedBatch] = []
        waiting: set[str] = set()
        bases: dict[str, int | None] = {}
        known: dict[str, set[int]] = {}
        for part in parts:
            for device, base, decoded, wait, failed in part:
                done.extend(decoded)
                bases[device] = base
                known[device] = set(wait) | {seq for seq, _ in failed}
                self._note(device, wait, failed)
                if wait:
                    waiting.add(device)
        applied = self.store.apply(done, bases)
        again = applied.conflicts | {d for d, seqs in applied.pending.items()
                                     if not seqs <= known.get(d, set())}
        for device in again | ({o.header.device for o in fresh} & self._backlog):
            if self._recover(device):
                waiting.add(device)
            else:
                waiting.discard(device)
        return waiting

    def _note(self, device: str, wait: list[int], failed: list[tuple[int, str]]) -> None:
        for seq in wait:
            log.info("batch %s/%d waits for its codec base", device, seq)
        for seq, reason in failed:
            log.error("stored batch %s/%d does not decode (%s); kept raw", device, seq, reason)
        if wait:
            self._backlog.add(device)

    def recover(self, device: str | None = None) -> int:
        """Decode stored-but-undecoded batches (after a crash, or once a missing
        codec base arrived); returns how many were decoded."""
        devices = [d for d in self.store.backlog() if device is None or d == device]
        return sum(self._recover(dev, count=True) for dev in devices)

    def _recover(self, device: str, count: bool = False) -> int:
        """Drain one device: its pending batches in seq order from the stored
        state (deltas older than it by replaying the stored chain from the
        keyframe before them), written if that state is still the stored one;
        again while another worker moved it or stored more meanwhile.
        Returns how many decoded (``count``) or how many wait."""
        self._backlog.discard(device)
        decoded = 0
        wait: list[int] = []
        failed: list[tuple[int, str]] = []
        for _ in range(CONFLICT_ROUNDS):
            held = self.store.codec_state(device)
            run = plaintexts(self.store, device, self.store.pending(device))
            ((_, base, done, wait, failed),) = decode_runs([(device, run, held)])
            if wait and held is not None and min(wait) < held[0]:
                more, wait = replay_chain(self.store, device, wait, held[0])
                done += more
            applied = self.store.apply(done, {device: base})
            if device in applied.conflicts:
                continue
            decoded += len(done)
            if applied.pending.get(device, set()) <= set(wait) | {s for s, _ in failed}:
                break
        else:
            log.warning("device %s: its codec state kept moving; left to the next batch", device)
        self._note(device, wait, failed)
        return decoded if count else len(wait)

CONFLICT_ROUNDS = 50  # times a store conflict (another worker was first) is taken again


def _key_pairs(items: Sequence[Item]) -> set[tuple[str, int]]:
    """(device, key epoch) of the items whose clear header parses."""
    out = set()
    for env, _, _ in items:
        try:
            h = wire.header(env)
        except wire.WireError:
            continue
        out.add((h.device, h.epoch))
    return out


__all__ = ["Ack", "Ingestor", "Rejected", "decode_runs"]
