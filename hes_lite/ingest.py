"""The ingest pipeline: envelope bytes in, an acknowledgement out.

verify + decrypt → duplicate check → replay window → raw batch stored durably
(fsync'd) → ack-able; then decode into readings/events (idempotent inserts)
and advance the concentrator's codec state. A duplicate ``(device, seq)`` is
acknowledged again as ``duplicate`` (at-least-once transport, exactly-once
effect). Every refusal is counted by reason and logged without key material;
refusing never touches what is already stored.

Owns ordering and bookkeeping; must not know SQL (the store) nor byte layouts
(``hes_lite.wire``) nor HTTP (the receivers call ``submit``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from hes_lite import HesError, wire
from hes_lite.store import DecodedBatch, KeyRecord, RawBatch, Store

log = logging.getLogger("hes_lite.ingest")


class Rejected(HesError):
    """A batch was refused; ``reason`` is one of ``wire.REASONS``."""

    reason: str
    device: str
    seq: int | None

    def __init__(self, reason: str, device: str = "", seq: int | None = None) -> None:
        super().__init__(reason, reason=reason, device=device, seq=seq)


@dataclass(frozen=True)
class Ack:
    device: str
    seq: int
    status: str  # "accepted" | "duplicate"
    server_time: float

    def as_dict(self) -> dict[str, object]:
        return {"device": self.device, "seq": self.seq, "status": self.status,
                "server_time": self.server_time}


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
        self._backlog: set[str] = {p.device for p in store.pending()}

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
        now = self.clock()
        results: list[Ack | Rejected | None] = [None] * len(items)
        keys: dict[tuple[str, int], KeyRecord | None] = {}
        opened: list[_Opened] = []
        for i, (env, url_device, url_seq) in enumerate(items):
            try:
                opened.append(self._open(i, env, url_device, url_seq, keys))
            except Rejected as r:
                results[i] = self._reject(r, env, now)
        fresh = self._screen(opened, results, now)
        if fresh:
            raws = [RawBatch(o.header.device, o.seq, o.envelope, now, o.header.epoch, state)
                    for o, state in fresh]
            self.store.store_raw(raws)
            for o, _ in fresh:
                results[o.index] = Ack(o.header.device, o.seq, "accepted", now)
            self._decode([o for o, _ in fresh])
        return [r for r in results if r is not None]

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
            seq = wire.batch_seq(plaintext)
        except wire.WireError as e:
            raise Rejected(e.reason, h.device, url_seq) from None
        if url_seq is not None and url_seq != seq:
            raise Rejected("seq_mismatch", h.device, url_seq)
        return _Opened(index, h, plaintext, env, seq)

    def _screen(self, opened: list[_Opened], results: list[Ack | Rejected | None],
                now: float) -> list[tuple[_Opened, bytes]]:
        """Duplicates are acked again; the rest pass the replay window."""
        by_device: dict[str, list[_Opened]] = {}
        for o in opened:
            by_device.setdefault(o.header.device, []).append(o)
        fresh: list[tuple[_Opened, bytes]] = []
        for device, group in by_device.items():
            stored = self.store.stored_seqs(device, (o.seq for o in group))
            windows: dict[int, bytes | None] = {}
            for o in group:
                if o.seq in stored:
                    results[o.index] = Ack(device, o.seq, "duplicate", now)
                    continue
                epoch = o.header.epoch
                if epoch not in windows:
                    windows[epoch] = self.store.replay_state(device, epoch)
                try:
                    state = wire.check_replay(windows[epoch], o.header)
                except wire.WireError as e:
                    results[o.index] = self._reject(Rejected(e.reason, device, o.seq),
                                                    o.envelope, now)
                    continue
                windows[epoch] = state
                stored.add(o.seq)
                fresh.append((o, state))
        return fresh

    def _reject(self, r: Rejected, env: bytes, now: float) -> Rejected:
        log.warning("rejected batch: reason=%s device=%r seq=%s len=%d head=%s", r.reason,
                    r.device, r.seq, len(env), env[:48].hex())
        self.store.count_reject(r.device, r.reason, now)
        return r

    # -- decoding ---------------------------------------------------------------
    def _decode(self, fresh: Iterable[_Opened]) -> None:
        by_device: dict[str, list[_Opened]] = {}
        for o in fresh:
            by_device.setdefault(o.header.device, []).append(o)
        done: list[DecodedBatch] = []
        for device, group in by_device.items():
            if device in self._backlog:
                continue  # older batches wait: decode everything in seq order below
            self._decode_run(device, [(o.seq, o.plaintext) for o in group],
                             self.store.codec_state(device), done)
        self.store.apply(done)
        for device in [d for d in by_device if d in self._backlog]:
            self.recover(device)

    def _decode_run(self, device: str, run: list[tuple[int, bytes]], state: bytes | None,
                    done: list[DecodedBatch]) -> bytes | None:
        for seq, plaintext in sorted(run, key=lambda x: x[0]):
            try:
                d = wire.decode(plaintext, state)
            except wire.NeedState:
                log.info("batch %s/%d waits for its codec base", device, seq)
                self._backlog.add(device)
                continue
            except wire.WireError as e:
                log.error("stored batch %s/%d does not decode (%s); kept raw", device, seq,
                          e.reason)
                continue
            state = d.codec_state if d.codec_state is not None else state
            done.append(DecodedBatch(device, seq, d.rows, d.events, d.codec_state, d.units))
        return state

    def recover(self, device: str | None = None) -> int:
        """Decode stored-but-undecoded batches (after a crash, or once a missing
        codec base arrived); returns how many were decoded."""
        decoded = 0
        pending = self.store.pending(device)
        devices = sorted({p.device for p in pending})
        for dev in devices:
            self._backlog.discard(dev)
            run = []
            for p in pending:
                if p.device != dev:
                    continue
                rec = self.store.key(dev, p.key_epoch)
                if rec is None:
                    continue
                try:
                    run.append((p.seq, wire.open_envelope(p.payload, rec.root_key)))
                except wire.WireError:
                    continue
            done: list[DecodedBatch] = []
            self._decode_run(dev, run, self.store.codec_state(dev), done)
            self.store.apply(done)
            decoded += len(done)
        return decoded
