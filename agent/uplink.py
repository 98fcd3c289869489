"""Store-and-forward: from archived rows to acknowledged batches.

Owns building the next batch lazily from what the archive has not yet
batched (events first, then the oldest rows), encoding it against the codec
state the HES acknowledged, sealing it, storing the sealed batch in the
archive *before* sending, sending it over a transport, and on the ack
advancing the codec state and recording the HES time (the agent's clock
source) in the same archive transaction. One batch is in flight at a time, so
every batch is a delta against a state the HES holds; a retransmission sends
the very same bytes and the HES acknowledges it as ``duplicate``.

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

from agent.archive import Archive, Row
from agent.batch import Batch, BatchError, CodecState, decode_batch, encode_batch
from agent.clock import SystemClock
from agent.config import Config
from agent.envelope import KIND_BATCH, Keyring, Sealer, open_envelope
from agent.transport import Transport, TransportError, transport_for

log = logging.getLogger(__name__)

STATE_KEY = "codec_state"
MAX_SEALED = 60000          # the envelope carries at most 65535 payload bytes


class ArchiveBootStore:
    """The envelope's boot epoch, persisted in the archive (durable before use)."""

    def __init__(self, archive: Archive, lock: threading.Lock) -> None:
        self.archive = archive
        self.lock = lock

    def load(self) -> int:
        with self.lock:
            raw = self.archive.meta("boot_epoch")
        return int(raw.decode()) if raw else 0

    def save(self, value: int) -> None:
        with self.lock:
            self.archive.set_meta("boot_epoch", str(value).encode())


class Uplink:
    def __init__(self, device: str, root_key: bytes, archive: Archive, transport: Transport,
                 clock: SystemClock, lock: threading.Lock | None = None,
                 max_bytes_per_flush: int = 1_000_000, rows_per_batch: int = 4096,
                 timeout: float = 15.0) -> None:
        self.device = device
        self.archive = archive
        self.transport = transport
        self.clock = clock
        self.lock = lock or threading.Lock()
        self.max_bytes = max_bytes_per_flush
        self.rows_per_batch = rows_per_batch
        self.timeout = timeout
        self.sealer = Sealer(device, root_key, ArchiveBootStore(archive, self.lock))
        self._seal_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # Sealed commands carried by batch acks (agent.commands.Inbox.receive).
        self.on_commands: Callable[[bytes], object] | None = None
        self._keyring = Keyring()
        self._keyring.add(device, root_key)
        self.sent_bytes = 0
        self.acked = 0
        # The acknowledged codec state, parsed once and advanced in place (the
        # archive keeps its bytes), and the batch in flight as built, so an ack
        # needs no decoding of our own batch (only after a restart).
        self._state: CodecState | None = None
        self._state_loaded = False
        self._built: tuple[int, Batch] | None = None

    @classmethod
    def from_config(cls, cfg: Config, archive: Archive, clock: SystemClock,
                    lock: threading.Lock) -> Uplink:
        return cls(cfg.concentrator_id, bytes.fromhex(cfg.key_hex), archive,
                   transport_for(cfg.url), clock, lock, cfg.max_bytes_per_cycle)

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
        limit = self.rows_per_batch
        while True:
            with self.lock:
                rows, events = self.archive.unbatched(limit)
                if not rows and not events:
                    return None
                seq = self.archive.next_seq()
                serial = {m: self.archive.serial(m) for m in
                          {r.meter for r in rows} | {e[0] for e in events}}
                results = self._statuses(serial)
            batch = Batch(self.device, seq, int(self.clock.now()), _merge(rows, serial),
                          [(serial[m], ts, code) for m, ts, code in events], results)
            base = self.state()
            payload = encode_batch(batch, base)
            if len(payload) <= MAX_SEALED or limit <= 1:
                break
            limit //= 2
        sealed = self.seal(payload, KIND_BATCH)
        now = self.clock.now()          # not under the lock: now() may read the archive
        with self.lock:
            self.archive.store_batch(seq, sealed, rows, events, now)
        self._built = (seq, batch)
        log.info("batch %d sealed: %d rows, %d events, %d bytes", seq, len(rows), len(events),
                 len(sealed))
        return seq, sealed

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


def _merge(rows: list[Row], serial: dict[int, str]) -> list[tuple[str, int, dict[str, Any]]]:
    """One reading row per (meter, ts): a snapshot and a profile row at the same
    instant are one row (the profile's captured values win)."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: -r.kind):   # snapshots first, then profile rows
        merged.setdefault((serial[r.meter], r.ts), {}).update(r.values)
    return [(m, ts, vals) for (m, ts), vals in merged.items()]
