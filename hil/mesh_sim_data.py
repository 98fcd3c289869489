"""What the simulated concentrators send and what the simulated HES keeps:
real codec batches (``agent.batch``) of each node's simulated meters
(``hil.model``), sealed with the uplink envelope (``agent.envelope``), and
a HES that opens every envelope (tag, replay window) and records the first
arrival of each ``(device, seq)``.

Owns the node-hour -> batches rule and the HES ledger. Must not know radios,
the mesh or the flooding baseline (``hil.mesh_sim`` and ``hil.flooding``
carry the bytes).

Per node-hour ``h`` (the hour ending at ``start + (h + 1) * 3600``, read at
that boundary) a concentrator builds up to three batches, one per priority
class, each a codec chain of its own (delta against the class's previous
batch, a keyframe at least daily, as ``wum uplink simulate`` encodes)::

    class     priority  content
    events    0         the hour's meter events (only when there are some)
    energy    1         the 12 energy registers and the 2 status words
    instant   2         the 13 instantaneous values

Every batch of a node has its own ``seq`` (1, 2, ... in creation order). A
batch is sealed when it first leaves the concentrator (``SimBatch.seal``),
so envelope counters follow the order batches are sent in, as the HES's
64-counter replay window expects; a resend carries the same bytes.
"""

from __future__ import annotations

import hashlib
import zlib

from agent.batch import Batch, BatchError, CodecState, encode_batch, peek_batch
from agent.envelope import EnvelopeError, Keyring, MemoryBootStore, ReplayWindow, Sealer
from agent.envelope import open_envelope as _open
from hil.model import ENERGY, HOUR, INSTANT, ORIGIN, STATUS, MeterModel, _u

CLASSES = ("events", "energy", "instant")
PRIORITY = {"events": 0, "energy": 1, "instant": 2}
KEYS = {"energy": [o for o, _ in ENERGY] + [o for o, _ in STATUS],
        "instant": [o for o, _ in INSTANT]}


def root_key(seed: int, node: str) -> bytes:
    """The 32-byte root key a simulated concentrator was provisioned with."""
    return hashlib.sha256(b"wum mesh-sim root|%d|%s" % (seed, node.encode())).digest()


class SimBatch:
    """One batch of one node-hour in one run; ``meters``: how many
    meter-hours it carries (every meter for energy/instant, the meters with
    events for events)."""

    __slots__ = ("node", "seq", "cls", "prio", "hour", "payload", "meters", "sealed", "_sealer")

    def __init__(self, node: str, seq: int, cls: str, hour: int, payload: bytes, meters: int,
                 sealer: Sealer) -> None:
        self.node = node
        self.seq = seq
        self.cls = cls
        self.prio = PRIORITY[cls]
        self.hour = hour
        self.payload = payload
        self.meters = meters
        self.sealed: bytes | None = None
        self._sealer = sealer

    def seal(self) -> bytes:
        """The envelope, sealed on first use (the same bytes on every resend)."""
        if self.sealed is None:
            self.sealed = self._sealer.seal(self.payload)
        return self.sealed

    def __repr__(self) -> str:
        return "SimBatch(%s, seq=%d, %s, hour=%d, %d bytes)" % (
            self.node, self.seq, self.cls, self.hour, len(self.payload))


Encoded = tuple[int, str, bytes, int]          # (seq, class, payload, meters)


