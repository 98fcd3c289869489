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


@dataclass(frozen=True)
class Header:
    device: str
    epoch: int
    counter: int


@dataclass
class Decoded:
    seq: int
    rows: list[MeterRow] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    codec_state: bytes | None = None
    units: dict[str, str] = field(default_factory=dict)


def header(envelope: bytes) -> Header:
    """Parse the clear header; raises WireError(truncated|bad_length|bad_version)."""
    try:
        device, epoch, counter, _ = _impl.header(envelope)
    except _impl.StubError as e:
        raise WireError(e.reason) from None
    return Header(device, epoch, counter)


def open_envelope(envelope: bytes, root_key: bytes) -> bytes:
    """Verify and decrypt; raises WireError(bad_tag|...). Never logs the key."""
    try:
        return _impl.open_(root_key, envelope)
    except _impl.StubError as e:
        raise WireError(e.reason) from None


def check_replay(state: bytes | None, counter: int) -> bytes:
    """The replay window after accepting ``counter``; raises WireError(replay)."""
    try:
        return _impl.window_check(state, counter)
    except _impl.StubError as e:
        raise WireError(e.reason) from None


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
               units: dict[str, str] | None = None) -> bytes:
    """One sealed batch: ``rows`` = {meter: [(ts, {obis: value})]}."""
    events = events or {}
    meters = [{"id": mid, "rows": [[ts, vals] for ts, vals in r],
               "events": [list(e) for e in events.get(mid, [])]} for mid, r in rows.items()]
    plaintext = _impl.encode_batch(seq, meters, units or {})
    return _impl.seal(root_key, device, epoch, counter, plaintext)
