"""Store-and-forward: from archived rows to acknowledged batches.

Owns building the next batch lazily from what the archive has not yet
batched, encoding it against the codec state the HES acknowledged, sealing
it, storing the sealed batch in the archive *before* sending, sending it over
a transport, and on the ack advancing the codec state and recording the HES
time (the agent's clock source) in the same archive transaction. One batch is
in flight at a time, so every batch is a delta against a state the HES holds;
a retransmission sends the very same bytes and the HES acknowledges it as
``duplicate``.

What goes first: the archive hands out its backlog in priority order
(``agent.priority``): events, then the energy part of every row, then the
instantaneous parts, each oldest first. A batch is the longest prefix of that
order whose sealed size fits ``max_batch_bytes`` (at most ``rows_per_batch``
items), so after an outage every hour's energy goes up before any hour's
instantaneous values; parts of one row that fall into one batch travel as one
row. A batch's mesh priority is that of its most urgent item.

Its ``Sealer`` is the device's only one (the HES keeps one replay window per
device): command results and polls are sealed through ``seal()`` too, and
sealed commands an ack carries go to ``on_commands``.

Must not know protocols or how the HES stores anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.archive import INSTANT as INSTANT_PART
from agent.archive import Archive, Row
from agent.batch import Batch, BatchError, CodecState, decode_batch, encode_batch
from agent.clock import SystemClock
from agent.config import MAX_BATCH_BYTES, Config
from agent.envelope import KIND_BATCH, TAG_LEN, Keyring, Sealer, open_envelope
from agent.priority import ENERGY, EVENTS, INSTANT
from agent.transport import Transport, TransportError, transport_for

log = logging.getLogger(__name__)

STATE_KEY = "codec_state"
MAX_SEALED = MAX_BATCH_BYTES    # the envelope carries at most 65535 payload bytes
FIT_TRIES = 6                   # encodings spent looking for the fullest batch under the cap


class ArchiveBootStore:
    """The envelope's boot epoch, persisted in the archive and in the epoch
    file beside it (durable before use; the larger of both is loaded)."""

    def __init__(self, archive: Archive, lock: threading.Lock) -> None:
        self.archive = archive
        self.lock = lock

    def load(self) -> int:
        with self.lock:
            return self.archive.high_water("boot_epoch")

    def save(self, value: int) -> None:
        with self.lock:
            self.archive.raise_high_water("boot_epoch", value)


class Uplink:
    def __init__(self, device: str, root_key: bytes, archive: Archive, transport: Transport,
                 clock: SystemClock, lock: threading.Lock | None = None,
                 max_bytes_per_flush: int = 1_000_000, rows_per_batch: int = 4096,
                 timeout: float = 15.0, max_batch_bytes: int = MAX_SEALED) -> None:
        self.device = device
        self.archive = archive
        self.transport = transport
        self.clock = clock
        self.lock = lock or threading.Lock()
        self.max_bytes = max_bytes_per_flush
        self.rows_per_batch = rows_per_batch
        self.timeout = timeout
        self.max_batch_bytes = min(max_batch_bytes, MAX_SEALED)
        self.oversize = 0               # batches of one item that alone exceeds the cap
        self._fit: int | None = None    # items in the last batch the cap cut short
        self.sealer = Sealer(device, root_key, ArchiveBootStore(archive, self.lock))
        self._seal_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # Sealed commands carried by batch acks (agent.commands.Inbox.receive).
        self.on_commands: Callable[[bytes], object] | None = None
        self._keyring = Keyring()
        self._keyring.add(device, root_key)
        self.sent_bytes = 0
        self.acked = 0
        self.last_acked = -1                  # the highest seq the HES acknowledged since start
        # The acknowledged codec state, parsed once and advanced in place (the
        # archive keeps its bytes), and the batch in flight as built, so an ack
        # needs no decoding of our own batch (only after a restart).
        self._state: CodecState | None = None
        self._state_loaded = False
        self._built: tuple[int, Batch] | None = None

    @classmethod
    def from_config(cls, cfg: Config, archive: Archive, clock: SystemClock,
                    lock: threading.Lock, transport: Transport | None = None) -> Uplink:
        """``transport``: the mesh's, else one for ``cfg.url``."""
        return cls(cfg.concentrator_id, bytes.fromhex(cfg.key_hex), archive,
                   transport or transport_for(cfg.url), clock, lock, cfg.max_bytes_per_cycle,
                   max_batch_bytes=cfg.max_batch_bytes)

    def __repr__(self) -> str:
        return "Uplink(device=%r, transport=%r)" % (self.device, self.transport)

    # -- codec state -------------------------------------------------------
    def state(self) -> CodecState | None:
        """The state the HES acknowledged (do not modify it)."""
        if not self._state_loaded:
            with self.lock:
                raw = self.archive.meta(STATE_KEY)
            self._state = None
            if raw:
                try:
                    self._state = CodecState.from_bytes(raw)
                except BatchError as e:
                    log.warning("stored codec state unusable (%s): next batch is a keyframe", e)
            self._state_loaded = True
        return self._state

    # -- building ----------------------------------------------------------
    def build(self) -> tuple[int, bytes] | None:
        """Seal the next batch from unbatched rows and store it; None if nothing."""
        with self.lock:
            seq = self.archive.next_seq()
        room = self.max_batch_bytes - (15 + len(self.device.encode()) + TAG_LEN)
        lo, hi = 0, self.rows_per_batch + 1     # items known to fit / known not to
        n = self._first_try(room)
        best: _Built | None = None
        tries = 0
        while True:
            tries += 1
            built = self._encode(seq, n)
            if built is None:
                return None
            n = built.items                     # fewer when that is all there is
            guess = int(room * 0.95 * n / len(built.payload))
            if len(built.payload) <= room:
                lo, best = n, built
                if n < built.asked or len(built.payload) >= room * 0.9:
                    break                       # all there is, or full enough
            else:
                hi = n
                if n == 1:
                    best = built                # one item alone is over the cap: send it
                    break
            if lo and (hi - lo <= max(1, lo // 16) or tries >= FIT_TRIES):
                break                           # within ~6 % of the fullest
            # the size the bytes per item predict, bisecting once both bounds are known
            n = max(lo + 1, min(guess, hi - 1, (lo + hi) // 2 if hi <= self.rows_per_batch
                                else guess))
        assert best is not None
        if len(best.payload) > room:
            self.oversize += 1
            log.warning("batch %d: one item alone is %d bytes, over uplink.max_batch_bytes = %d;"
                        " sent whole", seq, len(best.payload), self.max_batch_bytes)
        # the cap (not the backlog's end) chose the size: start there next time
        self._fit = best.items if best.items == best.asked < self.rows_per_batch else None
        return self._store(best)

    def _first_try(self, room: int) -> int:
        if self._fit is not None:
            return max(1, min(self.rows_per_batch, self._fit))
        if self.max_batch_bytes < MAX_SEALED:   # a delta row part is ~6-15 bytes
            return max(1, min(self.rows_per_batch, room // 8))
        return self.rows_per_batch

    def _encode(self, seq: int, n: int) -> _Built | None:
        """The batch of the first ``n`` items of the backlog; None if empty."""
        with self.lock:
            rows, events = self.archive.unbatched(n)
            if not rows and not events:
                return None
            serial = {m: self.archive.serial(m) for m in
                      {r.meter for r in rows} | {e[0] for e in events}}
            results = self._statuses(serial)
        batch = Batch(self.device, seq, int(self.clock.now()), _merge(rows, serial),
                      [(serial[m], ts, code) for m, ts, code in events], results)
        return _Built(seq, n, rows, events, batch, encode_batch(batch, self.state()))

    def _store(self, b: _Built) -> tuple[int, bytes]:
        sealed = self.seal(b.payload, KIND_BATCH)
        now = self.clock.now()          # not under the lock: now() may read the archive
        with self.lock:
            self.archive.store_batch(b.seq, sealed, b.rows, b.events, now, b.priority)
        self._built = (b.seq, b.batch)
        log.info("batch %d sealed: %d row parts, %d events, %d bytes, priority %d", b.seq,
                 len(b.rows), len(b.events), len(sealed), b.priority)
        return b.seq, sealed

    def _statuses(self, serial: dict[int, str]) -> list[tuple[str, str, str | None]]:
        out: list[tuple[str, str, str | None]] = []
        for r in self.archive.last_results():
            m = r["meter"]
            if isinstance(m, int) and m in serial and r["status"]:
                err = r["error"]
                out.append((serial[m], str(r["status"]), None if err is None else str(err)))
        return out

    def seal(self, payload: bytes, kind: int) -> bytes:
        """Seal with the device's one Sealer (thread-safe: batches, results, polls)."""
        with self._seal_lock:
            return self.sealer.seal(payload, kind)

    def pending(self) -> bool:
        """Whether a sealed batch waits for its ack."""
        with self.lock:
            return self.archive.pending_batch() is not None

    # -- sending -----------------------------------------------------------
    def flush(self, stop: threading.Event | None = None) -> dict[str, Any]:
        """Send pending and new batches, oldest first, within the byte budget
        (one flush at a time: the daemon's and the command link's)."""
        with self._flush_lock:
            return self._flush(stop)

    def _flush(self, stop: threading.Event | None) -> dict[str, Any]:
        sent = 0
        acked = 0
        while stop is None or not stop.is_set():
            with self.lock:
                pending = self.archive.pending_batch()
            if pending is None:
                pending = self.build()
                if pending is None:
                    break
            seq, sealed = pending
            if sent and sent + len(sealed) > self.max_bytes:
                break
            try:
                ack = self.transport.send(self.device, seq, sealed, self.timeout)
            except TransportError as e:
                if e.reason == "rejected" and e.hes_reason == "base_mismatch":
                    self._rebuild(seq)
                    continue
                log.warning("batch %d not delivered (%s%s); kept for retry", seq, e.reason,
                            "/%s" % e.hes_reason if e.hes_reason else "")
                break
            sent += len(sealed)
            self._acked(seq, sealed, ack.server_time, ack.need_keyframe)
            acked += 1
            if ack.commands and self.on_commands is not None:
                for cmd in ack.commands:
                    self.on_commands(cmd)
        self.sent_bytes += sent
        self.acked += acked
        return {"sent_bytes": sent, "acked": acked}

    def _acked(self, seq: int, sealed: bytes, server_time: float,
               need_keyframe: bool = False) -> None:
        state: CodecState | None = None
        if need_keyframe:
            log.warning("HES lacks the codec base of batch %d: next batch is a keyframe", seq)
        else:
            base = self.state()
            try:
                if self._built is not None and self._built[0] == seq:
                    batch = self._built[1]
                else:   # sent before a restart: only its sealed bytes are left
                    batch = decode_batch(open_envelope(sealed, self._keyring).payload, base)
                state = base if base is not None else CodecState(self.device)
                state.advance(batch)          # in place: the cache is reset if we fail
            except BatchError as e:
                state = None
                log.warning("cannot advance codec state after batch %d (%s): next is a keyframe",
                            seq, e)
        self._built = None
        self.last_acked = max(self.last_acked, seq)   # agent.update: a new version proves itself
        self._state_loaded = False            # until the new state is durable
        # Against the uncorrected clock, so the correction does not chase itself.
        raw_clock: SystemClock = getattr(self.clock, "base", self.clock)
        offset = server_time - raw_clock.now()
        now = self.clock.now()          # not under the lock: now() may read the archive
        with self.lock:
            self.archive.ack_batch(seq, now, STATE_KEY,
                                   state.to_bytes() if state is not None else b"")
            self.archive.set_meta("hes_clock_offset", ("%.3f" % offset).encode())
        self._state, self._state_loaded = state, True

    def _rebuild(self, seq: int) -> None:
        """The HES lacks our base state: drop the unsent batch, send a keyframe."""
        log.warning("HES lacks the codec base of batch %d: rebuilding it as a keyframe", seq)
        with self.lock:
            self.archive.unbatch(seq)
            self.archive.set_meta(STATE_KEY, b"")
        self._state, self._state_loaded, self._built = None, True, None

    def close(self) -> None:
        self.transport.close()


class _Built:
    """One candidate batch: the first ``items`` of the backlog (``asked`` were asked for)."""

    __slots__ = ("seq", "asked", "items", "rows", "events", "batch", "payload", "priority")

    def __init__(self, seq: int, asked: int, rows: list[Row], events: list[tuple[int, int, int]],
                 batch: Batch, payload: bytes) -> None:
        self.seq, self.asked, self.rows, self.events = seq, asked, rows, events
        self.items = len(rows) + len(events)
        self.batch, self.payload = batch, payload
        self.priority = EVENTS if events else min(
            (INSTANT if r.kind & INSTANT_PART else ENERGY for r in rows), default=INSTANT)


def _merge(rows: list[Row], serial: dict[int, str]) -> list[tuple[str, int, dict[str, Any]]]:
    """One reading row per (meter, ts): a row's energy and instantaneous parts,
    and a snapshot and a profile row at the same instant, are one row (the
    profile's captured values win)."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: -(r.kind & 1)):   # snapshots first, then profile rows
        merged.setdefault((serial[r.meter], r.ts), {}).update(r.values)
    return [(m, ts, vals) for (m, ts), vals in merged.items()]