class _Meter(MeterModel):
    """``hil.model.MeterModel`` with its hourly event draws kept: the model
    redraws 25 hours of them for every status word (a third of the cost of
    building a district's batches). The same events (tests compare)."""

    def __init__(self, index: int, seed: int) -> None:
        super().__init__(index, seed)
        self._draws: dict[int, tuple[int, int] | None] = {}

    def _draw(self, hour: int) -> tuple[int, int] | None:
        if hour in self._draws:
            return self._draws[hour]
        d = None
        if _u(self.key, hour, 50) < 0.006:          # as MeterModel.events draws them
            d = (hour * HOUR + int(_u(self.key, hour, 51) * HOUR),
                 (1, 40, 47)[int(_u(self.key, hour, 52) * 3)])
        self._draws[hour] = d
        return d

    def events(self, start: int, end: int) -> list[tuple[int, int]]:
        out = []
        for hour in range(int(start) // HOUR, int(end) // HOUR + 1):
            d = self._draw(hour)
            if d is not None and start <= d[0] <= end:
                out.append(d)
                if d[1] == 1 and start <= d[0] + 90 <= end:
                    out.append((d[0] + 90, 2))
        out.extend(e for e in self.relay_events if start <= e[0] <= end)
        out.sort()
        return out


class _NodeData:
    """One concentrator's meters, codec chains and sequence.

    A district has been running before the simulation starts: each node's
    chains begin with a keyframe ``phase`` hours before hour 0 (``phase`` =
    0..23, fixed per node), acknowledged and never sent (``warmup``), so the
    daily keyframes of the district fall in different hours instead of all
    at once."""

    def __init__(self, node: str, meters: int, seed: int, start: int) -> None:
        h = zlib.crc32(node.encode())
        base = (h % 1000000) * 100
        self.node = node
        self.models = [_Meter(base + j, seed) for j in range(meters)]
        self.start = start
        self.states: dict[str, CodecState | None] = dict.fromkeys(CLASSES)
        self.seq = 0
        self.hours: list[list[Encoded]] = []
        self.phase = 1 + (h >> 8) % 23
        self.warmup = [(cls, payload) for _, cls, payload, _ in self.build(-self.phase, True)]

    def build(self, hour: int, warmup: bool = False) -> list[Encoded]:
        ts = self.start + (hour + 1) * HOUR
        out = []
        events = []
        with_events = set()
        for m in self.models:
            for t, code in m.events(ts - HOUR, ts - 1):
                events.append((m.serial, t, code))
                with_events.add(m.serial)
        regs = [(m.serial, m.registers(ts)) for m in self.models]
        if events or warmup:
            out.append(self._encode("events", Batch(self.node, self.seq + 1, ts, events=events),
                                    len(with_events), warmup))
        if regs:
            for cls in ("energy", "instant"):
                keys = KEYS[cls]
                rows = [(serial, ts, {k: vals[k] for k in keys}) for serial, vals in regs]
                out.append(self._encode(cls, Batch(self.node, self.seq + 1, ts, rows), len(regs),
                                        warmup))
        return out

    def _encode(self, cls: str, batch: Batch, meters: int, warmup: bool = False) -> Encoded:
        if warmup:
            batch.seq = 0
            payload = encode_batch(batch, None, keyframe=True)
            first = CodecState(self.node)
            first.advance(batch)
            self.states[cls] = first
            return (0, cls, payload, meters)
        state = self.states[cls]
        payload = encode_batch(batch, state)
        nxt = state if state is not None else CodecState(self.node)
        nxt.advance(batch)
        self.states[cls] = nxt
        self.seq += 1
        return (self.seq, cls, payload, meters)


class BatchSource:
    """Every node's encoded batches, built hour by hour on first request and
    kept, so the mesh run and the baseline carry the very same payloads
    (each run seals them under its own envelope counters: ``run()``)."""

    def __init__(self, seed: int, start: int = ORIGIN) -> None:
        self.seed = seed
        self.start = start
        self._nodes: dict[str, _NodeData] = {}

    def encoded(self, node: str, meters: int, hour: int) -> list[Encoded]:
        nd = self._nodes.get(node)
        if nd is None:
            nd = self._nodes[node] = _NodeData(node, meters, self.seed, self.start)
        while len(nd.hours) <= hour:
            nd.hours.append(nd.build(len(nd.hours)))
        return nd.hours[hour]

    def warmup(self, node: str) -> list[tuple[str, bytes]]:
        """(class, keyframe payload) each chain of ``node`` starts from: what
        the HES holds before the run (to decode the run's deltas)."""
        return list(self._nodes[node].warmup)

    def run(self) -> RunBatches:
        return RunBatches(self)

    def keyring(self, nodes: list[str]) -> Keyring:
        ring = Keyring()
        for n in nodes:
            ring.add(n, root_key(self.seed, n))
        return ring


class RunBatches:
    """One run's view: the node-hours' batches with that run's envelopes."""

    def __init__(self, source: BatchSource) -> None:
        self.source = source
        self._sealers: dict[str, Sealer] = {}

    def batches(self, node: str, meters: int, hour: int) -> list[SimBatch]:
        sealer = self._sealers.get(node)
        if sealer is None:
            sealer = Sealer(node, root_key(self.source.seed, node), MemoryBootStore())
            self._sealers[node] = sealer
        return [SimBatch(node, seq, cls, hour, payload, n, sealer)
                for seq, cls, payload, n in self.source.encoded(node, meters, hour)]


class Hes:
    """The head end as the simulator needs it: every envelope opened and
    checked against the device's replay window; the first arrival of each
    ``(device, seq)`` recorded. A duplicate (an authentic replay) is
    acknowledged again; a batch the window refuses though the HES never had
    it would be lost by a real HES and is counted (``lost_to_window``)."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.windows: dict[str, ReplayWindow] = {}
        self.first: dict[tuple[str, int], tuple[int, str]] = {}   # -> (ms, gateway)
        self.counters = {"received": 0, "stored": 0, "duplicates": 0, "rejected": 0,
                         "lost_to_window": 0}

    def receive(self, sealed: bytes, now_ms: int, gateway: str) -> tuple[str, int] | None:
        """-> (device, seq) to acknowledge, or None (refused: not acknowledged)."""
        self.counters["received"] += 1
        try:
            opened = _open(sealed, self.keyring)
            seq = peek_batch(opened.payload).seq
        except (EnvelopeError, BatchError):
            self.counters["rejected"] += 1
            return None
        h = opened.header
        key = (h.device, seq)
        win = self.windows.setdefault(h.device, ReplayWindow())
        try:
            win.check(h.boot, h.counter, h.device)
        except EnvelopeError:
            if key in self.first:
                self.counters["duplicates"] += 1
            else:
                self.counters["lost_to_window"] += 1
            return key
        win.accept(h.boot, h.counter)
        if key in self.first:
            self.counters["duplicates"] += 1
        else:
            self.first[key] = (now_ms, gateway)
            self.counters["stored"] += 1
        return key
