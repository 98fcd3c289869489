"""The command side of the store interface: the HES's command signing key,
the command queue with its per-concentrator counters, and the downlink
nonces. ``hes_lite.store.Store`` inherits it.

Owns the records that cross the interface (``CommandKey``,
``CommandRecord``) and the methods' contracts. Dialect-free like the rest
of the interface: ids are strings, times epoch seconds (float), args and
results plain JSON-able dicts, signed commands opaque bytes.
Must not know the command byte format (``agent.command``) nor HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

STATES = ("queued", "delivered", "executed", "failed", "expired")
OPEN_STATES = ("queued", "delivered")


@dataclass(frozen=True)
class CommandKey:
    """The HES's Ed25519 command key pair. ``private`` never leaves the
    store but to sign; ``repr`` shows the key id only."""

    key_id: bytes      # first 8 bytes of SHA-256 of ``public``
    public: bytes      # 32 bytes, RFC 8032
    private: bytes     # 32-byte seed
    created: float
    revoked: float | None = None

    def __repr__(self) -> str:
        return f"CommandKey(key_id={self.key_id.hex()}, revoked={self.revoked})"


@dataclass
class CommandRecord:
    """One command as queued and followed through its life cycle.
    ``signed`` is the signed command (body + signature) exactly as the
    concentrator verifies it; it is sealed afresh for every delivery."""

    id: str
    device: str            # the target concentrator
    counter: int           # strictly increasing per concentrator
    meter: str | None      # None for concentrator-level ops (config)
    op: str
    args: dict[str, Any]
    created: float
    expires: float
    signed: bytes
    actor: str             # who queued it (token:NAME, cli:USER)
    state: str = "queued"
    reason: str | None = None
    result: dict[str, Any] | None = None
    updated: float = 0.0


class CommandStore:
    """Interface part; methods raise ``StoreError`` only."""

    # -- the signing key ------------------------------------------------------
    def command_key(self) -> CommandKey | None:
        """The active (newest unrevoked) command key, or None."""
        raise NotImplementedError

    def add_command_key(self, key: CommandKey) -> CommandKey:
        """Durably store ``key`` unless an active key exists; returns the
        active key either way (two processes creating one at once end up
        with the same key)."""
        raise NotImplementedError

    # -- the queue ------------------------------------------------------------
    def meter_concentrator(self, meter: str) -> str | None:
        """The concentrator that last reported ``meter``, or None."""
        raise NotImplementedError

    def queue_command(self, device: str,
                      build: Callable[[int], CommandRecord]) -> CommandRecord:
        """In one durable transaction: take ``device``'s next command counter
        (strictly increasing, never reused), call ``build(counter)`` (pure,
        fast: it signs) and store the record it returns."""
        raise NotImplementedError

    def command(self, command_id: str) -> CommandRecord | None:
        raise NotImplementedError

    def command_at(self, device: str, counter: int) -> CommandRecord | None:
        raise NotImplementedError

    def commands(self, meter: str | None = None, device: str | None = None,
                 limit: int = 100) -> list[CommandRecord]:
        """Newest first."""
        raise NotImplementedError

    def open_commands(self, device: str | None, now: float,
                      limit: int = 16) -> list[CommandRecord]:
        """Queued or delivered-but-unanswered commands not expired at
        ``now``, oldest (lowest counter) first; of every device when
        ``device`` is None."""
        raise NotImplementedError

    def mark_delivered(self, ids: Sequence[str], now: float) -> list[str]:
        """``queued → delivered``; returns the ids that changed."""
        raise NotImplementedError

    def finish_command(self, device: str, counter: int, state: str, reason: str | None,
                       result: dict[str, Any] | None, now: float,
                       ) -> tuple[str, CommandRecord | None]:
        """Store a result exactly once, durably: ``("accepted", record)``
        when it moved the command (from queued, delivered or expired) to
        ``state`` (executed or failed); ``("duplicate", record)`` when the
        command had its result already (nothing changes); ``("unknown",
        None)`` when there is no such command."""
        raise NotImplementedError

    def expire_commands(self, before: float, now: float) -> list[CommandRecord]:
        """Open commands whose expiry is earlier than ``before`` become
        ``expired`` (updated ``now``); returns them."""
        raise NotImplementedError

    # -- downlink nonces --------------------------------------------------------
    def reserve_nonces(self, device: str, n: int) -> tuple[int, int]:
        """Durably reserve ``n`` envelope nonces for sealing to ``device``:
        ``(boot epoch, first counter)``, counters first..first+n-1 under that
        boot epoch. Never hands out a pair twice, across restarts and
        processes; moves to the next boot epoch when the 32-bit counter
        would wrap."""
        raise NotImplementedError
