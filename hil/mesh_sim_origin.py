"""The concentrator's store-and-forward rule as the district simulator runs
it, the same for the mesh and for the flooding baseline: a batch stays at
its origin until the HES's acknowledgement comes back down to it.

Owns one node's pending batches, their order (priority, then age) and the
resend rule. Must not know radios or how a transport moves bytes: it offers
a batch to a transport (``offer(payload, priority, now_ms) -> token``,
raising ``Busy`` when it cannot take more now) and is told what became of
it (``handed``, ``failed``) and which batches the HES acknowledged
(``acked``).

States of a batch: *queued* (at the origin: the archive's backlog), then
*offered* (given to the transport, which has not passed it on yet), then
*handed* (the transport passed it on: the next hop has it, or it is on the
air); an acknowledgement from the HES ends it in any state. A batch handed
over longer than ``resend_ms`` without an acknowledgement is queued again
(the same sealed bytes: the HES keeps one per ``(device, seq)``); a failed
offer is queued again at once. Nothing is ever dropped.
"""

from __future__ import annotations

import heapq
from typing import Any, Protocol

from hil.mesh_sim_data import SimBatch

QUEUED, OFFERED, HANDED = "queued", "offered", "handed"


class Busy(Exception):
    """The transport cannot take a batch now: keep it, try later."""


class Transport(Protocol):
    def offer(self, payload: bytes, priority: int, now_ms: int) -> Any: ...


class Origin:
    """One concentrator's batches until the HES acknowledged them."""

    def __init__(self, resend_ms: int, window_bytes: int) -> None:
        self.resend_ms = resend_ms
        self.window_bytes = window_bytes
        self.pending: dict[int, SimBatch] = {}
        self.state: dict[int, tuple[str, int]] = {}     # seq -> (state, since ms)
        self.tokens: dict[Any, int] = {}                # transport token -> seq
        self._heap: list[tuple[int, int]] = []          # (priority, seq) of queued batches
        self.inflight = 0                               # bytes offered, not yet handed
        self.counters = {"offered": 0, "resent": 0, "failed": 0, "busy": 0, "acked": 0}

    def add(self, batches: list[SimBatch], now_ms: int) -> None:
        for b in batches:
            self.pending[b.seq] = b
            self._queue(b.seq, now_ms)

    def _queue(self, seq: int, now_ms: int) -> None:
        self.state[seq] = (QUEUED, now_ms)
        heapq.heappush(self._heap, (self.pending[seq].prio, seq))

    def pump(self, transport: Transport, now_ms: int) -> None:
        """Offer queued batches, best first, while the transport takes them
        and less than ``window_bytes`` wait with it."""
        heap = self._heap
        while heap and (self.inflight == 0 or self.inflight < self.window_bytes):
            prio, seq = heap[0]
            st = self.state.get(seq)
            if st is None or st[0] != QUEUED:
                heapq.heappop(heap)                 # acknowledged or re-queued twice
                continue
            b = self.pending[seq]
            sealed = b.seal()
            try:
                token = transport.offer(sealed, prio, now_ms)
            except Busy:
                self.counters["busy"] += 1
                return
            heapq.heappop(heap)
            self.tokens[token] = seq
            self.state[seq] = (OFFERED, now_ms)
            self.inflight += len(sealed)
            self.counters["offered"] += 1

    def _release(self, token: Any) -> int | None:
        seq = self.tokens.pop(token, None)
        if seq is None:
            return None
        st = self.state.get(seq)
        if st is None or st[0] != OFFERED:
            return None
        self.inflight -= len(self.pending[seq].seal())
        return seq

    def handed(self, token: Any, now_ms: int) -> None:
        seq = self._release(token)
        if seq is not None:
            self.state[seq] = (HANDED, now_ms)

    def failed(self, token: Any, now_ms: int) -> None:
        seq = self._release(token)
        if seq is not None:
            self.counters["failed"] += 1
            self._queue(seq, now_ms)

    def acked(self, seqs: list[int]) -> None:
        for seq in seqs:
            st = self.state.pop(seq, None)
            if st is None:
                continue                            # a second ack
            b = self.pending.pop(seq)
            if st[0] == OFFERED:
                self.inflight -= len(b.seal())
            self.counters["acked"] += 1

    def sweep(self, now_ms: int) -> int:
        """Queue again what was handed over ``resend_ms`` ago and never
        acknowledged; -> how many."""
        n = 0
        for seq, (st, since) in list(self.state.items()):
            if st == HANDED and now_ms - since >= self.resend_ms:
                self._queue(seq, now_ms)
                n += 1
        self.counters["resent"] += n
        return n

    def restart(self, now_ms: int) -> None:
        """The concentrator restarted: what its transport held is gone; the
        archive still has every unacknowledged batch."""
        for seq, (st, _) in list(self.state.items()):
            if st == OFFERED:
                self._queue(seq, now_ms)
        self.tokens.clear()
        self.inflight = 0

    def backlog(self) -> int:
        return len(self.pending)
