"""The one place where HES-lite meets the shared wire formats
(``agent.envelope`` and ``agent.batch``): envelope header → verify + decrypt →
replay window → batch decode → rows the store understands.

Owns the translation between the agent's objects and the store's plain
tuples, and the mapping of the agent's typed errors onto HES reject reasons.
Must not know about databases or HTTP. States (replay window, codec state)
cross this boundary as opaque bytes, so the store keeps them without
understanding them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent import envelope
from hes_lite import HesError
from hes_lite import wire_stub as _impl
from hes_lite.store import Event, MeterRow

# Reasons the envelope gives, plus the HES's own.
REASONS = ("bad_tag", "replay", "unknown_key", "revoked_key", "truncated", "bad_length",
           "bad_version", "device_mismatch", "seq_mismatch", "bad_batch")


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


def header(sealed: bytes) -> Header:
    """Parse the clear header; raises WireError(truncated|bad_length|bad_version)."""
    try:
        h = envelope.peek(sealed)
    except envelope.EnvelopeError as e:
        raise WireError(_reason(e)) from None
    if h.kind != envelope.KIND_BATCH:
        raise WireError("bad_version", kind=h.kind)
    return Header(h.device, h.key_epoch, h.boot, h.counter)


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


def batch_seq(plaintext: bytes) -> int:
    try:
        return _impl.batch_seq(plaintext)
    except _impl.StubError as e:
        raise WireError(e.reason) from None


def decode(plaintext: bytes, codec_state: bytes | None) -> Decoded:
    """Batch → readings/events; raises NeedState or WireError(bad_batch)."""
    try:
        doc = _impl.decode_batch(plaintext)
    except _impl.StubError as e:
        raise WireError(e.reason) from None
    return _rows(doc)


def _rows(doc: dict[str, Any]) -> Decoded:
    out = Decoded(int(doc["seq"]), units=doc.get("units", {}))
    rows, events = out.rows, out.events
    for m in doc["meters"]:
        meter = str(m["id"])
        for ts, values in m.get("rows", ()):
            rows.append((meter, int(ts), tuple(values), list(values.values())))
        for ts, code, name in m.get("events", ()):
            events.append((meter, int(ts), int(code), str(name)))
    return out


# -- the encoding side, for tests, benchmarks and the bench's generator ---------
def seal_batch(root_key: bytes, device: str, epoch: int, counter: int, seq: int,
               rows: dict[str, list[tuple[int, dict[str, int | float]]]],
               events: dict[str, list[tuple[int, int, str]]] | None = None,
               units: dict[str, str] | None = None, boot: int = 1) -> bytes:
    """One sealed batch as a concentrator would send it, with the envelope
    counter given: ``rows`` = {meter: [(ts, {obis: value})]}."""
    events = events or {}
    meters = [{"id": mid, "rows": [[ts, vals] for ts, vals in r],
               "events": [list(e) for e in events.get(mid, [])]} for mid, r in rows.items()]
    plaintext = _impl.encode_batch(seq, meters, units or {})
    sealer = envelope.Sealer(device, root_key, envelope.MemoryBootStore(boot - 1), epoch)
    sealer.counter = counter
    return bytes(sealer.seal(plaintext))
