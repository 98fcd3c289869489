"""Decoding for the ingest pipeline: batch plaintexts into ``DecodedBatch``
records, from a codec state, and the stored chain replayed for deltas that
arrive after the state moved past their base.

Owns the pure part (``decode_runs``, which also runs in worker processes)
and the look-ups of stored batches it needs. Must not know SQL, HTTP or the
ingest's ordering and acknowledgements (``hes_lite.ingest``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from agent import batch
from hes_lite import wire
from hes_lite.store import DecodedBatch, PendingBatch, Store

REPLAY_BACK = 60  # batches to look back for a keyframe (agents send one at least daily)
Run = tuple[str, list[tuple[int, bytes]], tuple[int, bytes] | None]
# (device, seq of the codec state decoded from (None: none), decoded batches,
#  seqs waiting for their codec base, (seq, reason) undecodable)
RunResult = tuple[str, int | None, list[DecodedBatch], list[int], list[tuple[int, str]]]


class StateCache:
    """This process's loaded codec states, most recently used last: per
    device the state and the exact bytes it stands for. A batch decodes
    from the state the database holds (read per batch, as before); only
    when those bytes are the ones cached is the load skipped (a packed
    state, ``hes_lite.wire_state``, loads in ~0.3 ms), so the
    database stays the arbiter — a state another worker moved is other
    bytes, a miss. An entry is taken out while a batch decodes against it
    (decoding advances it in place) and put back with the bytes it has
    after; a batch that fails leaves nothing behind. About 130 KB per
    64-meter concentrator."""

    def __init__(self, size: int = 0) -> None:
        self.size = size
        self._held: OrderedDict[str, tuple[bytes, batch.CodecState]] = OrderedDict()

    def take(self, device: str, data: bytes) -> batch.CodecState | None:
        got = self._held.pop(device, None)
        return got[1] if got is not None and got[0] == data else None

    def put(self, device: str, data: bytes, state: batch.CodecState) -> None:
        if self.size <= 0:
            return
        self._held[device] = (data, state)
        while len(self._held) > self.size:
            self._held.popitem(last=False)

    def __len__(self) -> int:
        return len(self._held)


STATES = StateCache()   # this process's: decode processes of the bulk path fill their own


def decode_runs(runs: list[Run], cache: StateCache | None = None) -> list[RunResult]:
    """Pure but for ``cache`` (this process's by default; runs in worker
    processes too): per device, decode its batches in seq order starting
    from its codec state."""
    cache = STATES if cache is None else cache
    out: list[RunResult] = []
    for device, run, held in runs:
        state = held[1] if held is not None else None
        parsed = cache.take(device, state) if state is not None else None
        done: list[DecodedBatch] = []
        wait: list[int] = []
        failed: list[tuple[int, str]] = []
        for seq, plaintext in sorted(run, key=lambda x: x[0]):
            try:
                d = wire.decode(plaintext, state, parsed)
            except wire.NeedState:
                wait.append(seq)   # refused before the state was touched
                continue
            except wire.WireError as e:
                failed.append((seq, e.reason))
                parsed = None      # may have been advanced part way: parse again
                continue
            state = d.codec_state if d.codec_state is not None else state
            parsed = d.state
            done.append(DecodedBatch(device, seq, d.rows, d.events, d.codec_state, d.units,
                                     d.results))
        if state is not None and parsed is not None:
            cache.put(device, state, parsed)
        out.append((device, None if held is None else held[0], done, wait, failed))
    return out


def replay_chain(store: Store, device: str, wait: list[int], held_seq: int
                 ) -> tuple[list[DecodedBatch], list[int]]:
    """Rebuild the codec states the waiting deltas need from the stored
    batches: from the last keyframe at or before the first waiting seq,
    decode forward while the chain has no gap. The stored state moves
    only forward (states at or below ``held_seq`` are not written)."""
    lo, hi = min(wait), max(wait)
    chain = dict(plaintexts(store, device, store.raw_range(
        device, max(0, lo - REPLAY_BACK), hi)))
    start = next((s for s in range(lo, lo - REPLAY_BACK - 1, -1)
                  if s in chain and wire.is_keyframe(chain[s])), None)
    if start is None:
        return [], wait
    todo, state = set(wait), None
    out: list[DecodedBatch] = []
    for seq in range(start, hi + 1):
        if seq not in chain:
            break
        try:
            d = wire.decode(chain[seq], state)
        except wire.WireError:
            break
        state = d.codec_state if d.codec_state is not None else state
        if seq in todo:
            todo.discard(seq)
            out.append(DecodedBatch(device, seq, d.rows, d.events,
                                    d.codec_state if seq > held_seq else None, d.units,
                                    d.results))
    return out, sorted(todo)


def plaintexts(store: Store, device: str, raws: Iterable[PendingBatch]
               ) -> list[tuple[int, bytes]]:
    """(seq, plaintext) of stored batches; ones that no longer open are left out."""
    run = []
    for p in raws:
        rec = store.key(device, p.key_epoch)
        if rec is None:
            continue
        try:
            run.append((p.seq, wire.open_envelope(p.payload, rec.root_key)))
        except wire.WireError:
            continue
    return run
