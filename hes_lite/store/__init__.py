"""The store interface of HES-lite: what the ingest pipeline, the API and the
exports may ask of a database, and ``open_store(url)`` to get one.

Owns the records that cross the interface (keys, tokens, audit entries,
acknowledged batches, decoded readings/events, health rows) and URL
dispatch; the command queue's part is in ``hes_lite.store.commands``, update
packages' in ``hes_lite.store.firmware``. Must not leak any
SQL dialect: callers see Python values only (ids are strings, timestamps are
integer/float epoch seconds UTC, values are ``int`` or ``float``): the
SQLite store (``hes_lite.store.sqlite``, the embedded default) and the
PostgreSQL store (``hes_lite.store.postgres``, several HES workers on one
database) implement the same class.

Several workers: the database is the arbiter of the two per-concentrator
states. ``store_raw(batches, windows)`` refuses with ``StoreConflict`` when a
replay window it is given as read has changed since, and ``apply(decoded,
bases)`` writes nothing for a concentrator whose codec state is no longer
the one its batches were decoded from (compare-and-set, under a
per-concentrator lock); both say which concentrators to look at again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from hes_lite import HesError
from hes_lite.store.commands import OPEN_STATES as OPEN_STATES  # re-exported
from hes_lite.store.commands import STATES as STATES
from hes_lite.store.commands import CommandKey as CommandKey
from hes_lite.store.commands import CommandRecord as CommandRecord
from hes_lite.store.commands import CommandStore
from hes_lite.store.firmware import FirmwareRecord as FirmwareRecord
from hes_lite.store.firmware import FirmwareStore

Value = int | float
# None: the meter answered the row without this register (kept, so exports
# give back exactly what the concentrator sent)
Cell = int | float | None
# One meter's readings at one instant, columnar: (meter id, ts, OBIS codes,
# values) with codes[i] naming values[i]. Decoders hand these over as they
# come out of a columnar batch, and the store turns them into readings keyed
# (meter, OBIS, ts) without a Python step per value.
MeterRow = tuple[str, int, tuple[str, ...], Sequence[Cell]]
# (meter id, ts, event code, name)
Event = tuple[str, int, int, str]
# A meter's cycle result that changed in a batch: (meter, since = the batch's
# creation time, status as the agent says it: read / partial / failed / skipped,
# error text or None).
CycleResult = tuple[str, int, str, str | None]


class StoreError(HesError):
    """A database could not be opened, migrated or written."""


class StoreConflict(StoreError):
    """Another worker changed a concentrator's replay window first; nothing
    was written (field: devices). Read the windows again and retry."""


class NameTaken(StoreError):
    """A named record (an API token) exists already under that name."""


@dataclass(frozen=True)
class KeyRecord:
    device: str
    epoch: int
    root_key: bytes
    revoked: bool
    created: float

    def __repr__(self) -> str:  # never show key material
        fp = fingerprint(self.root_key)
        return f"KeyRecord({self.device!r}, epoch={self.epoch}, revoked={self.revoked}, fp={fp})"


def fingerprint(key: bytes) -> str:
    """A short, non-reversible name for a key (first 8 hex of SHA-256)."""
    import hashlib
    return hashlib.sha256(b"hes-lite key fingerprint\x00" + key).hexdigest()[:12]


@dataclass(frozen=True)
class TokenRecord:
    """An API token as stored: its name, role and the SHA-256 digest of the
    token (never the token itself); ``revoked`` is when, or None."""

    name: str
    role: str
    digest: bytes
    created: float
    revoked: float | None = None

    def __repr__(self) -> str:  # the digest is not secret, but has no business in logs
        return f"TokenRecord({self.name!r}, role={self.role}, revoked={self.revoked})"


@dataclass(frozen=True)
class AuditEntry:
    """Who did what to what, when, from where, and how it ended. ``actor`` is
    ``token:<name>``, ``cli:<user>``, ``device:<id>``, ``hes`` (the HES's own
    doing, e.g. expiry) or ``anonymous``; ``detail`` is JSON-able."""

    ts: float
    actor: str
    action: str
    target: str = ""
    outcome: str = "ok"
    remote: str = ""
    detail: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"ts": self.ts, "actor": self.actor, "action": self.action,
                "target": self.target, "outcome": self.outcome, "remote": self.remote,
                "detail": self.detail}


@dataclass
class RawBatch:
    """An authenticated batch as received, to be stored before the ack."""

    device: str
    seq: int
    payload: bytes
    received: float
    key_epoch: int
    replay_state: bytes | None = None


@dataclass
class DecodedBatch:
    """What one raw batch turned into, written in one transaction."""

    device: str
    seq: int
    rows: Sequence[MeterRow] = ()
    events: Sequence[Event] = ()
    codec_state: bytes | None = None
    units: dict[str, str] = field(default_factory=dict)  # OBIS -> unit, when the batch says
    results: Sequence[CycleResult] = ()


@dataclass
class PendingBatch:
    device: str
    seq: int
    key_epoch: int
    payload: bytes
    decoded: bool = False


@dataclass
class Applied:
    """What ``apply(decoded, bases)`` did not do: ``conflicts`` are the
    devices whose codec state had moved on from their base (nothing of
    theirs was written); ``pending`` the seqs of the based devices that are
    still undecoded after the transaction (stored by anyone)."""

    conflicts: set[str] = field(default_factory=set)
    pending: dict[str, set[int]] = field(default_factory=dict)


@dataclass
class ConcentratorInfo:
    device: str
    first_seen: float
    last_seen: float
    last_seq: int | None
    batches: int
    pending: int
    meters: int = 0
    extra: dict[str, object] = field(default_factory=dict)


class Store(CommandStore, FirmwareStore):
    """The interface. Methods raise ``StoreError`` only."""

    url = ""

    def close(self) -> None:
        raise NotImplementedError

    # -- keys ---------------------------------------------------------------
    def add_key(self, device: str, epoch: int, root_key: bytes, now: float) -> None:
        raise NotImplementedError

    def add_keys(self, keys: Sequence[tuple[str, int, bytes]], now: float) -> None:
        """Many ``(device, epoch, root key)`` in one transaction (provisioning)."""
        raise NotImplementedError

    def key(self, device: str, epoch: int) -> KeyRecord | None:
        raise NotImplementedError

    def keys(self, device: str | None = None) -> list[KeyRecord]:
        raise NotImplementedError

    def revoke(self, device: str) -> int:
        """Revoke every epoch of ``device``; returns how many keys changed."""
        raise NotImplementedError

    # -- API tokens and the audit log --------------------------------------
    def add_token(self, token: TokenRecord) -> None:
        """Durably; ``NameTaken`` if a token (even revoked) has that name."""
        raise NotImplementedError

    def token(self, digest: bytes) -> TokenRecord | None:
        """The token with this digest (revoked ones too: the caller decides)."""
        raise NotImplementedError

    def tokens(self) -> list[TokenRecord]:
        """Every token by name, revoked ones included."""
        raise NotImplementedError

    def revoke_token(self, name: str, now: float) -> bool:
        """Durably; False if there is no such active token."""
        raise NotImplementedError

    def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        raise NotImplementedError

    def audit_log(self, since: float | None = None, limit: int | None = None,
                  ) -> list[AuditEntry]:
        """Entries with ts >= ``since`` in the order written (the last
        ``limit`` of them when given)."""
        raise NotImplementedError

    # -- batches ------------------------------------------------------------
    def stored_seqs(self, device: str, seqs: Iterable[int]) -> set[int]:
        """Which of ``seqs`` are already stored for ``device``."""
        raise NotImplementedError

    def replay_state(self, device: str, epoch: int) -> bytes | None:
        raise NotImplementedError

    def store_raw(self, batches: Sequence[RawBatch],
                  windows: Mapping[tuple[str, int], bytes | None] | None = None) -> list[bool]:
        """Durably store raw batches (and their replay states) in one
        fsync'd transaction; per batch, True if new, False if a duplicate.
        ``windows``: the replay windows ``(device, key epoch) -> state`` the
        batches were checked against; ``StoreConflict`` (nothing stored) if
        one has changed since."""
        raise NotImplementedError

    # -- bulk look-ups of the ingest path (one round trip each where it matters)
    def key_records(self, pairs: Iterable[tuple[str, int]]
                    ) -> dict[tuple[str, int], KeyRecord | None]:
        return {p: self.key(*p) for p in set(pairs)}

    def stored_seqs_of(self, wanted: Mapping[str, Iterable[int]]) -> dict[str, set[int]]:
        return {d: self.stored_seqs(d, seqs) for d, seqs in wanted.items()}

    def replay_states(self, pairs: Iterable[tuple[str, int]]
                      ) -> dict[tuple[str, int], bytes | None]:
        return {p: self.replay_state(*p) for p in set(pairs)}

    def codec_states(self, devices: Iterable[str]) -> dict[str, tuple[int, bytes] | None]:
        return {d: self.codec_state(d) for d in set(devices)}

    def codec_state(self, device: str) -> tuple[int, bytes] | None:
        """(seq of the last batch applied to it, state bytes), or None."""
        raise NotImplementedError

    def backlog(self) -> list[str]:
        """Devices with stored batches not yet decoded."""
        raise NotImplementedError

    def raw_range(self, device: str, first: int, last: int) -> list[PendingBatch]:
        """Stored batches with first <= seq <= last, by seq (decoded or not)."""
        raise NotImplementedError

    def pending(self, device: str | None = None) -> list[PendingBatch]:
        """Stored batches not yet decoded, by device then seq."""
        raise NotImplementedError

    def apply(self, decoded: Sequence[DecodedBatch],
              bases: Mapping[str, int | None] | None = None) -> Applied:
        """Insert readings/events idempotently, advance codec states and mark
        the batches decoded, all in one transaction. ``bases``: per device,
        the seq of the codec state its batches were decoded from (None: no
        state); a device whose stored state differs is skipped and reported
        in ``Applied.conflicts``, and every based device's still-undecoded
        seqs are reported in ``Applied.pending``."""
        raise NotImplementedError

    def count_reject(self, device: str, reason: str, now: float) -> None:
        raise NotImplementedError

    # -- queries ------------------------------------------------------------
    def concentrators(self) -> list[ConcentratorInfo]:
        raise NotImplementedError

    def meters(self, limit: int | None = None, after: str = "") -> list[dict[str, object]]:
        """Meters by id (keyset pages: ids greater than ``after``): meter,
        concentrator, last_reading (ts), last_result ({status, error, since}:
        the meter's last cycle result and since when it holds, or None)."""
        raise NotImplementedError

    def readings(self, meter: str, start: int | None = None,
                 end: int | None = None) -> Iterator[tuple[str, int, Cell, str]]:
        """(obis, ts, value, unit) ordered by ts then OBIS."""
        raise NotImplementedError

    def rows(self, meter: str | None = None, start: int | None = None,
             end: int | None = None) -> Iterator[tuple[str, int, dict[str, Cell]]]:
        """Streamed (meter, ts, {obis: value}), by meter then ts, OBIS keys in
        string order (as the batch codec's canonical rows); never all in memory."""
        raise NotImplementedError

    def units(self) -> dict[str, str]:
        raise NotImplementedError

    def events(self, meter: str | None = None, start: int | None = None,
               end: int | None = None, limit: int = 1000) -> list[Event]:
        raise NotImplementedError

    def rejects(self) -> dict[str, int]:
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        """Running totals: readings, reading_rows, events."""
        raise NotImplementedError

    # -- time partitions (PostgreSQL) -----------------------------------------
    def partitions(self) -> list[dict[str, object]]:
        """The readings table's partitions by month: ``{"table", "month"
        ("2026-06"), "from", "to" (epoch s, end exclusive), "rows" (estimate)}``."""
        raise StoreError("readings are not partitioned in this store (PostgreSQL only)",
                         url=self.url)

    def prepare_partitions(self, now: float) -> None:
        """Make the partitions of the coming months ahead of need (nothing to
        do where readings are not partitioned)."""
        return None

    def detach_partitions(self, before: int, drop: bool = False) -> list[str]:
        """Detach (or drop) the partitions that end at or before ``before``;
        their names."""
        raise StoreError("readings are not partitioned in this store (PostgreSQL only)",
                         url=self.url)


def redact(url: str) -> str:
    """A database URL without its password (for errors and logs)."""
    if "://" not in url or "@" not in url.split("://", 1)[1].split("/", 1)[0]:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.split("@", 1)
    return "%s://%s@%s" % (scheme, creds.split(":", 1)[0], host)


def open_store(url: str, durable: bool = True) -> Store:
    """``sqlite:///path/to/hes.db``, ``sqlite:///:memory:``, a plain path, or
    ``postgresql://user[:password]@host[:port]/database[?sslmode=…]`` (psycopg
    is imported only then: the embedded path stays as light as it was)."""
    if "://" not in url:
        path = url
    elif url.startswith("sqlite:///"):
        # sqlite:///rel.db is relative, sqlite:////abs/hes.db absolute (as SQLAlchemy)
        path = url[len("sqlite:///"):]
    elif url.startswith(("postgresql://", "postgres://")):
        from hes_lite.store.postgres import PostgresStore
        return PostgresStore(url, durable=durable)
    else:
        raise StoreError("unsupported database URL (expected sqlite:///path, a path or "
                         "postgresql://…)", url=redact(url))
    if not path:
        raise StoreError("empty database path", url=url)
    from hes_lite.store.sqlite import SqliteStore
    return SqliteStore(path, durable=durable)
