"""The one place where HES-lite meets the shared wire formats
(``agent.envelope`` and ``agent.batch``): envelope header → verify + decrypt →
replay window → batch decode → rows the store understands.

Owns the translation between the agent's objects and the store's plain
tuples, and the mapping of the agent's typed errors onto HES reject reasons.
Must not know about databases or HTTP. States (replay window, codec state)
cross this boundary as opaque bytes, so the store keeps them without
understanding them (a codec state in the HES's stored form,
``hes_lite.wire_state``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent import batch, envelope
from hes_lite import HesError, wire_state
from hes_lite.obis_units import unit_for
from hes_lite.store import CycleResult, Event, MeterRow

# Reasons the envelope gives, plus the HES's own.
REASONS = ("bad_tag", "replay", "unknown_key", "revoked_key", "truncated", "bad_length",
           "bad_version", "device_mismatch", "seq_mismatch", "bad_batch",
           # the command uplink (polls, results)
           "bad_kind", "bad_result", "unknown_command")


class WireError(HesError):
    """An envelope or batch was refused; ``reason`` is one of ``REASONS``."""

    reason: str

    def __init__(self, reason: str, **fields: object) -> None:
        super().__init__(reason, reason=reason, **fields)


class NeedState(WireError):
    """Authentic, but delta-coded against a codec state the HES lacks yet."""


def _reason(e: envelope.EnvelopeError) -> str:
    reason = e.fields.get("reason")
    return reason if isinstance(reason, str) and reason in REASONS else "bad_version"


@dataclass(frozen=True)
class Header:
    device: str
    epoch: int    # key epoch
    boot: int     # the sender's boot epoch
    counter: int  # counter within the boot epoch


@dataclass
class Decoded:
    seq: int
    rows: list[MeterRow] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    codec_state: bytes | None = None
    units: dict[str, str] = field(default_factory=dict)
    results: list[CycleResult] = field(default_factory=list)
    state: batch.CodecState | None = field(default=None, repr=False)  # parsed codec state after


def header(sealed: bytes, kind: int = envelope.KIND_BATCH) -> Header:
    """Parse the clear header of an uplink envelope of ``kind``; raises
    WireError(truncated|bad_length|bad_version). Another kind than ``kind``
    is ``bad_version`` for a batch (as it always was) and ``bad_kind`` for a
    result or poll (they share the batches' key: the authenticated kind
    keeps them apart)."""
    try:
        h = envelope.peek(sealed)
    except envelope.EnvelopeError as e:
        raise WireError(_reason(e)) from None
    if h.kind != kind:
        raise WireError("bad_version" if kind == envelope.KIND_BATCH else "bad_kind",
                        kind=h.kind)
    return Header(h.device, h.key_epoch, h.boot, h.counter)


def seal_command(root_key: bytes, device: str, epoch: int, boot: int, counter: int,
                 signed: bytes) -> bytes:
    """A signed command sealed for ``device`` (kind 2, the downlink key of
    ``epoch``) at the nonce (``boot``, ``counter``) the caller reserved."""
    sealer = envelope.Sealer(device, root_key, envelope.MemoryBootStore(boot - 1), epoch,
                             purpose=envelope.PURPOSE_DOWNLINK)
    sealer.counter = counter
    return bytes(sealer.seal(signed, kind=envelope.KIND_COMMAND))


class _Keys:
    """``envelope.open_envelope``'s keyring for one root key; derived keys are
    cached (HKDF once per device and epoch). Never printed."""

    _cache: dict[tuple[str, int, bytes], bytes] = {}

    def __init__(self, root_key: bytes) -> None:
        self._root = root_key

    def __repr__(self) -> str:
        return "_Keys()"

    def key_for(self, device: str, epoch: int) -> bytes:
        k = (device, epoch, self._root)
        key = self._cache.get(k)
        if key is None:
            try:
                key = envelope.derive_key(self._root, device, "batch", epoch)
            except ValueError:  # a root key of the wrong size in the registry
                raise WireError("unknown_key", device=device, key_epoch=epoch) from None
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[k] = key
        return key


def open_envelope(sealed: bytes, root_key: bytes) -> bytes:
    """Verify and decrypt; raises WireError(bad_tag|...). Never logs the key."""
    try:
        return bytes(envelope.open_envelope(sealed, _Keys(root_key)).payload)
    except envelope.EnvelopeError as e:
        raise WireError(_reason(e)) from None


def check_replay(state: bytes | None, h: Header) -> bytes:
    """The replay window after accepting ``h``; raises WireError(replay)."""
    try:
        w = envelope.ReplayWindow.from_bytes(state) if state else envelope.ReplayWindow()
        w.check(h.boot, h.counter, h.device)
    except envelope.EnvelopeError as e:
        raise WireError(_reason(e)) from None
    w.accept(h.boot, h.counter)
    return bytes(w.to_bytes())


def batch_ident(plaintext: bytes) -> tuple[int, str | None]:
    """(seq, the device a keyframe names — None for a delta, whose device is
    its base's); WireError(bad_batch)."""
    try:
        h = batch.peek_batch(plaintext)
    except batch.BatchError:
        raise WireError("bad_batch") from None
    return int(h.seq), None if h.device is None else str(h.device)


def is_keyframe(plaintext: bytes) -> bool:
    """A batch that decodes without any codec state."""
    try:
        return bool(batch.peek_batch(plaintext).keyframe)
    except batch.BatchError:
        return False


def decode(plaintext: bytes, codec_state: bytes | None,
           parsed: batch.CodecState | None = None) -> Decoded:
    """Batch → columnar rows and events, plus the codec state after it (None
    when the batch is older than the state held: the state does not move
    back). Raises NeedState (a delta against a state not held) or
    WireError(bad_batch). ``parsed``: ``codec_state`` already parsed (by a
    cache that holds it for exactly these bytes), used instead of parsing
    them and advanced in place; ``Decoded.state`` is the state after."""
    try:
        base = parsed if parsed is not None else \
            wire_state.load(codec_state) if codec_state else None
    except batch.BatchError:
        base = None  # a damaged stored state: only a keyframe decodes now
    try:
        b = batch.decode_batch(plaintext, base)
    except batch.BatchError as e:
        if e.fields.get("reason") == "base_mismatch":
            raise NeedState("bad_batch", base_seq=e.fields.get("base_seq")) from None
        raise WireError("bad_batch", detail=str(e.fields.get("reason"))) from None
    out = Decoded(b.seq)
    # cycle results that differ from the ones the held state knows (before it
    # advances): the store keeps each meter's result with the time since when
    # it holds, so an hour that repeats every meter's result writes nothing
    prior = base.status if base is not None else {}
    out.results = [(m, b.created, s, e) for m, s, e in b.statuses if prior.get(m) != (s, e)]
    if base is None or b.keyframe or b.seq > base.seq:
        st = base if base is not None and not b.keyframe else batch.CodecState(b.device)
        st.advance(b)
        # the stored form (``wire_state``): packed columns, and the digest
        # of the canonical bytes the next delta names, hashed once here
        out.codec_state = wire_state.dump(st)
        out.state = st
    else:
        out.state = base
    seen: dict[tuple[str, ...], tuple[str, ...]] = {}
    rows = out.rows
    for meter, ts, values in b.readings:
        codes = tuple(values)
        rows.append((meter, ts, seen.setdefault(codes, codes), list(values.values())))
    for codes in seen:
        for o in codes:
            if o not in out.units:
                out.units[o] = unit_for(o)
    out.events = [(m, ts, code, EVENT_NAMES.get(code, "")) for m, ts, code in b.events]
    return out


# DLMS standard event log codes (Blue Book) the meters of this project report.
EVENT_NAMES = {1: "power_down", 2: "power_up", 40: "cover_open", 41: "cover_closed",
               47: "magnetic_tamper", 59: "relay_disconnected", 60: "relay_connected"}

Rows = dict[str, list[tuple[int, dict[str, int | float | None]]]]


# -- the encoding side, for tests, benchmarks and the bench's generator ---------
def seal_batch(root_key: bytes, device: str, epoch: int, counter: int, seq: int, rows: Rows,
               events: dict[str, list[tuple[int, int, str]]] | None = None,
               units: dict[str, str] | None = None, boot: int = 1,
               base: bytes | None = None) -> bytes:
    """One sealed batch as a concentrator would send it, with the envelope
    counter given: ``rows`` = {meter: [(ts, {obis: value})]}, ``events`` =
    {meter: [(ts, code, name)]}; a keyframe unless a ``base`` codec state is
    given. (``units`` is accepted for old callers; batches carry no units.)"""
    return seal(root_key, device, epoch, counter, encode(device, seq, rows, events, base)[0],
                boot)


def encode(device: str, seq: int, rows: Rows,
           events: dict[str, list[tuple[int, int, str]]] | None = None,
           base: bytes | None = None,
           statuses: list[tuple[str, str, str | None]] | None = None) -> tuple[bytes, bytes]:
    """-> (batch bytes, codec state after it) with the real encoder;
    ``statuses``: cycle results (meter, status, error or None)."""
    readings = [(m, ts, vals) for m, r in rows.items() for ts, vals in r]
    evs = [(m, ts, code) for m, e in (events or {}).items() for ts, code, _ in e]
    created = max([ts for _, ts, _ in readings] + [ts for _, ts, _ in evs] + [0])
    b = batch.Batch(device, seq, created, readings, evs, statuses or ())
    st = wire_state.load(base) if base else None
    data = batch.encode_batch(b, st)
    nxt = st if st is not None and not b.keyframe else batch.CodecState(device)
    nxt.advance(b)
    return bytes(data), bytes(nxt.to_bytes())


def seal(root_key: bytes, device: str, epoch: int, counter: int, payload: bytes,
         boot: int = 1, kind: int = envelope.KIND_BATCH) -> bytes:
    """Seal a payload with the agent's envelope at a given (boot, counter)."""
    sealer = envelope.Sealer(device, root_key, envelope.MemoryBootStore(boot - 1), epoch)
    sealer.counter = counter
    return bytes(sealer.seal(payload, kind=kind))
